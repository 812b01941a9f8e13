"""User-level DP-SGD: each user's whole history is one unit of privacy.

Record-level DP-SGD (one event per unit, Opacus' default) protects an event, but a user
leaves hundreds in a log, so what it promises a person is hundreds of times weaker. Here
every step of training:

1. samples users, each independently with probability ``q = users_per_step / n_users``
   (Poisson sampling, which the accountant's amplification assumes);
2. computes each sampled user's gradient of their summed loss (all of their events),
   and clips it to L2 norm ``C`` over all trainable parameters together;
3. sums the clipped gradients, adds ``N(0, σ²C²)`` noise to every coordinate and divides
   by the expected batch size ``q · n_users``; the optimiser takes that as the gradient.

Adding or removing one user then moves a step's noiseless sum by at most ``C``: the
sampled Gaussian mechanism, whose privacy loss Opacus' RDP accountant adds up over the
steps. `UserLevelDPSGD.for_budget` picks σ for a target ε, δ and the total number of
steps, so every phase of a fit (the point process, then the next-item head) draws on one
budget and one accountant.

Per-user gradients are computed one user at a time (forward and backward over the user's
sequences as one small batch): ``torch.func.vmap`` does not run over ``nn.GRU``. The
number of users ``n_users`` is treated as public, as in Opacus (it sets ``q``).
The user sampling and the noise come from a `torch.Generator` seeded from the operating
system's entropy (`secrets`), not from the fit's seed: a known seed would let anyone
redraw the noise and subtract it, and know who was sampled (the subsampling's
amplification assumes the sample is secret). Private fits therefore do not repeat. The
generator itself is not a cryptographic one (as Opacus without ``secure_mode``).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from ebbtide.errors import ConfigError

__all__ = ["PrivacyGuarantee", "UserLevelDPSGD", "default_delta", "noise_multiplier"]

UNIT = "user"
ACCOUNTANT = "rdp (opacus)"
#: Rényi orders: Opacus' defaults (up to 63) plus larger ones, which small ε over few
#: steps needs (Opacus warns when the best order is its largest).
ALPHAS = [*RDPAccountant.DEFAULT_ALPHAS, 80, 96, 128, 192, 256, 512, 1024]


@dataclass(frozen=True, slots=True)
class PrivacyGuarantee:
    """What a private fit promises: ``(ε, δ)``-DP with one user's whole history as the unit.

    target_epsilon : the ε asked for; epsilon : the ε actually spent (at most the target;
    less when training stopped early); delta : δ; noise_multiplier : σ; max_grad_norm :
    C; sample_rate : q; steps : noisy steps taken over all phases.
    """

    target_epsilon: float
    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    unit: str = UNIT
    accountant: str = ACCOUNTANT

    def to_dict(self) -> dict:
        """Plain numbers and strings, for `metrics_` and the saved config.json."""
        return asdict(self)


def default_delta(n_users: int) -> float:
    """``min(1e-5, 1 / (10 n))``: δ well below one in the number of users, so the
    guarantee cannot be met by giving up one user's data outright."""
    return min(1e-5, 1.0 / (10.0 * max(int(n_users), 1)))


