"""`neural`: a time-aware GRU whose state drives a self-exciting marked point process.

A GRU reads each user's events (item, category and behaviour embeddings plus
``log1p(gap in hours)`` and a same-instant flag). After event i, at elapsed time τ, the
intensity of the user's next event in category c is::

    λ_c(τ) = ℓ_ic · exp(−θ τ) + μ_ic · exp(−δ^i_c τ) + α_ic · exp(−δ^s_c τ)
    ℓ_ic  = β (n_ic + p_c) / (t_i − t_first + T0)
    μ_ic  = m_i π_ic + Σ_{j ≤ i, c_j = c} e^{s_i·k_c} v_{b_j} e^{−δ^i_c (t_i − t_j)}
    α_ic  = n_i π_ic + Σ_{j ≤ i, c_j = c} e^{f_i·k_c} w_{b_j} e^{−δ^s_c (t_i − t_j)}

Two time scales per category, kept apart by construction:

- **interest** fades at ``δ^i_c`` (half-life ``ln 2 / δ^i_c``, longer than
  `session_max_hours`): days to weeks of coming back to a category;
- **session** excitation fades at ``δ^s_c`` (shorter than `session_max_hours`): the minutes
  to hours of one visit. Each scale has a shared rate and per-category offsets shrunk
  towards it (``delta_prior`` pseudo-events), so rare categories borrow strength;
- the **long-run level** ``ℓ_ic`` is the user's average rate in the category over all the
  time they have been seen (``n_ic`` events, one prior event spread by the categories'
  shares ``p_c`` over ``T0 = level_prior_days``), times one learned ``β``. It is a count
  over the whole history, not read off the GRU state, so it cannot absorb the slow decay:
  recent interest has to be carried by the kernels. It fades only in a silence, at one
  slow learned rate θ (users who stop for good: on a 200-day log where half the users
  stop, a level that never faded ranked returners far below recency, 0.67 vs 0.84 AUC);
- ``π_i = softmax(W h_i · E_categories)``, ``m_i``, ``n_i`` (softplus of h_i): where a user
  goes that the history does not explain, fading like interest and like a session;
- the sums run over the user's past events in the category, weighted by behaviour (``w_b``,
  ``v_b``, learned). The GRU modulates each pair's size (low-rank ``f_i·k_c``, ``s_i·k_c``,
  whose users' interest lingers) but never a rate: the modulation is a multiplicative
  factor whose log is penalised towards 0 (`modulation_penalty`), so it stays near 1;
- events without a category (logs with none, or categories first seen after the fit) form
  one more mark, the last slot ``C`` beside the C categories: they excite and are scored
  like the others, but are never reported as an interest;
- buys (below) are a share of that activity plus a short burst after carts and buys.

**The daily and weekly cycle.** Every time above is *operational*: the process runs on the
clock ``Φ(t) = ∫ g`` of the shop's daily (and, from four weeks of log, weekly) cycle ``g``,
fitted from the events before the cut-off (`ebbtide.features.cycle`). A horizon of H hours
from T is ``Φ(T + H) − Φ(T)`` operational days, so forecasts over hours follow the cycle
(few returns are expected in the hours after midnight), and half-lives are in operational
days (clock days on average over a week).

Every term is non-negative, so the intensity is. The sums run over the events the GRU read
(at most `max_len`), as pairs ``(i, j)`` in a (batch, L, L) tensor: the cost is L² per
sequence, never events × categories.

Training minimises the exact negative log-likelihood: for every next event (gap τ,
category c) ``−log λ_c(τ) + Σ_c Λ_c(τ)``, the survival term to the end of observation, the
buy process's likelihood, and the item choice ``−log softmax(q(h, e_c) · E_items)`` (tied
item embeddings; full softmax, or sampled with `item_negatives`), plus the modulation
penalty. Each category's two half-lives get a 95% interval from the curvature of the
likelihood (`NeuralModel.half_lives`).

The last `validation_days` before the cut-off are held out (by default a tenth of the
log's span before the cut-off, from the 1st percentile of event times, within [1, 30]
days: a day on the 9-day Taobao sample, a month on a log of a year or more): the network
trains on events before ``cutoff − validation_days``; after each epoch it answers, at the
window's start, the questions it is built for (will the user come back, engage with each
touched category, buy, within the window), the mean ROC-AUC of those answers selects the
best epoch, and training stops after `patience` epochs without improvement, after `epochs`, or after
`max_train_seconds`. (The event NLL on the window is reported too; it is dominated by
minute-scale gaps within sessions and kept improving while day-scale answers got worse.)
The same window calibrates the activation probability ``P = σ(a·I + b)`` of the interest
score ``I = log Λ_c`` (expected events in c over `validation_days`), and the return
probability ``P(return within H) = 1 − exp(−e^{b + c log(H/V)} A(H)^a)`` of the expected
activity ``A(H) = Σ_c (Λ_c(τ+H) − Λ_c(τ))``: a, b, c fitted by likelihood on who came
back within H of the window's start, for H from an hour to the window V at once (a = 1,
b = c = 0 is the process's own answer). With a > 0 and c ≥ 0 the answer grows with A and
with H. (Calibrated at V alone, the 1-day answers missed the base rate's Brier score on
MovieLens and on a synthetic log, too high on one and ten times too low on the other.)

Buys are a share ``ρ_i`` of the category activity plus a burst that carts, favourites
and buys set off: ``λ_b(τ) = ρ_i Σ_c λ_c(τ) + α_b e^{−δ_b τ}``. ``ρ_i`` reads the state and
the user's behaviour counts and starts as the buy share; so a buyer's purchases scale
with how active the user is about to be. (An own long-term buy rate beside ρ took the
likelihood's favour but ranked buyers worse on Taobao; see bench/RESULTS.md.)

**Searches** are marks the process reads but never predicts. A query map
(`ebbtide.features.queries.QueryCategoryMap`, fitted on the searches and item events
before the cut-off, as `decay` fits it) names each search's likeliest category; a search
whose category is at least `NeuralConfig.search_min_probability` likely joins the user's
sequence as one more event: behaviour *search* (a fifth row of the behaviour embedding,
and its own weights ``w``, ``v`` and buy-burst weight), that category, and no item (the
item embedding's padding row). So the GRU reads it, and it excites its category like an
event of its own kind, ``Σ_j e^{s·k_c} v_search e^{−δ (t − t_j)}``. It is no target: the
interval that ends at a search has no ``−log λ``, no item and no buy term, only the
compensator, so the survival integral runs over the whole time, split at the search
(exact); the long-run level counts item events only. At a query instant every search
before it is placed by the map fitted at the cut-off (never refitted). No searches, or a
model saved before them: no map, four behaviour rows, every answer as it was, to the
bit. Under differential privacy the map would be learned outside the privacy account,
so a private fit leaves searches out and says so in ``metrics_["privacy"]``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ebbtide.errors import ConfigError, NotFittedError
from ebbtide.features.cycle import Cycle
from ebbtide.features.history import History, Localised
from ebbtide.features.queries import (
    explain_searches,
    fit_query_map,
    load_model_map,
    save_model_map,
    search_users,
)
from ebbtide.features.sequences import EventArrays, to_days, user_event_ranges
from ebbtide.metrics_core import log_loss, roc_auc
from ebbtide.models import distributed
from ebbtide.models.base import Model, Progress
from ebbtide.models.next_item import (
    NextItemNet,
    NextItemSettings,
    exclusion_pairs,
    fit_next_item,
    score_next_items,
)
from ebbtide.schema import ITEM_BEHAVIORS, Behavior

DELTA_MIN = 1e-3  # per day
_EXP_MAX = 20.0  # cap of the log-scales of the excitation, so exp() stays finite
_KEY = np.int64(2**31)
_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 365.0, 400)])  # days, for return time
_BUY = Behavior.BUY.code
_LOG_FLOOR = 1e-12
PRECISIONS = ("auto", "32", "bf16", "fp16")
_N_BEH = len(ITEM_BEHAVIORS)
_SEARCH = Behavior.SEARCH.code  # a search mark's behaviour: the row after the item ones
_POINT_PROCESS_SHARE = 0.6  # of the progress bar; the next-item head takes the rest
_PRIVATE_RATE = 10.0  # events per user-day: a private fit's starting rate (Taobao: 11)
_PRIVATE_BUY_SHARE = 0.02  # and its starting buy share (Taobao: 2%)


@dataclass(frozen=True, slots=True, kw_only=True)
class NeuralConfig:
    """Parameters of `NeuralModel`.

    hidden, embedding, rank : int
        GRU state size, item/category embedding size, rank of the state × category
        modulation of the excitation.
    max_len : int
        Events scored per training chunk.
    context_len : int
        Events before each chunk read for its history but not scored: the excitation sums
        of a chunk's first events see at least that many earlier events. At query time
        ``max_len + context_len`` events are read. (Without context, chunks of 200 events
        cut off the memory of heavy users: synthetic interest half-lives of 1–10 days came
        out near 1 day.)
    epochs, batch_size, lr, weight_decay : training settings (Adam, chunks per batch).
    rate_lr_scale : float
        The decay rates, behaviour weights and excitation sizes learn at ``lr ×`` this.
        On Taobao, 10 drove the half-lives to minutes (session scale) and cost day-scale
        ranking; on synthetic Hawkes data it moved them further, though not to the truth.
    seed : int
        Seeds initialisation and shuffling: a seed gives identical results when training
        stops on `epochs` or `patience` (a wall-clock stop depends on the machine).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    precision : str
        Arithmetic of the training steps (point process and next-item head): ``"32"``
        (float32), ``"bf16"`` or ``"fp16"`` (`torch.autocast`: matrix products and the GRU
        on CUDA in that type, fp16 with a gradient scaler; CUDA only), or ``"auto"``: bf16
        on a GPU that supports it, else fp16, and float32 on CPU. The likelihood's exp,
        log and integrals stay in float32; validation and queries run in float32.
    max_train_seconds : float
        Wall-clock budget of the point-process training (`item_max_seconds`: the head's).
    validation_days : float or None
        Held-out window before the cut-off for early stopping and calibration (0: train on
        all, no stop, no calibration). None (the default): a tenth of the span from the
        log's start (1st percentile of event times) to the cut-off, clipped to [1, 30]
        days (`auto_validation_days`).
    patience : int
        Epochs without validation improvement before stopping.
    item_weight : float
        Weight of the item-choice log-likelihood in the loss.
    item_chunk : int
        Positions per chunk of the full item softmax.
    delta_prior : float
        Pseudo-events pulling each category's log decay rate towards the shared one.
    item_negatives, full_softmax_items : int
        The item terms (of the point process and of the next-item head) train with the
        exact full softmax while the catalogue has at most `full_softmax_items` items;
        beyond, with a sampled softmax over the batch's target items plus `item_negatives`
        shared uniformly drawn ones (validation always uses the full softmax).
        ``item_negatives=0`` forces the full softmax.
    item_max_len, item_epochs, item_patience, item_max_seconds : next-item head
        (`ebbtide.models.next_item`): events of history it reads, epoch cap, epochs
        without a better validation NDCG@10 before it stops, and its wall-clock budget.
    item_dropout, item_lr, item_batch_size : its dropout, Adam step and windows per batch.
    session_max_hours : float
        Where the two time scales meet: session half-lives are shorter, interest
        half-lives longer (12 h: a session lasts minutes to hours, interest days to weeks).
    level_prior_days : float
        Prior observation time of the long-run level (``level_prior_days`` days holding one
        event spread over categories by their share): a user seen for an hour does not get
        a long-run level of 24 events a day per event.
    modulation_penalty : float
        Weight of the squared log-modulation the GRU puts on the excitation sizes (per
        pair and event, against one interval's NLL): it keeps the modulation near 1, so
        the state cannot take over a decay rate.
    cycle : bool
        Fit the daily/weekly cycle (`ebbtide.features.cycle`) and run the process on its
        operational time; False: the clock.
    time_zone : str
        The shop's time zone (IANA name): where its days begin, for the cycle's reported
        peak hour and its weekly part.
    dp_epsilon : float or None
        Train with user-level DP-SGD (`ebbtide.models.dp_sgd`) spending at most this ε
        over both phases (point process and next-item head); None: ordinary training.
        Under DP the fit takes nothing else from the data: no validation window (no
        early stopping, epoch choice or calibration), no cycle, fixed initial rates,
        uniform level shares, no half-life intervals, no user ids kept.
    dp_delta : float or None
        δ of the guarantee; None: ``min(1e-5, 1 / (10 n_users))`` at fit time.
    dp_max_grad_norm : float
        C: each user's gradient (all parameters together) is clipped to this L2 norm.
    dp_users_per_step : int
        Expected users per step; each is sampled with ``q = dp_users_per_step / n_users``.
    dp_epochs, dp_item_epochs : float
        Under DP, the expected passes over the users of each phase: ``ceil(dp_epochs /
        q)`` steps of the point process and ``ceil(dp_item_epochs / q)`` of the head.
        With no validation to stop early, these replace `epochs` and `item_epochs`
        (caps for early stopping, far more passes than a private fit needs: every
        planned step is paid for in noise). Chosen before any private run, from where
        ordinary fits stop early (5 to 6 epochs on the Taobao sample).
    use_searches : bool
        Whether the searches before the cut-off (and, at a query, before its instant)
        join the sequences as marks of the categories their queries are about (read,
        never predicted). A log without searches is modelled the same either way; a
        private fit (`dp_epsilon`) never uses them (its metrics say so).
    search_min_probability : float
        A search joins as a mark of its query's likeliest category when the query map
        gives that category at least this probability (`decay`'s threshold of the same
        name): a query of unknown words would otherwise mark the shop's commonest one.
    """

    hidden: int = 64
    embedding: int = 32
    rank: int = 16
    max_len: int = 200
    context_len: int = 200
    epochs: int = 30
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-6
    rate_lr_scale: float = 1.0
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"
    max_train_seconds: float = 150.0
    validation_days: float | None = None
    patience: int = 2
    item_weight: float = 1.0
    item_chunk: int = 1024
    item_negatives: int = 1024
    full_softmax_items: int = 10_000
    delta_prior: float = 5.0
    item_max_len: int = 200
    item_epochs: int = 100
    item_patience: int = 5
    item_max_seconds: float = 600.0
    item_dropout: float = 0.2
    item_lr: float = 3e-3
    item_batch_size: int = 64
    session_max_hours: float = 12.0
    level_prior_days: float = 1.0
    modulation_penalty: float = 1.0
    cycle: bool = True
    time_zone: str = "UTC"
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    dp_max_grad_norm: float = 1.0
    dp_users_per_step: int = 64
    dp_epochs: float = 5.0
    dp_item_epochs: float = 3.0
    use_searches: bool = True
    search_min_probability: float = 0.1

    def __post_init__(self) -> None:
        for name in (
            "hidden",
            "embedding",
            "rank",
            "max_len",
            "epochs",
            "batch_size",
            "item_chunk",
            "item_max_len",
            "item_epochs",
            "item_batch_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"NeuralConfig.{name}={value!r} must be an integer >= 1")
        for name in ("item_negatives", "full_softmax_items", "context_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"NeuralConfig.{name}={value!r} must be an integer >= 0")
        for name in ("patience", "item_patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"NeuralConfig.{name}={value!r} must be an integer >= 0")
        if not isinstance(self.seed, int):
            raise ConfigError(f"NeuralConfig.seed={self.seed!r} must be an integer")
        for name, low, strict in (
            ("lr", 0.0, True),
            ("rate_lr_scale", 0.0, True),
            ("weight_decay", 0.0, False),
            ("max_train_seconds", 0.0, True),
            ("item_weight", 0.0, False),
            ("delta_prior", 0.0, False),
            ("item_max_seconds", 0.0, True),
            ("item_lr", 0.0, True),
            ("session_max_hours", 0.0, True),
            ("level_prior_days", 0.0, True),
            ("modulation_penalty", 0.0, False),
        ):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and math.isfinite(value)
            ok = ok and (value > low if strict else value >= low)
            if not ok:
                sign = ">" if strict else ">="
                raise ConfigError(f"NeuralConfig.{name}={value!r} must be a finite number {sign} 0")
        if self.validation_days is not None:
            value = self.validation_days
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(
                    f"NeuralConfig.validation_days={value!r} must be a finite number >= 0,"
                    " or None for the automatic window"
                )
        if not isinstance(self.item_dropout, int | float) or not 0 <= self.item_dropout < 1:
            raise ConfigError(f"NeuralConfig.item_dropout={self.item_dropout!r}: use [0, 1)")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"NeuralConfig.device={self.device!r}: use 'cpu' or 'cuda[:N]'")
        if self.precision not in PRECISIONS:
            allowed = ", ".join(repr(p) for p in PRECISIONS)
            raise ConfigError(f"NeuralConfig.precision={self.precision!r}: use one of {allowed}")
        for name in ("cycle", "use_searches"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"NeuralConfig.{name}={getattr(self, name)!r}: use True or False")
        p = self.search_min_probability
        if not (isinstance(p, int | float) and not isinstance(p, bool) and 0 <= p <= 1):
            raise ConfigError(f"NeuralConfig.search_min_probability={p!r} must be in [0, 1]")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigError(
                f"NeuralConfig.time_zone={self.time_zone!r} is not a time zone;"
                " use an IANA name such as 'Asia/Shanghai' or 'UTC'"
            ) from None
        if self.precision == "fp16" and self.device == "cpu":
            raise ConfigError(
                "NeuralConfig.precision='fp16' needs device='cuda'; on CPU use 'bf16' or '32'"
            )
        self._check_privacy()

    @property
    def private(self) -> bool:
        """Whether training is user-level differentially private (`dp_epsilon` set)."""
        return self.dp_epsilon is not None

    def _check_privacy(self) -> None:
        def number(value) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        eps, delta = self.dp_epsilon, self.dp_delta
        if eps is not None and not (number(eps) and math.isfinite(eps) and eps > 0):
            raise ConfigError(
                f"NeuralConfig.dp_epsilon={eps!r} must be a finite number > 0 (e.g. 8),"
                " or None to train without differential privacy"
            )
        if delta is not None and not (number(delta) and 0 < delta < 1):
            raise ConfigError(
                f"NeuralConfig.dp_delta={delta!r} must be in (0, 1), well below"
                " 1 / users (e.g. 1e-6), or None for min(1e-5, 1 / (10 users))"
            )
        if delta is not None and eps is None:
            raise ConfigError(
                f"NeuralConfig.dp_delta={delta!r} is set without dp_epsilon: set dp_epsilon"
                " too for a private fit, or leave dp_delta out"
            )
        grad = self.dp_max_grad_norm
        if not (number(grad) and math.isfinite(grad) and grad > 0):
            raise ConfigError(
                f"NeuralConfig.dp_max_grad_norm={grad!r} must be a finite number > 0 (e.g. 1.0)"
            )
        users = self.dp_users_per_step
        if not isinstance(users, int) or isinstance(users, bool) or users < 1:
            raise ConfigError(f"NeuralConfig.dp_users_per_step={users!r} must be an integer >= 1")
        for name in ("dp_epochs", "dp_item_epochs"):
            value = getattr(self, name)
            if not (number(value) and math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"NeuralConfig.{name}={value!r} must be a finite number > 0 (expected"
                    " passes over the users under DP, e.g. 5)"
                )
        if eps is None:
            return
        if self.validation_days not in (None, 0):
            raise ConfigError(
                f"NeuralConfig.validation_days={self.validation_days!r} with dp_epsilon: the"
                " window would choose epochs and calibrate on private data outside the"
                " guarantee; leave validation_days out (a private fit uses none) or set 0"
            )
        if self.precision == "fp16":
            raise ConfigError(
                "NeuralConfig.precision='fp16' with dp_epsilon: DP-SGD's per-user clipping"
                " runs without fp16's gradient scaler; use 'bf16', '32' or 'auto'"
            )


def auto_validation_days(span_days: float) -> float:
    """The default validation window: a tenth of the log's span before the cut-off, in
    [1, 30] days.

    A day suits the 9-day Taobao sample; on a log of a year it would hold too few returns
    to choose an epoch or calibrate a 30-day answer, and a month is the longest horizon
    the questions are usually asked for.
    """
    return float(np.clip(span_days / 10.0, 1.0, 30.0))


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast type of the training steps on `device`; None: float32 throughout."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """`torch.autocast` to `dtype` on `device`'s type; a no-op context for None."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _later_stage(progress: Progress | None) -> Progress | None:
    """The next-item head's progress, after the point process's share of the bar."""
    if progress is None:
        return None
    return lambda text, done: progress(
        text, _POINT_PROCESS_SHARE + (1.0 - _POINT_PROCESS_SHARE) * done
    )


# -- the point-process maths -----------------------------------------------------------
def intensity(mu: torch.Tensor, alpha: torch.Tensor, delta: torch.Tensor, tau: torch.Tensor):
    """``λ(τ) = μ + α e^{−δτ}`` (per day), τ clamped at 0."""
    return mu + alpha * torch.exp(-delta * tau.clamp_min(0.0))


def compensator(mu: torch.Tensor, alpha: torch.Tensor, delta: torch.Tensor, tau: torch.Tensor):
    """``Λ(τ) = ∫_0^τ λ = μτ + α/δ (1 − e^{−δτ})``, τ clamped at 0."""
    tau = tau.clamp_min(0.0)
    return mu * tau - alpha * torch.expm1(-delta * tau) / delta


def increment(
    mu: torch.Tensor,
    alpha: torch.Tensor,
    delta: torch.Tensor,
    tau0: torch.Tensor,
    tau: torch.Tensor,
) -> torch.Tensor:
    """``Λ(τ) − Λ(τ0) = μ(τ − τ0) + α/δ e^{−δτ0} (1 − e^{−δ(τ − τ0)})`` for ``τ ≥ τ0 ≥ 0``."""
    tau0 = tau0.clamp_min(0.0)
    span = (tau - tau0).clamp_min(0.0)
    return mu * span - alpha * torch.exp(-delta * tau0) * torch.expm1(-delta * span) / delta


def point_process_nll(
    mu: torch.Tensor,
    alpha: torch.Tensor,
    delta: torch.Tensor,
    tau: torch.Tensor,
    mark: torch.Tensor,
    tau0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-interval NLL ``Σ_c (Λ_c(τ) − Λ_c(τ0)) − log λ_mark(τ)`` of a marked process.

    mu, alpha, delta : (N, C) parameters after each event; tau : (N,) time to the next
    event (or to the end of observation); mark : (N,) category of the next event, -1 for
    none (survival, or an event without a category: compensator only); tau0 : (N,) start
    of the scored part of the interval (default 0).
    """
    if tau0 is None:
        tau0 = torch.zeros_like(tau)
    comp = increment(mu, alpha, delta, tau0[:, None], tau[:, None]).sum(-1)
    has = mark >= 0
    idx = mark.clamp_min(0)[:, None]
    lam = intensity(
        mu.gather(1, idx)[:, 0], alpha.gather(1, idx)[:, 0], delta.gather(1, idx)[:, 0], tau
    )
    log_lam = torch.log(lam.clamp_min(_LOG_FLOOR))
    return comp - torch.where(has, log_lam, torch.zeros_like(log_lam))


def _inv_softplus(y: np.ndarray) -> np.ndarray:
    y = np.maximum(y, 1e-12)
    return y + np.log(-np.expm1(-y))


# -- sequences and batches -------------------------------------------------------------
def _chunks(
    offsets: np.ndarray, max_len: int, last_only: bool, context: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(read, start, end) event ranges cut from the end of each user's run: ``[start, end)``
    at most `max_len` long, scored; ``[read, start)`` up to `context` events before it,
    read for the history (the excitation sums and the GRU state) but not scored."""
    lo, hi = offsets[:-1], offsets[1:]
    n = hi - lo
    k = np.where(n > 0, 1 if last_only else -(-n // max_len), 0)
    user = np.repeat(np.arange(n.size), k)
    j = np.arange(user.size) - np.repeat(np.cumsum(k) - k, k)
    end = hi[user] - j * max_len
    start = np.maximum(lo[user], end - max_len)
    read = np.maximum(lo[user], start - context)
    return read.astype(np.int64), start.astype(np.int64), end.astype(np.int64)


@dataclass
class _Sequences:
    """Per-event inputs and next-event targets of a set of `EventArrays`."""

    t: np.ndarray  # event time, days
    item: np.ndarray  # input ids (+1, 0 = unknown)
    cat: np.ndarray  # input ids (+1, 0 = none / unknown)
    beh: np.ndarray
    gap: np.ndarray  # (n, 2): log1p(gap hours), same-instant flag
    tau: np.ndarray  # days to the next event, or to the end of observation
    tau0: np.ndarray  # start of the scored part of the interval
    mark: np.ndarray  # next event's category (fitted range), -1 none / survival
    slot: np.ndarray  # next event's mark: its category, n_categories without one, -1 survival
    next_item: np.ndarray  # next event's item (fitted range), -1 none / survival
    next_cat: np.ndarray  # next event's category input id (+1, 0 none)
    next_buy: np.ndarray  # next event is a buy
    weight: np.ndarray  # interval is scored
    level_mark: np.ndarray  # long-run level of the next event's mark (÷ β), per day
    level_total: np.ndarray  # long-run level summed over marks (÷ β), per day
    target: np.ndarray  # the interval ends in an event to predict (not a search, not the end)


def _slots(events: EventArrays, n_categories: int) -> np.ndarray:
    """Each event's mark: its category in the fitted range, `n_categories` otherwise."""
    cat = events.category_idx.astype(np.int64)
    return np.where((cat >= 0) & (cat < n_categories), cat, n_categories)


def long_run_levels(
    counts: np.ndarray, span: np.ndarray, share: np.ndarray, prior_days: float
) -> np.ndarray:
    """``(n_uc + p_c) / (span_u + T0)``: a user's average rate in a mark over all the time
    they have been seen (first event to the instant asked), with one prior event spread
    by the marks' shares over `prior_days`.

    The long-run level of (user, category) is β times this. In training it is one number
    per pair over the whole training period, as a per-pair background would be: a running
    average (events so far over time so far) jumps after a burst and then fades like
    1/t, a slow kernel of its own that took over the interest decay on synthetic data
    (interest half-lives of 1–10 days all came out near 1 day). A level read off the
    GRU's state could do the same.
    """
    return (counts + share) / (span + prior_days)


def _sequences(
    events: EventArrays,
    n_items: int,
    n_categories: int,
    t_end: float,
    t_start: float | None = None,
    *,
    share: np.ndarray,
    prior_days: float,
) -> _Sequences:
    """Inputs and targets of every event; `share` (C + 1,) is the marks' prior share of
    the long-run level, `prior_days` its prior observation time.

    Search marks (behaviour `_SEARCH`, `_with_search_marks`) are inputs only: the
    interval ending at one is scored by the compensator alone (``target`` False: no
    mark, item or buy term), and the long-run level counts item events only.
    """
    t = events.t
    n = t.size
    last = np.zeros(n, dtype=bool)
    last[events.offsets[1:][events.lengths() > 0] - 1] = True
    search = events.behavior == _SEARCH
    item = np.where((events.item_idx < n_items) & ~search, events.item_idx.astype(np.int64) + 1, 0)
    cat_raw = events.category_idx.astype(np.int64)
    known_cat = (cat_raw >= 0) & (cat_raw < n_categories)
    cat = np.where(known_cat, cat_raw + 1, 0)
    nxt = np.minimum(np.arange(n) + 1, max(n - 1, 0))
    t_next = np.where(last, t_end, t[nxt] if n else t)
    tau = np.maximum(t_next - t, 0.0)
    untargeted = last | search[nxt] if n else last  # survival up to the next event only
    mark = np.where(untargeted | ~known_cat[nxt], -1, cat_raw[nxt]) if n else cat_raw
    slot = (
        np.where(untargeted, -1, np.where(known_cat[nxt], cat_raw[nxt], n_categories))
        if n
        else mark
    )
    next_item = np.where(untargeted | (item[nxt] == 0), -1, item[nxt] - 1) if n else item
    next_cat = np.where(untargeted, 0, cat[nxt]) if n else cat
    next_buy = (~untargeted & (events.behavior[nxt] == _BUY)) if n else last
    # the long-run level: each user's counts over all the time they were seen before the
    # scored part (constant over that time, so it cannot follow recent interest)
    user = np.repeat(np.arange(events.n_users), events.lengths()).astype(np.int64)
    seen_until = t_end if t_start is None else t_start
    first_t = t[np.minimum(events.offsets[:-1], max(n - 1, 0))][user] if n else t
    span = np.maximum(seen_until - first_t, 0.0)
    counted = (t < seen_until) & ~search
    keys, totals = np.unique(
        (user * _KEY + _slots(events, n_categories))[counted], return_counts=True
    )
    next_slot = np.maximum(slot, 0)
    wanted = user * _KEY + next_slot
    found = np.minimum(np.searchsorted(keys, wanted), max(keys.size - 1, 0))
    count_mark = np.where(
        keys.size and (keys[found] == wanted), totals[found] if keys.size else 0, 0
    )
    level_mark = long_run_levels(count_mark, span, share[next_slot], prior_days)
    user_total = np.bincount(user[counted], minlength=events.n_users)[user]
    level_total = (user_total + 1.0) / (span + prior_days)
    if t_start is None:
        tau0 = np.zeros(n)
        weight = np.ones(n, dtype=bool)
    else:
        tau0 = np.clip(t_start - t, 0.0, tau)
        weight = t_next >= t_start
    return _Sequences(
        t=t,
        item=item,
        cat=cat,
        beh=events.behavior.astype(np.int64),
        gap=events.gap_features(),
        tau=tau,
        tau0=tau0,
        mark=mark,
        slot=slot,
        next_item=next_item,
        next_cat=next_cat,
        next_buy=next_buy,
        weight=weight,
        level_mark=level_mark,
        level_total=level_total,
        target=~untargeted,
    )


def _inv_softplus(y: np.ndarray | float) -> np.ndarray:
    y = np.maximum(np.asarray(y, dtype=np.float64), 1e-12)
    return y + np.log(-np.expm1(-y))


def _window_mass(delta: torch.Tensor, tau0: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """``∫_{τ0}^{τ0+span} e^{−δs} ds = e^{−δτ0} (1 − e^{−δ·span}) / δ`` (broadcasting)."""
    return -torch.exp(-delta * tau0) * torch.expm1(-delta * span) / delta


# -- the network -----------------------------------------------------------------------
class _Net(nn.Module):
    """The network; `behaviours` rows of behaviour embedding and weights: the four item
    behaviours, and a fifth, `_SEARCH`, when the model reads search marks."""

    def __init__(
        self, n_items: int, n_categories: int, cfg: NeuralConfig, behaviours: int = _N_BEH
    ) -> None:
        super().__init__()
        e, h, r = cfg.embedding, cfg.hidden, cfg.rank
        self.n_categories = n_categories
        self.split = math.log(2.0) / (cfg.session_max_hours / 24.0)  # δ where the scales meet
        slots = n_categories + 1  # the categories, then events without one
        self.item = nn.Embedding(n_items + 1, e)  # 0: padding / unknown item
        self.category = nn.Embedding(n_categories + 1, e)  # 0: no / unknown category
        self.behavior = nn.Embedding(behaviours, 8)
        self.gru = nn.GRU(2 * e + 8 + 2, h, batch_first=True)
        self.rates = nn.Linear(h, 3)  # m, n (background), ν_b (buy burst)
        self.level = nn.Parameter(torch.zeros(()))  # β of the long-run level (softplus)
        self.log_leave = nn.Parameter(torch.zeros(()))  # θ: the level fades in a silence
        self.mix = nn.Linear(h, e)  # background choice of mark, tied category embeddings
        self.mix_bias = nn.Parameter(torch.zeros(slots))
        self.scale_query = nn.Linear(h, 2 * r)  # f_i, s_i
        self.scale_keys = nn.Parameter(torch.randn(2, slots, r) * 0.01)
        self.scale_bias = nn.Parameter(torch.zeros(2, slots))
        self.buy_scale = nn.Linear(h, 1)
        self.conversion = nn.Linear(h + _N_BEH + 1, 1)  # share ρ of activity that is a buy
        self.log_weight = nn.Parameter(torch.zeros(3, behaviours))  # w, v, buy burst
        # raw decay rates: session and interest (shared, then per-mark offsets), buy burst
        self.log_delta = nn.Parameter(torch.zeros(3))
        self.log_delta_offset = nn.Parameter(torch.zeros(2, slots))
        self.item_query = nn.Linear(h + e, e)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        for layer in (self.item, self.category):
            nn.init.normal_(layer.weight, std=0.1)
        for layer in (self.scale_query, self.buy_scale, self.rates, self.mix):
            nn.init.normal_(layer.weight, std=0.01)

    def parameter_groups(self, lr: float, rate_lr: float) -> list[dict]:
        """The decay rates and behaviour weights (a few scalars each, read by every batch)
        learn at `rate_lr`; embeddings and layers at `lr`; θ, one scalar that only long
        silences inform (a few intervals per user), at 10 × `rate_lr`."""
        rates = {"log_delta", "log_delta_offset", "log_weight", "scale_bias", "level"}
        named = dict(self.named_parameters())
        return [
            {"params": [p for n, p in named.items() if n in rates], "lr": rate_lr},
            {"params": [self.log_leave], "lr": 10.0 * rate_lr},
            {
                "params": [p for n, p in named.items() if n not in rates | {"log_leave"}],
                "lr": lr,
            },
        ]

    def session_delta(self, raw: torch.Tensor | None = None) -> torch.Tensor:
        """δ^s (C + 1,) per day: faster than `split`, so session half-lives are shorter."""
        raw = self.log_delta_offset[0] if raw is None else raw
        return self.split + torch.exp(self.log_delta[0] + raw)

    def interest_delta(self, raw: torch.Tensor | None = None) -> torch.Tensor:
        """δ^i (C + 1,) per day, between `DELTA_MIN` and `split`: interest half-lives."""
        raw = self.log_delta_offset[1] if raw is None else raw
        return DELTA_MIN + (self.split - DELTA_MIN) * torch.sigmoid(self.log_delta[1] + raw)

    def buy_delta(self) -> torch.Tensor:
        """δ_b of the buy burst, per day."""
        return DELTA_MIN + torch.exp(self.log_delta[2])

    def level_scale(self) -> torch.Tensor:
        """β: the share of a user's average rate in a mark that lasts while they are active."""
        return F.softplus(self.level)

    def leave_rate(self) -> torch.Tensor:
        """θ per day: the long-run level fades as ``e^{−θτ}`` in a silence of τ (users who
        stop for good), much more slowly than interest."""
        return DELTA_MIN + torch.exp(self.log_leave)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """GRU states (B, L, H), float32: h_i has read events up to and including i.

        Under autocast (`NeuralConfig.precision`) the layers run in lower precision; every
        output that feeds the point-process maths is cast back to float32, here and below.
        """
        x = torch.cat(
            [
                self.item(batch["item"]),
                self.category(batch["cat"]),
                self.behavior(batch["beh"]),
                batch["gap"],
            ],
            dim=-1,
        )
        return self.gru(x)[0].float()

    def background(self, h: torch.Tensor) -> torch.Tensor:
        """m, n, ν_b (…, 3) from states."""
        return F.softplus(self.rates(h).float())

    def conversion_share(self, h: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """ρ (B, L): the share of the user's coming category activity that ends in a buy.

        Reads the state and log1p counts of each item behaviour (and of all events,
        search marks included) so far.
        """
        valid = batch["valid"][:, :, None].float()
        kinds = torch.arange(_N_BEH, device=valid.device)
        counts = (batch["beh"][:, :, None] == kinds).float() * valid
        counts = torch.log1p(torch.cat([counts, valid], -1).cumsum(1))
        return torch.sigmoid(self.conversion(torch.cat([h, counts], -1))[..., 0].float())

    def log_mix(self, h: torch.Tensor) -> torch.Tensor:
        """log π (N, C + 1): the background's choice of mark (the last: no category)."""
        keys = torch.cat([self.category.weight[1:], self.category.weight[:1]])
        logits = (self.mix(h) @ keys.T).float() + self.mix_bias
        return F.log_softmax(logits, dim=-1)

    def excitation(self, h: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict:
        """Pair terms of the excitation sums: row i (after event i), column j ≤ i.

        fast, long : (B, L, L) the contributions of event j to α_i,c_j (session) and
        μ_i,c_j (interest), zero off the causal, valid pairs; buy : (B, L) the summed
        contributions to α_b; delta_j, delta_long_j : (B, L) session and interest δ of
        event j's mark; cat_j : (B, L) event j's mark (its category, C without one);
        modulation : the mean squared log-modulation the state puts on the pairs.
        """
        t, cat, beh, valid = batch["t"], batch["cat"], batch["beh"], batch["valid"]
        b, length = cat.shape
        dt = (t[:, :, None] - t[:, None, :]).clamp_min(0.0)
        causal = torch.ones(length, length, dtype=torch.bool, device=h.device).tril()
        pair = causal & valid[:, :, None] & valid[:, None, :]
        cat_j = torch.where(cat > 0, cat - 1, self.n_categories)
        delta_j = self.session_delta()[cat_j]
        delta_long_j = self.interest_delta()[cat_j]
        query = self.scale_query(h).view(b, length, 2, -1)
        keys = self.scale_keys[:, cat_j]  # (2, B, L, r)
        modulation = torch.einsum("bikr,kbjr->kbij", query, keys).float().clamp(max=_EXP_MAX)
        mean_square = (modulation.square() * pair).sum() / (2 * pair.sum()).clamp_min(1)
        log_scale = modulation + self.scale_bias[:, cat_j][:, :, None, :]
        log_w = self.log_weight[:, beh]  # (3, B, L)
        buy_scale = self.buy_scale(h).float().clamp(max=_EXP_MAX)  # (B, L, 1)
        zero = torch.zeros((), device=h.device)

        def kernel(log_size: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor):
            return torch.where(mask, torch.exp((log_size - delta * dt).clamp(max=_EXP_MAX)), zero)

        return {
            "fast": kernel(log_scale[0] + log_w[0][:, None, :], delta_j[:, None, :], pair),
            "long": kernel(log_scale[1] + log_w[1][:, None, :], delta_long_j[:, None, :], pair),
            "buy": kernel(buy_scale + log_w[2][:, None, :], self.buy_delta(), pair).sum(-1),
            "delta_j": delta_j,
            "delta_long_j": delta_long_j,
            "cat_j": cat_j,
            "modulation": mean_square,
        }

    def item_vector(self, h: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        """Item query (N, E) from states (N, H) and category inputs (N,) (0 = none)."""
        return self.item_query(torch.cat([h, self.category(cat)], -1))

    def item_logits(self, h: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        """Item logits (N, n_items) over every fitted item."""
        return (self.item_vector(h, cat) @ self.item.weight[1:].T).float() + self.item_bias


def _batch(
    seq: _Sequences,
    start: np.ndarray,
    end: np.ndarray,
    device: torch.device,
    score_from: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """(B, L) tensors of the event ranges ``[start, end)``, left-aligned and padded; only
    intervals from `score_from` on are scored (default: all)."""
    length = int((end - start).max())
    idx = start[:, None] + np.arange(length)
    valid = idx < end[:, None]
    idx = np.where(valid, idx, start[:, None])

    def tensor(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(values, dtype=dtype, device=device)

    out = {
        "t": tensor(np.where(valid, seq.t[idx] - seq.t[start][:, None], 0.0), torch.float32),
        "item": tensor(np.where(valid, seq.item[idx], 0), torch.long),
        "cat": tensor(np.where(valid, seq.cat[idx], 0), torch.long),
        "beh": tensor(seq.beh[idx], torch.long),
        "gap": tensor(seq.gap[idx] * valid[:, :, None], torch.float32),
        "valid": tensor(valid, torch.bool),
        "last": tensor(end - start - 1, torch.long),
        "scored": tensor(
            valid & seq.weight[idx] & (True if score_from is None else idx >= score_from[:, None]),
            torch.bool,
        ),
    }
    for name in ("tau", "tau0", "level_mark", "level_total"):
        out[name] = tensor(getattr(seq, name)[idx], torch.float32)
    for name in ("next_item", "next_cat"):
        out[name] = tensor(getattr(seq, name)[idx], torch.long)
    out["mark"] = tensor(seq.slot[idx], torch.long)  # uncategorised events: slot C
    out["next_buy"] = tensor(seq.next_buy[idx], torch.bool)
    return out


def _batch_loss(
    net: _Net,
    batch: dict[str, torch.Tensor],
    item_weight: float,
    item_chunk: int,
    negatives: torch.Tensor | None = None,
    modulation_penalty: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """Summed NLL of the scored intervals of a batch, and how many there are.

    `negatives` (item ids) switches the item term to a sampled softmax over the batch's
    targets plus those items; None uses the exact full softmax. `modulation_penalty`
    adds that weight times the mean squared log-modulation per interval.
    """
    h = net.encode(batch)
    keep = batch["scored"]
    n = int(keep.sum())
    if n == 0:
        return h.sum() * 0.0, 0
    ex = net.excitation(h, batch)
    rows = torch.nonzero(keep)[:, 0]  # the sequence of each scored interval
    hk = h[keep]
    tau, tau0, mark = batch["tau"][keep], batch["tau0"][keep], batch["mark"][keep]
    span = (tau - tau0).clamp_min(0.0)
    m, nu, nu_b = net.background(hk).unbind(-1)
    pi = net.log_mix(hk).exp()
    delta_s, delta_i = net.session_delta(), net.interest_delta()
    beta = net.level_scale()
    level_total = beta * batch["level_total"][keep]
    level_mark = beta * batch["level_mark"][keep]
    fast, long = ex["fast"][keep], ex["long"][keep]  # (N, L) over the sequence's events j
    delta_j, delta_long_j = ex["delta_j"][rows], ex["delta_long_j"][rows]
    t0, width = tau0[:, None], span[:, None]

    # Σ_c (Λ_c(τ) − Λ_c(τ0)): the level, the background spread over π, the pairs their own
    leave = net.leave_rate()
    comp = level_total * _window_mass(leave, tau0, span)
    comp = comp + m * (pi * _window_mass(delta_i, t0, width)).sum(-1)
    comp = comp + nu * (pi * _window_mass(delta_s, t0, width)).sum(-1)
    comp = comp + (long * _window_mass(delta_long_j, t0, width)).sum(-1)
    comp = comp + (fast * _window_mass(delta_j, t0, width)).sum(-1)
    has = mark >= 0
    mark0 = mark.clamp_min(0)
    same = ex["cat_j"][rows] == mark[:, None]
    pi_mark = pi.gather(1, mark0[:, None])[:, 0]
    lam = (
        level_mark * torch.exp(-leave * tau)
        + (m * pi_mark + (long * same).sum(-1)) * torch.exp(-delta_i[mark0] * tau)
        + (nu * pi_mark + (fast * same).sum(-1)) * torch.exp(-delta_s[mark0] * tau)
    )
    log_lam = torch.log(lam.clamp_min(_LOG_FLOOR))
    loss = comp.sum() - torch.where(has, log_lam, torch.zeros_like(log_lam)).sum()
    loss = loss + modulation_penalty * ex["modulation"] * n

    # buys: a share ρ of the category activity plus their own self-exciting process
    rho = net.conversion_share(h, batch)[keep]
    burst, buy_delta = nu_b + ex["buy"][keep], net.buy_delta()
    zero = torch.zeros_like(burst)
    loss = loss + (rho * comp + increment(zero, burst, buy_delta, tau0, tau)).sum()
    buys = torch.nonzero(batch["next_buy"][keep])[:, 0]
    if buys.numel():
        tb = tau[buys, None]
        activity = (
            level_total[buys] * torch.exp(-leave * tau[buys])
            + m[buys] * (pi[buys] * torch.exp(-delta_i * tb)).sum(-1)
            + nu[buys] * (pi[buys] * torch.exp(-delta_s * tb)).sum(-1)
            + (long[buys] * torch.exp(-delta_long_j[buys] * tb)).sum(-1)
            + (fast[buys] * torch.exp(-delta_j[buys] * tb)).sum(-1)
        )
        own = intensity(zero[buys], burst[buys], buy_delta, tau[buys])
        loss = loss - torch.log((rho[buys] * activity + own).clamp_min(_LOG_FLOOR)).sum()
    if item_weight > 0:
        loss = loss + item_weight * _item_nll(
            net, hk, batch["next_item"][keep], batch["next_cat"][keep], item_chunk, negatives
        )
    return loss, n


def _item_nll(net, h, target, next_cat, item_chunk, negatives) -> torch.Tensor:
    """Summed item-choice NLL of the intervals whose next event has a known item."""
    has = torch.nonzero(target >= 0)[:, 0]
    total = h.sum() * 0.0
    if negatives is not None and has.numel():
        cand = torch.unique(torch.cat([target[has], negatives]))
        q = net.item_vector(h[has], next_cat[has])
        logits = (q @ net.item.weight[cand + 1].T).float() + net.item_bias[cand]
        return F.cross_entropy(logits, torch.searchsorted(cand, target[has]), reduction="sum")
    for lo in range(0, int(has.numel()), item_chunk):
        part = has[lo : lo + item_chunk]
        logits = net.item_logits(h[part], next_cat[part])
        total = total + F.cross_entropy(logits, target[part], reduction="sum")
    return total


class _Objective(nn.Module):
    """The training loss of a batch as a module's forward: DDP averages the gradients of
    what runs inside a wrapped module's forward."""

    def __init__(self, net: _Net, cfg: NeuralConfig) -> None:
        super().__init__()
        self.net, self.cfg = net, cfg

    def forward(self, batch: dict, negatives: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        cfg = self.cfg
        return _batch_loss(
            self.net, batch, cfg.item_weight, cfg.item_chunk, negatives, cfg.modulation_penalty
        )


def _my_chunks(group: distributed.Group, events: EventArrays, reads: np.ndarray) -> np.ndarray:
    """The training chunks of this rank's users (all of them alone): users, not chunks,
    are shared out, balanced by their chunk counts."""
    if group.world == 1:
        return np.arange(reads.size)
    user = np.searchsorted(events.offsets, reads, side="right") - 1
    users = group.shard_balanced(np.bincount(user, minlength=events.n_users))
    return np.flatnonzero(np.isin(user, users))


def _rank_seed(seed: int, group: distributed.Group, epoch: int) -> int:
    """The shuffling and negative-sampling seed of a rank in an epoch."""
    return int(np.random.SeedSequence([seed, group.world, group.rank, epoch]).generate_state(1)[0])


def _step_totals(
    group: distributed.Group, loss: torch.Tensor, n: int, late: bool
) -> tuple[float, int, bool]:
    """Summed loss and scored intervals of a step over the ranks, and whether any rank
    is out of time: one collective, so every rank scales and stops alike."""
    summed, count, late_ranks = group.sum([float(loss.detach()), float(n), float(late)])
    return summed, int(count), late_ranks > 0


#: Settings a resumed run may change (the rest must match the checkpoint).
_RESUMABLE = frozenset(
    {"epochs", "max_train_seconds", "patience", "device", "precision"}
    | {"item_epochs", "item_max_seconds", "item_patience"}  # the head trains after the resume
)


@dataclass
class _Run:
    """Where a training run stands: what a checkpoint saves and `--resume` restores."""

    epoch: int = 0
    best: float = math.inf  # validation-window criterion of the best epoch
    best_nll: float = math.nan
    best_epoch: int = 0
    best_state: dict | None = None
    stale: int = 0
    stop: str = "epochs"
    train_nll: float = math.nan
    elapsed: float = 0.0

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class _Window:
    """The validation window ``[t_train, t_train + horizon)`` and what happened in it."""

    train: EventArrays
    users: np.ndarray
    t_train: float
    horizon: float
    engaged: np.ndarray  # per touched (user, category) pair, in `_user_state` order
    bought: np.ndarray  # per user
    returned: np.ndarray  # per user: any event in the window
    first_return: np.ndarray  # per user: days from the window's start to the first, or inf


@dataclass
class _State:
    """The model's answer-ready state of some users at an instant.

    h : (U, H) GRU states after each user's last event (zeros without history)
    tau : (U,) days since the last event
    span : (U,) days from the user's first event to the instant
    rates : (U, 3) m, n, ν_b
    buy_burst : (U,) α_b, the buy burst's size at the last event
    conversion : (U,) ρ, the share of the category activity that ends in a buy
    pair_user, pair_cat, pair_long, pair_fast : every (user, mark) touched before the
        instant (user as a position in the queried users; mark C: events without a known
        category), with the excitation sums ``Σ e^{s·k} v e^{−δ_long Δt}`` (part of μ_c)
        and ``Σ e^{f·k} w e^{−δ_c Δt}`` (part of α_c) at the last event; sorted by user,
        then mark; pair_count: the user's item events in the mark (the long-run level's
        count; a mark only searched for has a pair with count 0).
    read_long, read_fast : per event of the users (one user's after another, as `_subset`
        orders them), its terms of pair_long and pair_fast (0 for an event not read).
    All times are operational (`ebbtide.features.cycle`).
    """

    h: np.ndarray
    tau: np.ndarray
    span: np.ndarray
    rates: np.ndarray
    buy_burst: np.ndarray
    conversion: np.ndarray
    pair_user: np.ndarray
    pair_cat: np.ndarray
    pair_long: np.ndarray
    pair_fast: np.ndarray
    pair_count: np.ndarray
    read_long: np.ndarray
    read_fast: np.ndarray


def _subset(events: EventArrays, users: np.ndarray) -> EventArrays:
    """The events of `users` (in that order), renumbered 0 .. len(users) − 1."""
    offsets = np.concatenate([[0], np.cumsum(events.lengths()[users])]).astype(np.int64)
    idx, q = user_event_ranges(events.offsets, users)
    return EventArrays(
        user_idx=q.astype(np.int32),
        item_idx=events.item_idx[idx],
        category_idx=events.category_idx[idx],
        behavior=events.behavior[idx],
        t=events.t[idx],
        offsets=offsets,
        n_users=int(users.size),
        n_items=events.n_items,
        n_categories=events.n_categories,
        before=events.before,
    )


# -- searches: marks the process reads, never predicts --------------------------------------
@dataclass(frozen=True)
class _SearchMarks:
    """Searches placed as marks, sorted by (user, time): the model's user code, days since
    the epoch, the category the query is likeliest about, and the search's row in the
    history's `SearchArrays` (for its text)."""

    user: np.ndarray
    t: np.ndarray
    category: np.ndarray
    row: np.ndarray


@dataclass(frozen=True)
class _SearchedEvents(EventArrays):
    """Item events with the search marks beside them, not among them: the point process
    merges them into what it reads (`_with_search_marks`); the next-item head and the
    outcomes read the item events alone."""

    marks: _SearchMarks


def _with_search_marks(events: EventArrays, marks: _SearchMarks) -> EventArrays:
    """`events` with one more row per search mark (behaviour `_SEARCH`, its category,
    item code `n_items`: none), sorted by (user, time), a search before the item events of
    its instant (it led to them); item events keep their order."""
    n = events.n_events
    user = np.concatenate([events.user_idx, marks.user.astype(events.user_idx.dtype)])
    t = np.concatenate([events.t, marks.t])
    is_item = np.r_[np.ones(n, dtype=bool), np.zeros(marks.t.size, dtype=bool)]
    order = np.lexsort((is_item, t, user))  # stable: equal keys keep their order
    none = np.full(marks.t.size, events.n_items, dtype=events.item_idx.dtype)
    search = np.full(marks.t.size, _SEARCH, dtype=events.behavior.dtype)
    category = marks.category.astype(events.category_idx.dtype)
    return EventArrays(
        user_idx=user[order],
        item_idx=np.concatenate([events.item_idx, none])[order],
        category_idx=np.concatenate([events.category_idx, category])[order],
        behavior=np.concatenate([events.behavior, search])[order],
        t=t[order],
        offsets=np.searchsorted(user[order], np.arange(events.n_users + 1)).astype(np.int64),
        n_users=events.n_users,
        n_items=events.n_items,
        n_categories=events.n_categories,
        before=events.before,
    )


def _read_with_searches(events: EventArrays) -> EventArrays:
    """What the point process reads: `events` with the marks beside them merged in."""
    marks = getattr(events, "marks", None)
    return events if marks is None else _with_search_marks(events, marks)


def _search_rows(
    events: EventArrays, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the search marks beside `events` sit among what the point process reads of
    `users`: their positions in `_subset` order, their users' positions in `users`, and
    their rows in the marks (empty without marks)."""
    marks = getattr(events, "marks", None)
    if marks is None:
        none = np.zeros(0, dtype=np.int64)
        return none, none, none
    read = _with_search_marks(events, marks)
    idx, q = user_event_ranges(read.offsets, users)
    search = read.behavior == _SEARCH
    rank = np.cumsum(search) - 1  # marks keep their order among the rows read
    position = np.flatnonzero(search[idx])
    return position, q[position], rank[idx[position]]


_PRIVATE_SEARCH_NOTE = (
    "searches left out: their query map would be learned from the users' searches"
    " without noise, outside this account (set use_searches=False to say so)"
)
_PRIVATE_CYCLE_NOTE = "no cycle: a private fit (dp_epsilon) reads the data only through DP-SGD"


def _private_cycle(t_end: float, time_zone: str) -> Cycle:
    """The flat cycle of a private fit: a fitted one would be read off the event times
    without noise. Only the time zone's offset at the cut-off (not data) is kept."""
    at = pd.Timestamp(t_end * 86_400.0, unit="s", tz="UTC").to_pydatetime()
    offset = ZoneInfo(time_zone).utcoffset(at).total_seconds() / 86_400.0
    return Cycle(offset, note=_PRIVATE_CYCLE_NOTE)


def _private_amp(precision: str, device: torch.device) -> torch.dtype | None:
    """`amp_dtype` for DP-SGD: fp16 would need a gradient scaler, so float32 instead."""
    amp = amp_dtype(precision, device)
    return None if amp == torch.float16 else amp


class NeuralModel(Model):
    """GRU-modulated self-exciting marked point process: interest, return, purchase, items."""

    name = "neural"
    format_version = 6
    config_class = NeuralConfig
    answers = frozenset({"p_return", "p_buy", "expected_return_time", "interest", "recommend"})
    state_attributes = (
        "n_items_",
        "n_categories_",
        "activation_",
        "return_calibration_",
        "validation_days_",
        "level_share_",
        "cycle_array_",
        "half_life_intervals_",
    )

    # -- fitting -----------------------------------------------------------------------
    def _device(self) -> torch.device:
        device = torch.device(self.config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"NeuralConfig.device={self.config.device!r}: no CUDA device here")
        return device

    @property
    def cycle(self) -> Cycle:
        """The fitted daily/weekly cycle (flat when `NeuralConfig.cycle` is off)."""
        return Cycle.from_array(self.cycle_array_)

    def _warped(self, events: EventArrays) -> EventArrays:
        """`events` on the cycle's operational clock."""
        return replace(events, t=self.cycle.warp(events.t))

    # -- searches ------------------------------------------------------------------------
    def _behaviours(self) -> int:
        """Rows of the behaviour embedding: the item behaviours, and search marks when the
        model has a query map (so a log without searches builds the network it did)."""
        return _N_BEH + 1 if getattr(self, "query_map_", None) is not None else _N_BEH

    def _search_marks(self, history: History, local: Localised) -> _SearchMarks | None:
        """The searches of `history` (all before its instant) of users `local` knows,
        each on its query's likeliest category when the map gives it at least
        `search_min_probability`; None without a map or without such a search."""
        qmap = getattr(self, "query_map_", None)
        searches = getattr(history, "searches", None)
        if qmap is None or not self.config.use_searches or searches is None:
            return None
        if searches.t.size == 0:
            return None
        user = search_users(searches, history, local.catalogue)
        category, probability = (column[:, 0] for column in qmap.predict(searches.query, k=1))
        n_cat = min(int(self.n_categories_), local.events.n_categories)
        keep = (
            (user >= 0)
            & (searches.t < to_days(history.at))
            & (category >= 0)
            & (category < n_cat)
            & (probability >= max(self.config.search_min_probability, 1e-12))
        )
        row = np.flatnonzero(keep)
        if row.size == 0:
            return None
        row = row[np.lexsort((searches.t[row], user[row]))]
        return _SearchMarks(
            user=user[row].astype(np.int64),
            t=searches.t[row],
            category=category[row].astype(np.int64),
            row=row,
        )

    def _prepare(
        self, query: str, history: History, users, in_sample: bool
    ) -> tuple[Localised, np.ndarray, bool]:
        """The base class's answer, with the history's search marks beside the events;
        the last one is kept, so the queries at one instant share it (and the states
        `_query_state` keeps)."""
        local, index, marked = super()._prepare(query, history, users, in_sample)
        cached = getattr(self, "_searched", None)
        if cached is None or cached[0] is not local:
            marks = self._search_marks(history, local)
            searched = local
            if marks is not None:
                fields = {
                    name: getattr(local.events, name) for name in EventArrays.__dataclass_fields__
                }
                searched = replace(local, events=_SearchedEvents(**fields, marks=marks))
            cached = (local, searched)
            self._searched = cached
        return cached[1], index, marked

    def explain_queries(
        self, history: History, users: Sequence[str] | None = None, *, k: int = 3
    ) -> pd.DataFrame:
        """Which searches drive each category's interest at ``at = history.at``.

        Per (user, category): the `k` queries whose marks contribute most to its level
        now. A search's contribution is its own terms of the excitation sums,
        ``e^{s·k_c} v_search e^{−δ^i_c (at − s)} + e^{f·k_c} w_search e^{−δ^s_c (at − s)}``
        per (operational) day: the part of `interest`'s ``excitation`` plus ``session``
        columns it makes. (What the search changed in the GRU's state, and so in the
        other terms, is not attributed to it.) Queries are grouped by their normalised
        text and shown as last typed; a search older than the events read
        (`max_len` + `context_len`) contributes nothing.

        Returns
        -------
        pd.DataFrame
            user_id, category_id, query, searches (how many), last_searched_at (UTC),
            contribution (per day), as `DecayModel.explain_queries`; rows by user,
            category, contribution (largest first). Empty when no search is placed (no
            map, or no searches before ``at``).
        """
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r} must be an integer >= 1")
        local, index, _ = self._prepare("explain_queries", history, users, False)
        at = to_days(history.at)
        marks = getattr(local.events, "marks", None)
        rows = _search_rows(local.events, index)
        if marks is None or rows[0].size == 0:
            empty = np.zeros(0)
            return explain_searches(
                local.catalogue, empty, empty, empty.astype(object), empty, empty, k
            )
        state = self._query_state(local.events, index, at)
        position, q, mark = rows
        category = marks.category[mark]
        session, interest, _ = self._decay_rates()
        tau = state.tau[q]
        contribution = state.read_long[position] * np.exp(-interest[category] * tau)
        contribution += state.read_fast[position] * np.exp(-session[category] * tau)
        typed = history.searches.query[marks.row[mark]]
        return explain_searches(
            local.catalogue, index[q], category, typed, marks.t[mark], contribution, k
        )

    def _fit(self, events: EventArrays, progress: Progress | None) -> None:
        # ranks wait in a collective while rank 0 calibrates and trains the next-item head
        wait = timedelta(minutes=30) + 2 * timedelta(seconds=self.config.item_max_seconds)
        with distributed.process_group(self._device(), wait) as group:
            self._fit_on(events, progress if group.is_main else None, group)

    def _fit_on(
        self, events: EventArrays, progress: Progress | None, group: distributed.Group
    ) -> None:
        """`_fit` as one of `group`'s processes: alone, or one rank of a DDP run (its
        share of the users' sequences, gradients averaged; every decision taken on
        quantities summed over the ranks, so all agree; only rank 0 writes)."""
        cfg = self.config
        private = cfg.private
        if private:
            self._check_private_run(group)
        history, local = self._local  # what `Model.fit` has just read and renumbered
        # the searches' map is read off the data without noise: never in a private fit
        use_searches = cfg.use_searches and not private
        self.query_map_ = fit_query_map(history, local) if use_searches else None
        self._searched = None
        device = group.device
        t_end = self.cutoff_.timestamp() / 86_400
        cycle = Cycle()
        if private:
            cycle = _private_cycle(t_end, cfg.time_zone)
        elif cfg.cycle and events.n_events:
            start = float(np.quantile(events.t, 0.01))
            cycle = Cycle.fit(events.t, start=start, end=t_end, time_zone=cfg.time_zone)
        self.cycle_array_ = cycle.to_array()
        clock_events = events  # the next-item head reads clock gaps
        events, t_end = self._warped(events), float(cycle.warp(t_end))
        n_items, n_cat = events.n_items, max(events.n_categories, 1)
        slot = _slots(events, n_cat)
        if private:  # a share counted from the data would leave the guarantee
            self.level_share_ = np.full(n_cat + 1, 1.0 / (n_cat + 1))
        else:
            self.level_share_ = (np.bincount(slot, minlength=n_cat + 1) + 0.1) / (
                slot.size + 0.1 * (n_cat + 1)
            )
        self.half_life_intervals_ = np.full((2, n_cat + 1, 2), np.nan)
        self.n_items_, self.n_categories_ = np.asarray(n_items), np.asarray(n_cat)
        marks = self._search_marks(history, local)
        # what the process reads: the item events and, in among them, the search marks
        read = events if marks is None else self._warped(_with_search_marks(clock_events, marks))
        self.activation_ = np.array([1.0, 0.0])
        self.return_calibration_ = np.array([1.0, 0.0, 0.0, 1.0])  # a, b, c, V
        validation_days = 0.0 if private else cfg.validation_days
        if validation_days is None:
            # the log's start: its 1st percentile, as a few stray old timestamps (Taobao's
            # sample has some from September) must not stretch a 9-day log
            first = float(np.quantile(events.t, 0.01)) if events.n_events else t_end
            validation_days = auto_validation_days(t_end - first)
        self.validation_days_ = np.asarray(float(validation_days))
        t_train = t_end - validation_days
        train = events.select(events.t < t_train) if validation_days > 0 else events
        if train.n_events == 0:
            train, t_train = events, t_end
        has_val = t_train < t_end  # survival through the window is scored too
        read_train = read.select(read.t < t_train) if has_val else read

        torch.manual_seed(cfg.seed)  # every rank starts from the same weights
        generator = torch.Generator().manual_seed(cfg.seed)
        net = _Net(n_items, n_cat, cfg, self._behaviours())
        self._init_biases(net, train, t_train)
        net.to(device)
        step = _Objective(net, cfg)
        if group.world > 1:
            step = nn.parallel.DistributedDataParallel(
                step,
                device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=True,  # an idle or unscored batch leaves some out
            )
        self.net_ = net
        self._state_cache = None
        optimiser = torch.optim.Adam(
            net.parameter_groups(cfg.lr, cfg.lr * cfg.rate_lr_scale),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )
        seq = self._sequences(read_train, t_train)
        reads, starts, ends = _chunks(read_train.offsets, cfg.max_len, False, cfg.context_len)
        mine = _my_chunks(group, read_train, reads)
        steps = -(-group.most(mine.size) // cfg.batch_size)  # the same on every rank
        n_intervals = max(int(train.n_events), 1)
        if has_val:
            val_seq = self._sequences(read, t_end, t_start=t_train)
            val_starts, _, val_ends = _chunks(read.offsets, cfg.max_len, True, cfg.context_len)
            window = self._window(read_train, events, t_train, t_end)
        if private:
            self._fit_private(
                net, optimiser, read_train, seq, (reads, starts, ends), clock_events, progress
            )
            return

        run = _Run()
        checkpoint = self._checkpoint_path
        if self._resume:
            run = self._restore(checkpoint, net, optimiser, generator, read)
            run.stop = "epochs"
        clock = time.monotonic() - run.elapsed
        batches = steps
        amp = amp_dtype(cfg.precision, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        for epoch in range(run.epoch + 1, cfg.epochs + 1):
            net.train()
            if group.world > 1:  # each rank its own stream, a resume continues it
                generator.manual_seed(_rank_seed(cfg.seed, group, epoch))
            order = mine[torch.randperm(mine.size, generator=generator).numpy()]
            total, count, seen, epoch_clock = 0.0, 0, 0, time.monotonic()
            for b, lo in enumerate(range(0, steps * cfg.batch_size, cfg.batch_size)):
                rows = order[lo : lo + cfg.batch_size]
                idle = rows.size == 0  # a rank whose share ran out still joins the step
                if idle:
                    rows = np.zeros(1, dtype=np.int64)
                batch = _batch(seq, reads[rows], ends[rows], device, starts[rows])
                negatives = None
                if cfg.item_negatives and n_items > cfg.full_softmax_items:
                    negatives = torch.randint(
                        n_items, (cfg.item_negatives,), generator=generator
                    ).to(device)
                with autocast(device, amp):
                    loss, n = step(batch, negatives)
                if group.world == 1:
                    if n == 0:
                        continue
                    mean_loss, summed = loss / n, float(loss.detach())
                else:
                    if idle:
                        loss, n = loss * 0.0, 0
                    late = time.monotonic() - clock > cfg.max_train_seconds
                    summed, n, late = _step_totals(group, loss, n, late)
                    if n == 0:  # nothing scored on any rank: DDP still needs the backward
                        (loss * 0.0).backward()
                        optimiser.zero_grad()
                        continue
                    # DDP averages the ranks' gradients: the mean over all scored intervals
                    mean_loss = loss * (group.world / n)
                prior = cfg.delta_prior * net.log_delta_offset.square().sum() / n_intervals
                optimiser.zero_grad()
                scaler.scale(mean_loss + prior).backward()
                scaler.unscale_(optimiser)  # clip the true gradients
                nn.utils.clip_grad_norm_(net.parameters(), 5.0)
                scaler.step(optimiser)  # skipped when an fp16 gradient overflowed
                scaler.update()
                total, count, seen = total + summed, count + n, seen + n
                if progress is not None and (b % 10 == 0 or b == batches - 1):
                    progress(
                        self._progress_line(
                            epoch, b + 1, batches, total / count, seen, epoch_clock, clock
                        ),
                        _POINT_PROCESS_SHARE * (epoch - 1 + (b + 1) / batches) / cfg.epochs,
                    )
                if group.world == 1:
                    late = time.monotonic() - clock > cfg.max_train_seconds
                if late:  # under DDP: any rank's clock, summed with the step's totals
                    run.stop = "time"
                    break
            run.train_nll = total / max(count, 1)
            run.epoch = epoch
            if has_val:
                nll = self._validation_nll(net, val_seq, val_starts, val_ends, device, group)
                loss = self._window_loss(window, group)
                if loss < run.best:
                    run.best, run.best_nll, run.best_epoch = loss, nll, epoch
                    run.best_state, run.stale = copy.deepcopy(net.state_dict()), 0
                else:
                    run.stale += 1
            run.elapsed = time.monotonic() - clock
            if checkpoint is not None and group.is_main:
                self._checkpoint(checkpoint, run, net, optimiser, generator, read)
            if run.stop == "time":
                break
            if has_val and run.stale > cfg.patience:
                run.stop = "patience"
                break
            if group.any(time.monotonic() - clock > cfg.max_train_seconds):
                run.stop = "time"
                break
        if run.best_state is not None:
            net.load_state_dict(run.best_state)
        net.eval()
        if not group.is_main:  # rank 0 finishes alone; the others take its result
            self._take_finish(group.from_main())
            return
        calibration = {}
        if has_val:
            calibration = self._calibrate(window)
        self.half_life_intervals_ = self._half_life_intervals(
            net, seq, (reads, starts, ends), device
        )
        session, interest = (d.detach().double().cpu().numpy() for d in self._scale_deltas())
        # the categories' half-lives, or the no-category mark's on a log without categories
        used = slice(0, n_cat) if events.n_categories > 0 else slice(n_cat, n_cat + 1)
        self.next_item_, next_item = fit_next_item(
            clock_events, n_items, self._next_item_settings(n_items), device, _later_stage(progress)
        )
        self.metrics_ = {
            "epochs": run.epoch,
            "stopped_by": run.stop,
            "precision": str(amp or torch.float32).removeprefix("torch."),
            "train_nll_per_interval": run.train_nll,
            "best_epoch": run.best_epoch if has_val else run.epoch,
            "validation_nll_per_interval": run.best_nll if has_val else None,
            "validation_window_1_minus_auc": run.best if has_val else None,
            "train_seconds": time.monotonic() - clock,
            "events": int(events.n_events),
            "buy_events": int(np.count_nonzero(events.behavior == _BUY)),
            "validation_days": float(self.validation_days_),
            "median_half_life_days": float(np.median(math.log(2.0) / interest[used])),
            "median_session_half_life_hours": float(
                np.median(24.0 * math.log(2.0) / session[used])
            ),
            "long_run_level_share": float(net.level_scale().detach()),
            "silence_half_life_days": math.log(2.0) / float(net.leave_rate().detach()),
            "daily_cycle_amplitude": cycle.daily_amplitude,
            "daily_cycle_peak_hour": cycle.peak_hour,
            "cycle_note": cycle.note,
            **calibration,
            **{f"next_item_{name}": value for name, value in next_item.items()},
        }
        if self.query_map_ is not None:
            self.metrics_["search_marks"] = 0 if marks is None else int(marks.t.size)
        if group.world > 1:
            self.metrics_["processes"] = group.world
            group.from_main(self._finish_payload())
        self._restrict_answers()

    def _check_private_run(self, group: distributed.Group) -> None:
        """Refuse what a private fit cannot account for."""
        if group.world > 1:
            raise ConfigError(
                "NeuralConfig.dp_epsilon trains in one process: under DDP each rank would"
                " sample and noise its own users outside one account; train with one"
                " process (leave out --nproc, do not launch with torchrun)"
            )
        if self._resume:
            raise ConfigError(
                "a private fit (dp_epsilon) cannot resume: its privacy account is not"
                " checkpointed, so the steps before the resume would go uncounted; train"
                " again without --resume"
            )

    def _fit_private(
        self,
        net: _Net,
        optimiser: torch.optim.Optimizer,
        train: EventArrays,
        seq: _Sequences,
        chunks: tuple[np.ndarray, np.ndarray, np.ndarray],
        clock_events: EventArrays,
        progress: Progress | None,
    ) -> None:
        """Train the point process, then the next-item head, with user-level DP-SGD
        (`ebbtide.models.dp_sgd`) on one budget, and record the guarantee.

        σ is chosen once for the planned steps of both phases; a wall-clock stop takes
        fewer and spends less (the account counts the steps taken). Nothing else is read
        from the data: no validation window, no best epoch, no calibration, no
        half-life intervals (they would be read off the private data without noise).
        """
        from ebbtide.models.dp_sgd import UserLevelDPSGD, default_delta

        cfg, device = self.config, self._device()
        users = np.flatnonzero(train.lengths() > 0)
        rate = min(1.0, cfg.dp_users_per_step / max(users.size, 1))
        steps = math.ceil(cfg.dp_epochs / rate)
        item_steps = math.ceil(cfg.dp_item_epochs / rate)
        delta = cfg.dp_delta if cfg.dp_delta is not None else default_delta(users.size)
        engine = UserLevelDPSGD.for_budget(
            users,
            target_epsilon=float(cfg.dp_epsilon),
            delta=delta,
            users_per_step=cfg.dp_users_per_step,
            max_grad_norm=cfg.dp_max_grad_norm,
            total_steps=steps + item_steps,
        )  # the noise and the sample are seeded by the OS, never by cfg.seed
        amp = _private_amp(cfg.precision, device)
        n_items = int(self.n_items_)
        sample_negatives = bool(cfg.item_negatives) and n_items > cfg.full_softmax_items
        generator = torch.Generator().manual_seed(cfg.seed)
        params = [p for p in net.parameters() if p.requires_grad]
        clock, stop, taken = time.monotonic(), "epochs", 0
        net.train()
        for step in range(steps):
            negatives = None
            if sample_negatives:
                negatives = torch.randint(n_items, (cfg.item_negatives,), generator=generator)
                negatives = negatives.to(device)
            user_loss = self._user_loss(
                net, seq, chunks, train.offsets, device, amp, negatives, cfg.modulation_penalty
            )
            optimiser.zero_grad()
            summed, counted = engine.private_gradient(params, engine.sample(), user_loss)
            # the shrinkage prior: no data in it, so it joins after the noise, per user
            prior = cfg.delta_prior * net.log_delta_offset.square().sum() / users.size
            prior.backward()
            optimiser.step()
            taken = step + 1
            if progress is not None and (step % 10 == 0 or taken == steps):
                progress(
                    engine.progress_line(taken, steps, summed, counted),
                    _POINT_PROCESS_SHARE * taken / steps,
                )
            if time.monotonic() - clock > cfg.max_train_seconds:
                stop = "time"
                break
        net.eval()
        train_seconds = time.monotonic() - clock
        session, interest = (d.detach().double().cpu().numpy() for d in self._scale_deltas())
        n_cat = int(self.n_categories_)
        used = slice(0, n_cat) if train.n_categories > 0 else slice(n_cat, n_cat + 1)
        self.next_item_, next_item = fit_next_item(
            clock_events,
            n_items,
            self._next_item_settings(n_items),
            device,
            _later_stage(progress),
            private=engine,
            steps=item_steps,
        )
        cycle = self.cycle
        self.metrics_ = {
            "epochs": round(taken * rate, 3),  # expected passes over the users
            "stopped_by": stop,
            "precision": str(amp or torch.float32).removeprefix("torch."),
            "train_seconds": train_seconds,
            "events": int(train.n_events),
            "buy_events": int(np.count_nonzero(train.behavior == _BUY)),
            "validation_days": 0.0,
            "median_half_life_days": float(np.median(math.log(2.0) / interest[used])),
            "median_session_half_life_hours": float(
                np.median(24.0 * math.log(2.0) / session[used])
            ),
            "long_run_level_share": float(net.level_scale().detach()),
            "silence_half_life_days": math.log(2.0) / float(net.leave_rate().detach()),
            "daily_cycle_amplitude": cycle.daily_amplitude,
            "daily_cycle_peak_hour": cycle.peak_hour,
            "cycle_note": _PRIVATE_CYCLE_NOTE,
            **{f"next_item_{name}": value for name, value in next_item.items()},
            "privacy": engine.guarantee().to_dict(),
        }
        searches = getattr(self._local[0], "searches", None)
        if cfg.use_searches and searches is not None and searches.t.size:
            self.metrics_["privacy"]["searches"] = _PRIVATE_SEARCH_NOTE
        # the fitted users' ids would say who was in the training data: a private model
        # keeps none (it has no per-user parameters; any user is scored from their events)
        self.catalogue_ = replace(self.catalogue_, user_ids=self.catalogue_.user_ids[:0])
        self._restrict_answers()

    def _user_loss(
        self, net, seq, chunks, offsets, device, amp, negatives, penalty, item_weight=None
    ):
        """``user_loss(u)``: user u's summed training loss over all of their chunks (one
        batch; `penalty` weighs the modulation penalty, `item_weight` the item choice,
        default the config's), or None when nothing of theirs is scored. DP-SGD clips its
        gradient; `per_user_nll` reports it."""
        cfg = self.config
        item_weight = cfg.item_weight if item_weight is None else item_weight
        reads, starts, ends = chunks
        user = np.searchsorted(offsets, reads, side="right") - 1  # chunks come by user
        first = np.searchsorted(user, np.arange(offsets.size))

        def user_loss(u: int) -> torch.Tensor | None:
            rows = np.arange(first[u], first[u + 1])
            if rows.size == 0:
                return None
            batch = _batch(seq, reads[rows], ends[rows], device, starts[rows])
            with autocast(device, amp):
                loss, n = _batch_loss(net, batch, item_weight, cfg.item_chunk, negatives, penalty)
            return loss if n else None

        return user_loss

    def per_user_nll(self, history: History, users: Sequence[str] | None = None) -> pd.DataFrame:
        """Each user's loss on their own events in `history`, as training scores it.

        The negative log-likelihood the network is trained on, summed over the user's
        intervals (each event to the next, the last one's to ``history.at``, survival
        included): time and category of the next event, the buy process, and the item
        choice weighted by `item_weight`; full softmax, no modulation penalty. Chunks of
        `max_len` events with `context_len` read before them, as in training.

        Why: a model that memorised its training users gives them a lower loss than
        users it never saw, which is what a loss-threshold membership-inference attack
        tests; DP-SGD (`dp_epsilon`) bounds how much lower it can be.

        Returns
        -------
        DataFrame
            user_id, nll (summed), event_nll (the same without the item choice: the
            time, category and buy terms), intervals (the user's events in `history`,
            and the search marks read among them) and nll_per_interval (NaN without
            events). Users default to those with
            events; users the fit never saw are scored alike. An interval whose next item
            the fit never saw has no item term, so compare users on `event_nll` when
            their items may be unknown to the model.
        """
        local, index, marked = self._prepare("per_user_nll", history, users, in_sample=True)
        events = self._warped(_read_with_searches(local.events))
        at = float(self.cycle.warp(to_days(history.at)))
        sub = _subset(events, index)
        seq = self._sequences(sub, at)
        chunks = _chunks(sub.offsets, self.config.max_len, False, self.config.context_len)
        device = self._device()
        losses = {}
        for name, weight in (("nll", None), ("event_nll", 0.0)):
            user_loss = self._user_loss(
                self.net_, seq, chunks, sub.offsets, device, None, None, 0.0, weight
            )
            summed = np.zeros(index.size)
            with torch.no_grad():
                for u in range(index.size):
                    loss = user_loss(u)
                    summed[u] = 0.0 if loss is None else float(loss)
            losses[name] = summed
        intervals = sub.lengths().astype(np.int64)
        per = np.where(intervals > 0, losses["nll"] / np.maximum(intervals, 1), np.nan)
        return self._frame(
            local, index, marked, **losses, intervals=intervals, nll_per_interval=per
        )

    def _finish_payload(self) -> dict:
        """What rank 0 learned after the point process (calibration, intervals, the
        next-item head, metrics), for the other ranks of a DDP run."""
        head = {name: value.cpu() for name, value in self.next_item_.state_dict().items()}
        return {"state": self._state(), "metrics": self.metrics_, "next_item": head}

    def _take_finish(self, payload: dict) -> None:
        """Become the model rank 0 finished (`_finish_payload`)."""
        self._set_state(payload["state"])
        self.metrics_ = payload["metrics"]
        cfg, n_items, n_cat = self.config, int(self.n_items_), int(self.n_categories_)
        head = NextItemNet(n_items, n_cat, cfg.hidden, cfg.item_dropout)
        head.load_state_dict(payload["next_item"])
        self.next_item_ = head.to(self._device()).eval()
        self._restrict_answers()

    def half_lives(self) -> pd.DataFrame:
        """Each category's interest and session half-life (days) with 95% intervals.

        Columns: category_id, interest_half_life_days, interest_low, interest_high,
        session_half_life_days, session_low, session_high. On a log without categories
        one row, the implicit ``(uncategorised)`` category: the per-user decay. Operational
        days (clock days on average over a week; see `cycle`).
        """
        if not self.is_fitted:
            raise NotFittedError("NeuralModel is not fitted: call fit(store, cutoff=...)")
        session, interest, _ = self._decay_rates()
        names = np.asarray(self.catalogue_.category_ids, dtype=object)
        rows = slice(0, names.size)
        intervals = np.asarray(self.half_life_intervals_)
        return pd.DataFrame(
            {
                "category_id": names,
                "interest_half_life_days": math.log(2.0) / interest[rows],
                "interest_low": intervals[1, rows, 0],
                "interest_high": intervals[1, rows, 1],
                "session_half_life_days": math.log(2.0) / session[rows],
                "session_low": intervals[0, rows, 0],
                "session_high": intervals[0, rows, 1],
            }
        )

    def _scale_deltas(self) -> tuple[torch.Tensor, torch.Tensor]:
        """δ^s and δ^i (C + 1,) of every mark, per operational day."""
        with torch.no_grad():
            return self.net_.session_delta(), self.net_.interest_delta()

    def _half_life_intervals(self, net: _Net, seq, chunks, device) -> np.ndarray:
        """95% intervals of each mark's session and interest half-life, (2, C + 1, 2) days.

        A Laplace approximation in each mark's two rate offsets: the curvature of the
        training NLL (Hessian-vector products, one per scale; the likelihood separates by
        mark except through the buy term, which is left out of the cross terms) plus the
        shrinkage prior's, with the rest of the network held at its fit, so the intervals
        are a little narrower than a full posterior's. Read off up to 12 batches, scaled
        to the whole training set.
        """
        cfg = self.config
        reads, starts, ends = chunks
        raw = net.log_delta_offset
        order = np.random.default_rng(cfg.seed).permutation(starts.size)[: 12 * cfg.batch_size]
        curvature = torch.zeros(2, *raw.shape, dtype=torch.float64)
        seen = 0
        for lo in range(0, order.size, cfg.batch_size):
            rows = order[lo : lo + cfg.batch_size]
            batch = _batch(seq, reads[rows], ends[rows], device, starts[rows])
            loss, n = _batch_loss(net, batch, 0.0, 1)
            if n == 0:
                continue
            seen += n
            (grad,) = torch.autograd.grad(loss, raw, create_graph=True)
            for scale in range(2):
                direction = torch.zeros_like(raw)
                direction[scale] = 1.0
                (product,) = torch.autograd.grad(grad, raw, direction, retain_graph=True)
                curvature[scale] += product.detach().double().cpu()
        total = max(int(seq.weight.sum()), 1)
        h = curvature.numpy() * (total / max(seen, 1))  # h[a, b, c] = ∂²/∂θ_bc ∂θ_ac
        h00, h11 = h[0, 0] + 2 * cfg.delta_prior, h[1, 1] + 2 * cfg.delta_prior
        h01 = 0.5 * (h[0, 1] + h[1, 0])
        det = h00 * h11 - h01**2
        ok = (det > 0) & (h00 > 0) & (h11 > 0)
        sd = np.where(ok, np.sqrt(np.abs(np.stack([h11, h00]) / np.where(ok, det, 1.0))), np.nan)
        out = np.full((2, raw.shape[1], 2), np.nan)
        centre = raw.detach().double().cpu()
        with torch.no_grad():
            for scale, rate in enumerate((net.session_delta, net.interest_delta)):
                for side, sign in enumerate((1.0, -1.0)):  # a faster rate: a shorter life
                    shifted = centre[scale] + sign * 1.96 * torch.as_tensor(sd[scale])
                    delta = rate(shifted.float().to(raw.device)).double().cpu().numpy()
                    out[scale, :, side] = math.log(2.0) / delta
        return out

    def _restrict_answers(self) -> None:
        """No purchases before the cut-off (ratings, page views): no purchase forecast,
        rather than the buy process's prior for everyone."""
        no_buys = self.metrics_.get("buy_events", 1) == 0
        self.answers = type(self).answers - {"p_buy"} if no_buys else type(self).answers

    def _next_item_settings(self, n_items: int) -> NextItemSettings:
        cfg = self.config
        return NextItemSettings(
            hidden=cfg.hidden,
            max_len=cfg.item_max_len,
            epochs=cfg.item_epochs,
            patience=cfg.item_patience,
            max_seconds=cfg.item_max_seconds,
            dropout=cfg.item_dropout,
            lr=cfg.item_lr,
            batch_size=cfg.item_batch_size,
            item_chunk=cfg.item_chunk,
            seed=cfg.seed,
            negatives=cfg.item_negatives if n_items > cfg.full_softmax_items else 0,
            autocast=(_private_amp if cfg.private else amp_dtype)(cfg.precision, self._device()),
        )

    def _progress_line(self, epoch, batch, batches, loss, seen, epoch_clock, clock) -> str:
        """``epoch 3/30 batch 12/40 · loss 9.812 · 2,431 events/s · ETA ≤ 95 s``.

        The ETA is the sooner of the epoch limit (at the pace so far) and the time budget;
        early stopping can end the run before either.
        """
        now = time.monotonic()
        rate = seen / max(now - epoch_clock, 1e-9)
        done = (epoch - 1 + batch / batches) / self.config.epochs
        elapsed = now - clock
        eta = min(elapsed * (1.0 - done) / max(done, 1e-9), self.config.max_train_seconds - elapsed)
        return (
            f"epoch {epoch}/{self.config.epochs} batch {batch}/{batches} · loss {loss:.3f}"
            f" · {rate:,.0f} events/s · ETA ≤ {max(eta, 0.0):.0f} s"
        )

    def _init_biases(self, net: _Net, events: EventArrays, t_end: float) -> None:
        """Start near a typical user's event rate, with one-hour bursts and a memory of 2
        days or the validation window, whichever is longer (a private fit: fixed values
        near the Taobao sample's, 10 events a day of which 2% buys)."""
        n_cat = net.n_categories
        share = self.level_share_
        if self.config.private:  # fixed, not read off the data: a typical shop's values
            rate, buys = _PRIVATE_RATE, _PRIVATE_BUY_SHARE
        else:
            active = events.lengths() > 0
            first = events.t[events.offsets[:-1][active]] if events.n_events else np.zeros(1)
            span = max(float(np.median(t_end - first)) if first.size else 1.0, 1e-3)
            rate = events.n_events / max(int(active.sum()), 1) / span
            buys = float(np.mean(events.behavior == _BUY)) if events.n_events else 0.0
        fast = max(math.log(2.0) * 24.0, 2.0 * net.split)  # 1-hour half-life
        slow = min(math.log(2.0) / max(2.0, float(self.validation_days_)), 0.5 * net.split)
        interest = (slow - DELTA_MIN) / (net.split - DELTA_MIN)
        with torch.no_grad():
            net.mix_bias[:] = torch.as_tensor(np.log(share[: n_cat + 1]), dtype=torch.float32)
            net.rates.bias[:] = torch.as_tensor(
                _inv_softplus([0.2 * rate, 0.3 * fast, 0.1 * fast * buys + 1e-6]),
                dtype=torch.float32,
            )
            net.level.fill_(float(_inv_softplus(0.3)))
            net.log_leave.fill_(math.log(math.log(2.0) / 3.0))  # 3 days of silence halve it
            net.log_delta[:] = torch.as_tensor(
                [math.log(fast - net.split), math.log(interest / (1 - interest)), math.log(fast)]
            )
            # ρ starts as the user's buy share, σ(log1p(buys) − log1p(events)) ≈ (1 + buys) /
            # (1 + events): the decay baseline's purchase model, for the network to refine
            net.conversion.weight[0, -2:] = torch.tensor([1.0, -1.0])
            net.conversion.bias[:] = 0.0
            # a purchase follows carts (and buys) within the hour; a search, as a view
            net.log_weight[2, :_N_BEH] = torch.tensor([-2.0, 0.0, -1.0, 0.0])
            net.log_weight[2, _N_BEH:] = -2.0
            net.scale_bias[0] = math.log(0.5 * fast)  # half the events are offspring
            net.scale_bias[1] = math.log(0.1 * slow)
            net.buy_scale.bias[:] = math.log(0.5 * fast * buys + 1e-6)

    def _sequences(
        self, events: EventArrays, t_end: float, t_start: float | None = None
    ) -> _Sequences:
        return _sequences(
            events,
            int(self.n_items_),
            int(self.n_categories_),
            t_end,
            t_start,
            share=self.level_share_,
            prior_days=self.config.level_prior_days,
        )

    def _validation_nll(
        self,
        net: _Net,
        seq: _Sequences,
        starts: np.ndarray,
        ends: np.ndarray,
        device: torch.device,
        group: distributed.Group = distributed.SINGLE,
    ) -> float:
        net.eval()
        total, count = 0.0, 0
        part = group.shard_contiguous(ends - starts)
        starts, ends = starts[part], ends[part]
        with torch.no_grad():
            for lo in range(0, starts.size, self.config.batch_size):
                batch = _batch(
                    seq,
                    starts[lo : lo + self.config.batch_size],
                    ends[lo : lo + self.config.batch_size],
                    device,
                )
                loss, n = _batch_loss(net, batch, self.config.item_weight, self.config.item_chunk)
                total, count = total + float(loss.detach()), count + n
        if group.world > 1:
            total, count = group.sum([total, count])
        return total / max(count, 1)

    def _window(self, train: EventArrays, events: EventArrays, t_train: float, t_end: float):
        """The validation window's outcomes: engaged again per touched pair, bought and
        came back per user."""
        users = np.flatnonzero(train.lengths() > 0)
        idx, q = user_event_ranges(train.offsets, users)
        cat = train.category_idx[idx].astype(np.int64)
        known = (cat >= 0) & (cat < int(self.n_categories_))
        keys = np.unique(q[known] * _KEY + cat[known])  # the order `_user_state` gives pairs
        window = events.t >= t_train
        later = events.user_idx[window].astype(np.int64) * _KEY + events.category_idx[window]
        buyers = events.user_idx[window & (events.behavior == _BUY)]
        return _Window(
            train=train,
            users=users,
            t_train=t_train,
            horizon=t_end - t_train,
            engaged=np.isin(users[keys // _KEY].astype(np.int64) * _KEY + keys % _KEY, later),
            bought=np.isin(users, buyers),
            returned=np.isin(users, events.user_idx[window]),
            first_return=self._first_return(events, users, t_train),
        )

    @staticmethod
    def _first_return(events: EventArrays, users: np.ndarray, t_train: float) -> np.ndarray:
        """Days from `t_train` to each user's first event at or after it (inf: none)."""
        after = events.t >= t_train
        first = np.full(events.n_users, np.inf)
        np.minimum.at(first, events.user_idx[after], events.t[after] - t_train)
        return first[users]

    def _window_scores(
        self, window: _Window, group: distributed.Group = distributed.SINGLE
    ) -> tuple[np.ndarray, ...]:
        """Over the window from its start: p_engage per touched pair, p_buy and the
        expected activity per user. Each rank scores a block of the users; the blocks,
        gathered in rank order, are in the order of the whole."""
        users = window.users[group.shard_contiguous(window.train.lengths()[window.users])]
        state = self._user_state(window.train, users, window.t_train)
        pairs = self._pair_params(state)
        p_engage = -np.expm1(-self._pair_increment(state, pairs, window.horizon))
        activity = self._activity(state, window.horizon)
        p_buy = self._buy_probability(state, window.horizon, activity)
        return group.gather((p_engage, p_buy, activity))

    def _window_loss(self, window: _Window, group: distributed.Group = distributed.SINGLE) -> float:
        """1 − mean ROC-AUC of the window's return, purchase (per user) and engagement (per
        touched pair).

        These are the questions the model answers at a cut-off, on a horizon of days, and
        users act on their ranking (the calibration σ(a·I + b) fixes the scale after). The
        event likelihood is dominated by minute-scale gaps within sessions: on Taobao it
        kept improving for epochs while the day-scale ranking got worse. A window with one
        outcome only is left out; with none left, the return log-loss decides.
        """
        p_engage, p_buy, activity = self._window_scores(window, group)
        p_return = -np.expm1(-activity)
        scores = []
        for label, p in (
            (window.returned, p_return),
            (window.engaged, p_engage),
            (window.bought, p_buy),
        ):
            if label.size and 0 < label.sum() < label.size:
                scores.append(1.0 - roc_auc(label, p))
        if not scores:
            return log_loss(window.returned, np.clip(p_return, 0.0, 1.0))
        return float(np.mean(scores))

    def _calibrate(self, window: _Window) -> dict[str, float]:
        """Fit ``P = σ(a·I + b)`` on the validation window's (user, category) outcomes, and
        ``P(return) = 1 − exp(−e^b A^a)`` on its users' returns (`_calibrate_return`)."""
        from sklearn.linear_model import LogisticRegression

        state = self._user_state(window.train, window.users, window.t_train)
        out = self._calibrate_return(state, window)
        score = self._interest_score(state, window.horizon)
        label = window.engaged
        if label.all() or not label.any():
            return {**out, "activation_calibrated": 0.0}
        fit = LogisticRegression(C=1e4).fit(score[:, None], label)
        self.activation_ = np.array([float(fit.coef_[0, 0]), float(fit.intercept_[0])])
        return {
            **out,
            "activation_slope": float(self.activation_[0]),
            "activation_intercept": float(self.activation_[1]),
        }

    def _calibrate_return(self, state: _State, window: _Window) -> dict[str, float]:
        """Fit ``P(return within H) = 1 − exp(−e^{b + c log(H / V)} A(H)^a)`` (a
        complementary log-log regression) by maximum likelihood on who came back within
        H of the window's start, for H from an hour to the window V, all at once.

        The point process's own answer is a = 1, b = c = 0; the fit corrects its scale,
        its spread over users and its growth with the horizon. (Fitted at V alone, a = 0.25
        lifted the short horizons: the forecast of the first hours after a cut at midnight
        in China was 0.47 above the observed returns; from an hour on, 0.08. Keeping the
        process's own course ``A(H)/A(V)`` within the window gave 0.077 there but ranked
        1-day returners worse on a long log.) With a ≥ 0.05 and c ≥ 0 the answer stays
        monotone in A and in H.
        """
        from scipy.optimize import minimize

        span = window.horizon
        horizons = np.unique(np.geomspace(min(1.0 / 24.0, span / 24.0), span, 8))
        y = np.concatenate([window.first_return < h for h in horizons]).astype(np.float64)
        if y.size == 0 or y.all() or not y.any():
            return {"return_calibrated": 0.0}
        activity = np.concatenate([self._activity(state, h) for h in horizons])
        x = np.log(np.maximum(activity, 1e-12))
        z = np.repeat(np.log(horizons / span), window.users.size)

        def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
            eta = np.clip(theta[1] + theta[0] * x + theta[2] * z, -30.0, 30.0)
            rate = np.exp(eta)  # −log(1 − P)
            p = np.maximum(-np.expm1(-rate), 1e-300)
            value = -np.sum(y * np.log(p) - (1.0 - y) * rate)
            grad_eta = -(y * rate * np.exp(-rate) / p - (1.0 - y) * rate)  # d/dη
            return float(value), np.array([grad_eta @ x, grad_eta.sum(), grad_eta @ z])

        bounds = [(0.05, 20.0), (-30.0, 30.0), (0.0, 5.0)]
        fit = minimize(nll, np.array([1.0, 0.0, 0.0]), jac=True, bounds=bounds)
        self.return_calibration_ = np.array([*fit.x, span], dtype=np.float64)
        return {
            "return_calibration_slope": float(fit.x[0]),
            "return_calibration_intercept": float(fit.x[1]),
            "return_calibration_horizon_slope": float(fit.x[2]),
        }

    # -- checkpoints -------------------------------------------------------------------
    def _fingerprint(self, events: EventArrays) -> dict:
        return {
            "cutoff": self.cutoff_.isoformat(),
            "events": int(events.n_events),
            "t_sum": float(events.t.sum()),
            "config": {k: v for k, v in self._config_dict().items() if k not in _RESUMABLE},
        }

    def _config_dict(self) -> dict:
        return {name: getattr(self.config, name) for name in self.config.__dataclass_fields__}

    def _checkpoint(self, path: Path, run: _Run, net, optimiser, generator, events) -> None:
        """Write the run's state atomically: a kill leaves the previous checkpoint intact."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(
            {
                "fingerprint": self._fingerprint(events),
                "run": run.as_dict(),
                "net": net.state_dict(),
                "optimiser": optimiser.state_dict(),
                "generator": generator.get_state(),
            },
            tmp,
        )
        tmp.replace(path)

    def _restore(self, path, net, optimiser, generator, events) -> _Run:
        if path is None or not Path(path).exists():
            raise ConfigError(
                f"no checkpoint at {path}: train without --resume first (it writes one)"
            )
        saved = torch.load(path, map_location=self._device(), weights_only=False)
        if saved["fingerprint"] != self._fingerprint(events):
            raise ConfigError(
                f"the checkpoint at {path} was written for other data, cut-off or settings;"
                " train without --resume to start over"
            )
        net.load_state_dict(saved["net"])
        optimiser.load_state_dict(saved["optimiser"])
        generator.set_state(saved["generator"])
        return _Run(**saved["run"])

    # -- persistence -------------------------------------------------------------------
    def _save_extra(self, directory: Path) -> None:
        """The networks, and the query map beside them (none: no file, nor a stale one)."""
        torch.save(self.net_.state_dict(), directory / "network.pt")
        torch.save(self.next_item_.state_dict(), directory / "next_item.pt")
        save_model_map(getattr(self, "query_map_", None), directory)

    def _load_extra(self, directory: Path) -> None:
        """A folder saved before searches (or without any) has four behaviour rows and no
        map: it answers as it did, searches unused."""
        state = torch.load(directory / "network.pt", map_location=self._device(), weights_only=True)
        behaviours = int(state["behavior.weight"].shape[0])
        net = _Net(int(self.n_items_), int(self.n_categories_), self.config, behaviours)
        net.load_state_dict(state)
        net.to(self._device())
        net.eval()
        self.net_ = net
        self._state_cache = self._searched = None
        self.query_map_ = load_model_map(directory) if behaviours > _SEARCH else None
        cfg = self.config
        head = NextItemNet(
            int(self.n_items_), int(self.n_categories_), cfg.hidden, cfg.item_dropout
        )
        path = directory / "next_item.pt"
        head.load_state_dict(torch.load(path, map_location=self._device(), weights_only=True))
        self.next_item_ = head.to(self._device()).eval()
        self._restrict_answers()

    # -- compressed scoring ------------------------------------------------------------
    def compress(
        self, runtime: str, directory: str | Path | None = None, threads: int | None = None
    ) -> NeuralModel:
        """Answer the queries with `runtime`: ``"torch"`` (float32, the default),
        ``"int8"`` or ``"onnx"`` (see `ebbtide.models.neural_compressed`); returns self.

        `directory` is the model's folder, where ``"onnx"`` keeps ``model.onnx``;
        `threads` the CPU threads of a compressed runtime (default: all it may use).
        """
        from ebbtide.models.neural_compressed import attach_runtime

        if not self.is_fitted:
            raise NotFittedError("NeuralModel is not fitted: fit or load it, then compress")
        self.runner_ = attach_runtime(self, runtime, directory=directory, threads=threads)
        self._state_cache = None
        return self

    @property
    def runtime(self) -> str:
        """The runtime the queries use (`compress`)."""
        runner = getattr(self, "runner_", None)
        return "torch" if runner is None else runner.runtime

    def _forget_users(self, codes: np.ndarray) -> None:
        """No per-user parameters (the network is shared); only the cached states go."""
        self._state_cache = None

    # -- shared query machinery --------------------------------------------------------
    def _query_state(self, events: EventArrays, users: np.ndarray, at: float) -> _State:
        """`_user_state` for the queries: scoring asks up to five questions of the same
        users at the same instant, and each would run the GRU over every history again."""
        key = (id(events), at, users.tobytes())
        cached = getattr(self, "_state_cache", None)
        if cached is None or cached[0] != key:
            read = self._warped(_read_with_searches(events))
            state = self._user_state(read, users, float(self.cycle.warp(at)))
            cached = (key, state)
            self._state_cache = cached
        return cached[1]

    def _user_state(
        self, events: EventArrays, users: np.ndarray, at: float, chunk: int = 64
    ) -> _State:
        """The state of `users` at `at` from their last `max_len` events (see `_State`)."""
        net, device, cfg = self.net_, self._device(), self.config
        n_cat = int(self.n_categories_)
        sub = _subset(events, users)
        sub_offsets, q = sub.offsets, sub.user_idx
        seq = self._sequences(sub, at)
        has = sub.lengths() > 0
        ends = sub_offsets[1:]
        starts = np.maximum(sub_offsets[:-1], ends - cfg.max_len - cfg.context_len)
        h_out = np.zeros((users.size, cfg.hidden), dtype=np.float32)
        buy_burst = np.zeros(users.size)
        conversion = np.zeros(users.size)
        # excitation of each read event at the user's last event; summed per category below
        long_j, fast_j = np.zeros(sub.n_events), np.zeros(sub.n_events)
        live_all = np.flatnonzero(has)
        runner = getattr(self, "runner_", None)  # a compressed runtime (`compress`)
        if runner is not None and live_all.size:
            terms = runner.last_event_terms(seq, starts[live_all], ends[live_all])
            h_out[live_all], buy_burst[live_all] = terms.h, terms.buy
            conversion[live_all] = terms.conversion
            long_j[terms.event], fast_j[terms.event] = terms.long, terms.fast
            live_all = live_all[:0]
        with torch.no_grad():
            for lo in range(0, live_all.size, chunk):
                live = live_all[lo : lo + chunk]
                batch = _batch(seq, starts[live], ends[live], device)
                h = net.encode(batch)
                ex = net.excitation(h, batch)
                pick = torch.arange(live.size, device=device)
                last = batch["last"]
                h_out[live] = h[pick, last].cpu().numpy()
                buy_burst[live] = ex["buy"][pick, last].double().cpu().numpy()
                share = net.conversion_share(h, batch)[pick, last]
                conversion[live] = share.double().cpu().numpy()
                valid = batch["valid"].cpu().numpy()
                where = (starts[live][:, None] + np.arange(valid.shape[1]))[valid]
                long_j[where] = ex["long"][pick, last].double().cpu().numpy()[valid]
                fast_j[where] = ex["fast"][pick, last].double().cpu().numpy()[valid]
            rates = net.background(torch.as_tensor(h_out, device=device)).double().cpu().numpy()
        slot = _slots(sub, n_cat)  # C: no / unknown category
        keys, inverse = np.unique(q.astype(np.int64) * _KEY + slot, return_inverse=True)
        t_last = np.where(has, sub.t[np.maximum(ends - 1, 0)] if sub.t.size else 0.0, at)
        t_first = np.where(has, sub.t[np.minimum(sub_offsets[:-1], max(sub.n_events - 1, 0))]
                           if sub.t.size else 0.0, at)  # fmt: skip
        return _State(
            h=h_out,
            tau=np.maximum(at - t_last, 0.0),
            span=np.maximum(at - t_first, 0.0),
            rates=rates,
            buy_burst=rates[:, 2] + buy_burst,
            conversion=conversion,
            pair_user=keys // _KEY,
            pair_cat=keys % _KEY,
            pair_long=np.bincount(inverse, long_j, minlength=keys.size),
            pair_fast=np.bincount(inverse, fast_j, minlength=keys.size),
            pair_count=np.bincount(inverse, sub.behavior != _SEARCH, minlength=keys.size),
            read_long=long_j,
            read_fast=fast_j,
        )

    def _decay_rates(self) -> tuple[np.ndarray, np.ndarray, float]:
        """δ^s and δ^i (C + 1,) of every mark and the buy process's δ_b, per day."""
        session, interest = (d.double().cpu().numpy() for d in self._scale_deltas())
        with torch.no_grad():
            return session, interest, float(self.net_.buy_delta())

    def _mix(self, h: np.ndarray) -> np.ndarray:
        """π (n, C + 1) of the given states."""
        with torch.no_grad():
            h_t = torch.as_tensor(h, device=self._device())
            return self.net_.log_mix(h_t).double().exp().cpu().numpy()

    def _beta(self) -> float:
        with torch.no_grad():
            return float(self.net_.level_scale())

    def _dense(self, state: _State, lo: int, hi: int):
        """Level, μ and α (hi − lo, C + 1) of users lo..hi: background plus pair sums."""
        pi = self._mix(state.h[lo:hi])
        a, b = np.searchsorted(state.pair_user, [lo, hi])
        rows, cols = state.pair_user[a:b] - lo, state.pair_cat[a:b]
        counts = np.zeros_like(pi)
        counts[rows, cols] = state.pair_count[a:b]
        span = state.span[lo:hi, None]
        level = self._beta() * long_run_levels(
            counts, span, self.level_share_, self.config.level_prior_days
        )
        mu = state.rates[lo:hi, :1] * pi
        alpha = state.rates[lo:hi, 1:2] * pi
        mu[rows, cols] += state.pair_long[a:b]
        alpha[rows, cols] += state.pair_fast[a:b]
        return level, mu, alpha

    def _pair_params(self, state: _State) -> tuple[np.ndarray, ...]:
        """Level, μ, α, δ^s and δ^i of every touched (user, mark) pair of `state`."""
        pi = np.empty(state.pair_user.size)
        for lo in range(0, state.h.shape[0], 256):
            a, b = np.searchsorted(state.pair_user, [lo, lo + 256])
            mix = self._mix(state.h[lo : lo + 256])
            pi[a:b] = mix[state.pair_user[a:b] - lo, state.pair_cat[a:b]]
        u = state.pair_user
        level = self._beta() * long_run_levels(
            state.pair_count,
            state.span[u],
            self.level_share_[state.pair_cat],
            self.config.level_prior_days,
        )
        mu = state.rates[u, 0] * pi + state.pair_long
        alpha = state.rates[u, 1] * pi + state.pair_fast
        session, interest, _ = self._decay_rates()
        return level, mu, alpha, session[state.pair_cat], interest[state.pair_cat]

    def _leave(self) -> float:
        with torch.no_grad():
            return float(self.net_.leave_rate())

    def _increment(self, level, mu, alpha, session, interest, tau, horizon):
        """``Λ(τ + H) − Λ(τ)`` elementwise (numpy), τ broadcast over the last axis:
        ``ℓ e^{−θτ} (1 − e^{−θH}) / θ + μ e^{−δ^i τ} (1 − e^{−δ^i H}) / δ^i
        + α e^{−δ^s τ} (1 − e^{−δ^s H}) / δ^s``."""
        leave = self._leave()
        return (
            -level * np.exp(-leave * tau) * np.expm1(-leave * horizon) / leave
            - mu * np.exp(-interest * tau) * np.expm1(-interest * horizon) / interest
            - alpha * np.exp(-session * tau) * np.expm1(-session * horizon) / session
        )

    def _pair_increment(self, state: _State, pairs: tuple, horizon: float) -> np.ndarray:
        """Expected events per (user, category) pair over `horizon`, categories only (the
        `_Window` order): the no-category mark is left out."""
        real = state.pair_cat < int(self.n_categories_)
        params = (x[real] for x in pairs)
        return self._increment(*params, state.tau[state.pair_user[real]], horizon)

    def _interest_score(self, state: _State, horizon: float) -> np.ndarray:
        """I = log Λ_c over `horizon` from the state's instant, per touched category."""
        expected = self._pair_increment(state, self._pair_params(state), horizon)
        return np.log(np.maximum(expected, 1e-300))

    # -- queries -----------------------------------------------------------------------
    def _interest(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> dict[str, np.ndarray]:
        """Per (user, touched category): the level now and its three parts, the two
        half-lives, and p_engage = 1 − exp(−(Λ_c(τ+H) − Λ_c(τ))).

        ``baseline`` is the long-run level (it fades only in a long silence, at θ),
        ``excitation`` the interest
        part (fades with the interest half-life), ``session`` the session part; ``usual``
        the user's average rate in the category over the time they have been seen (the
        level a user at their usual pace has; ``baseline`` is a share β of it). Also the
        interest score I (log expected events in the category over the calibration
        window, `validation_days`) and the activation probability σ(a·I + b) calibrated on
        it. Categories first seen after the fit are left out. Rates are per operational
        day (`ebbtide.features.cycle`): per clock day on average over a week.
        """
        state = self._query_state(events, users, at)
        real = state.pair_cat < int(self.n_categories_)
        level, mu, alpha, session, interest = (x[real] for x in self._pair_params(state))
        pq, pc = state.pair_user[real], state.pair_cat[real]
        tau = state.tau[pq]
        params = (level, mu, alpha, session, interest, tau)
        span = self.cycle.span(at, horizon)
        p_engage = -np.expm1(-self._increment(*params, span))
        window = float(self.validation_days_) or 1.0
        score = np.log(np.maximum(self._increment(*params, window), 1e-300))
        slope, intercept = self.activation_
        lasting = mu * np.exp(-interest * tau)
        burst = alpha * np.exp(-session * tau)
        usual = level / self._beta()
        level = level * np.exp(-self._leave() * tau)
        order = np.lexsort((pc, -p_engage, pq))
        return {
            "user_idx": users[pq[order]],
            "category_idx": pc[order],
            "p_engage": p_engage[order],
            "level": (level + lasting + burst)[order],
            "baseline": level[order],
            "usual": usual[order],
            "excitation": lasting[order],
            "session": burst[order],
            "half_life_days": (math.log(2.0) / interest)[order],
            "session_half_life_days": (math.log(2.0) / session)[order],
            "interest_score": score[order],
            "p_activate": (1.0 / (1.0 + np.exp(-(slope * score + intercept))))[order],
        }

    def _p_return(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        """``1 − exp(−e^{b + c log(H / V)} A^a)`` of the expected activity
        ``A = Σ_c (Λ_c(τ+H) − Λ_c(τ))`` over all marks (a, b, c calibrated on the
        validation window of V days; 1, 0, 0 without one). H is operational: an hour
        at night is shorter than one in the evening."""
        state = self._query_state(events, users, at)
        span = self.cycle.span(at, horizon)
        slope, intercept, horizon_slope, window = self.return_calibration_
        eta = intercept + horizon_slope * math.log(max(span, 1e-12) / window)
        activity = np.maximum(self._activity(state, span), 1e-300)
        return -np.expm1(-np.exp(np.clip(eta + slope * np.log(activity), -700.0, 30.0)))

    def _p_buy(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        """``1 − exp(−(ρ·Σ_c ΔΛ_c + ΔΛ_b))``: buys within the activity, plus their own process."""
        state = self._query_state(events, users, at)
        return self._buy_probability(state, self.cycle.span(at, horizon))

    def _activity(self, state: _State, horizon: float) -> np.ndarray:
        """Expected events ``Σ_c (Λ_c(τ+H) − Λ_c(τ))`` per user over all marks (H
        operational)."""
        session, interest, _ = self._decay_rates()
        total = np.empty(state.tau.size)
        for lo in range(0, state.tau.size, 256):
            hi = min(lo + 256, state.tau.size)
            level, mu, alpha = self._dense(state, lo, hi)
            tau = state.tau[lo:hi, None]
            inc = self._increment(level, mu, alpha, session, interest, tau, horizon)
            total[lo:hi] = inc.sum(1)
        return total

    def _buy_probability(
        self, state: _State, horizon: float, activity: np.ndarray | None = None
    ) -> np.ndarray:
        if activity is None:
            activity = self._activity(state, horizon)
        delta_b = self._decay_rates()[2]
        own = state.buy_burst * np.exp(-delta_b * state.tau) * -np.expm1(-delta_b * horizon)
        return -np.expm1(-(state.conversion * activity + own / delta_b))

    def _expected_return_days(
        self, events: EventArrays, users: np.ndarray, at: float
    ) -> np.ndarray:
        """``∫_0^365 exp(−Σ_c (Λ_c(τ+s) − Λ_c(τ))) ds`` over clock days s, the compensator
        read at the operational span of each s: trapezoid rule on a log grid."""
        state = self._query_state(events, users, at)
        session, interest, _ = self._decay_rates()
        grid = self.cycle.span(at, _GRID)
        out = np.empty(users.size)
        for lo in range(0, users.size, 64):
            hi = min(lo + 64, users.size)
            level, mu, alpha = self._dense(state, lo, hi)
            tau = state.tau[lo:hi, None]
            leave = self._leave()
            lasting = level.sum(1)[:, None] * np.exp(-leave * tau)
            cum = lasting * -np.expm1(-leave * grid) / leave
            for rate, size in ((interest, mu), (session, alpha)):
                now = size * np.exp(-rate * tau)
                for s in range(0, rate.size, 256):
                    d = rate[s : s + 256]
                    jump = -np.expm1(-d[:, None] * grid) / d[:, None]
                    cum = cum + now[:, s : s + 256] @ jump
            out[lo:hi] = np.trapezoid(np.exp(-cum), _GRID, axis=1)
        return out

    def _recommend(
        self, events: EventArrays, users: np.ndarray, at: float, k: int, exclude_bought: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """The next-item head's probabilities (`ebbtide.models.next_item`); items bought
        before `at` are left out when asked."""
        exclude = exclusion_pairs(events, users, _BUY) if exclude_bought else None
        settings = self._next_item_settings(int(self.n_items_))
        return score_next_items(self.next_item_, events, users, at, settings, k, exclude)