def noise_multiplier(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest σ (within Opacus' search tolerance) whose RDP accounting over `steps`
    Poisson-sampled steps at rate `sample_rate` spends at most `target_epsilon`."""
    if steps < 1:
        return 0.0
    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
            alphas=ALPHAS,
        )
    )


def spent_epsilon(noise: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε that `steps` sampled Gaussian steps (σ = `noise`, rate `sample_rate`) spend at δ,
    by Opacus' RDP accountant; 0 for no steps, inf without noise."""
    if steps < 1:
        return 0.0
    if noise <= 0:
        return math.inf
    accountant = RDPAccountant()
    accountant.history = [(noise, sample_rate, steps)]
    return float(accountant.get_epsilon(delta, alphas=ALPHAS))


class UserLevelDPSGD:
    """Samples users, forms the clipped, noised mean gradient, and keeps the account.

    Parameters
    ----------
    users : array of int
        The units (user indices) a step samples from; `n_users` is their count.
    users_per_step : int
        Expected users per step: ``q = min(1, users_per_step / n_users)``.
    max_grad_norm : float
        C, the L2 bound of one user's gradient.
    noise : float
        σ, the noise multiplier (0 only for tests of the clipping: no privacy then).
    target_epsilon, delta : float
        The budget σ was chosen for (reported in `guarantee`).
    seed : int or None
        Seeds the sampling and the noise; None (the default): the OS's entropy. A fixed
        seed is for tests only: it voids the guarantee.
    """

    def __init__(
        self,
        users: np.ndarray,
        *,
        users_per_step: int,
        max_grad_norm: float,
        noise: float,
        target_epsilon: float,
        delta: float,
        seed: int | None = None,
    ) -> None:
        self.users = np.asarray(users, dtype=np.int64)
        if self.users.size == 0:
            raise ConfigError("DP-SGD needs at least one user with events before the cut-off")
        self.sample_rate = min(1.0, users_per_step / self.users.size)
        self.max_grad_norm = float(max_grad_norm)
        self.noise = float(noise)
        self.target_epsilon, self.delta = float(target_epsilon), float(delta)
        if seed is None:
            seed = secrets.randbits(63)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.accountant = RDPAccountant()
        self.steps = 0

    @classmethod
    def for_budget(
        cls,
        users: np.ndarray,
        *,
        target_epsilon: float,
        delta: float,
        users_per_step: int,
        max_grad_norm: float,
        total_steps: int,
        seed: int | None = None,
    ) -> UserLevelDPSGD:
        """An engine whose σ spends at most `target_epsilon` over `total_steps` steps."""
        rate = min(1.0, users_per_step / max(len(users), 1))
        sigma = noise_multiplier(target_epsilon, delta, rate, total_steps)
        return cls(
            users,
            users_per_step=users_per_step,
            max_grad_norm=max_grad_norm,
            noise=sigma,
            target_epsilon=target_epsilon,
            delta=delta,
            seed=seed,
        )

    @property
    def expected_batch(self) -> float:
        """``q · n_users``: the divisor of the noised sum (data-independent, unlike the
        number actually sampled)."""
        return self.sample_rate * self.users.size

    def progress_line(self, taken: int, steps: int, summed: float, counted: int) -> str:
        """What a private fit shows after step `taken` of `steps` (`summed` loss over
        `counted` users, as `private_gradient` returned them)."""
        return (
            f"private step {taken}/{steps} · {counted} users"
            f" · loss per user {summed / max(counted, 1):.1f}"
            f" · ε spent {self.epsilon():.2f} of {self.target_epsilon:g}"
        )

    def sample(self) -> np.ndarray:
        """This step's users: each independently with probability q (may be none)."""
        keep = torch.rand(self.users.size, generator=self.generator).numpy() < self.sample_rate
        return self.users[keep]

    def private_gradient(
        self,
        params: Sequence[torch.nn.Parameter],
        users: np.ndarray,
        user_loss: Callable[[int], torch.Tensor | None],
    ) -> tuple[float, int]:
        """Set each parameter's ``.grad`` to the clipped, noised mean over `users`; count
        the step in the account. Returns the summed loss and the users that had one.

        `user_loss(u)` is user u's summed loss (a scalar with a graph), or None when the
        user has nothing to score (a zero gradient, still a sampled unit).
        """
        total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        summed, counted = 0.0, 0
        for user in users:
            loss = user_loss(int(user))
            if loss is None or not loss.requires_grad:
                continue
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            norms = [g.detach().float().norm() for g in grads if g is not None]
            norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
            factor = (self.max_grad_norm / (norm + 1e-6)).clamp(max=1.0)
            for acc, g in zip(total, grads, strict=True):
                if g is not None:
                    acc.add_(g.detach().float() * factor.to(acc.device))
            summed, counted = summed + float(loss.detach()), counted + 1
        scale = self.noise * self.max_grad_norm
        for p, acc in zip(params, total, strict=True):
            if scale > 0:
                noise = torch.normal(0.0, scale, acc.shape, generator=self.generator)
                acc.add_(noise.to(acc.device))
            p.grad = (acc / self.expected_batch).to(p.dtype)
        self.accountant.step(noise_multiplier=self.noise, sample_rate=self.sample_rate)
        self.steps += 1
        return summed, counted

    def epsilon(self) -> float:
        """ε spent so far at `delta` (0 before the first step, inf without noise)."""
        if self.steps == 0:
            return 0.0
        if self.noise <= 0:
            return math.inf
        return float(self.accountant.get_epsilon(self.delta, alphas=ALPHAS))

    def guarantee(self) -> PrivacyGuarantee:
        """The guarantee of the steps taken so far."""
        return PrivacyGuarantee(
            target_epsilon=self.target_epsilon,
            epsilon=self.epsilon(),
            delta=self.delta,
            noise_multiplier=self.noise,
            max_grad_norm=self.max_grad_norm,
            sample_rate=self.sample_rate,
            steps=self.steps,
        )
