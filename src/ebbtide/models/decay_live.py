"""Live state of a fitted `decay` model: each user's interest, updated event by event.

Why: the live service answers one user at a time while events arrive; reading the user's
history and rerunning the batch queries would cost a database read and milliseconds. The
exponential kernel makes the excitation a recursion, so a (user, category) pair needs
three numbers (the time of its last occurrence, the decayed weight of its earlier
occurrences at that time, the weight of the last one) and a user the time of the last
event. An answer builds the pairs the batch path builds from events (the dict of
`DecayModel._compute_pairs`) from that state and runs the same `DecayModel` functions, so
it equals the batch answer on the same events at the same instant.

Late arrivals: an event earlier than its pair's last occurrence adds its weight decayed to
that occurrence. The one approximation: if the pair already had an occurrence at exactly
that earlier instant (other than the last), the batch path merges the two into one
occurrence (the stronger weight), the live state counts both.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ebbtide.errors import ConfigError, NotFittedError
from ebbtide.features.history import UNCATEGORISED
from ebbtide.models.decay import _KEY, DecayModel

__all__ = ["CategoryInterest", "LiveAnswer", "LiveDecay"]

_STATE_VERSION = 1
_INTEREST_COLUMNS = ("p_engage", "level", "baseline", "excitation", "half_life_days")


@dataclass(frozen=True, slots=True)
class CategoryInterest:
    """One category of a user's interest, as a row of `DecayModel.interest`."""

    category_id: str
    p_engage: float
    level: float
    baseline: float
    excitation: float
    half_life_days: float


@dataclass(frozen=True, slots=True)
class LiveAnswer:
    """Everything `decay` says about one user at one instant.

    Attributes
    ----------
    p_return, p_buy, expected_return_days : float
        As the batch queries; `p_buy` is None when the model does not answer it (no
        purchases before its cut-off).
    categories : tuple of CategoryInterest
        The user's touched categories, most likely to be engaged first.
    interest_vs_usual : float
        ``Σ level / Σ baseline``; NaN when ``Σ baseline ≤ 0``.
    interest_change : float
        ``Σ (baseline + excitation · 2^(−H/h)) / Σ level − 1`` over the horizon if
        nothing new happens (`ebbtide.activate.segments.interest_summary`); 0 when
        ``Σ level`` is 0.
    """

    p_return: float
    p_buy: float | None
    expected_return_days: float
    categories: tuple[CategoryInterest, ...]
    interest_vs_usual: float
    interest_change: float


class _Pair:
    """Recursion state of one (user, category) pair, with its fitted parameters."""

    __slots__ = ("alpha", "code", "delta", "mu", "s", "t", "w")

    def __init__(
        self, t: float, s: float, w: float, code: int, delta: float, alpha: float, mu: float
    ) -> None:
        self.t, self.s, self.w = t, s, w  # last occurrence, earlier weight there, its weight
        self.code, self.delta, self.alpha, self.mu = code, delta, alpha, mu


class _User:
    """A user's last event time, fitted rates (or the global ones) and pairs."""

    __slots__ = ("code", "last", "nu", "pairs", "rho")

    def __init__(self, last: float, code: int, nu: float, rho: float) -> None:
        self.last = last
        self.code = code  # the model's user code, -1 for a user new since the fit
        self.nu, self.rho = nu, rho
        self.pairs: dict[str, _Pair] = {}


class LiveDecay:
    """Per-user live interest of a fitted DecayModel.

    `add` is O(1) per event; `answer` costs one user's categories, not their history.
    Answers assume every event added is before their instant `at`; a later one counts
    as if at `at` (the batch path's ``max(at − t, 0)``).

    Parameters
    ----------
    model : DecayModel
        Fitted; its parameters are looked up through its catalogue (external ids), and
        users, categories and pairs new since the fit get the batch path's fallbacks.
    """

    def __init__(self, model: DecayModel) -> None:
        if not isinstance(model, DecayModel):
            raise ConfigError(f"LiveDecay needs a DecayModel, not {type(model).__name__}")
        if not model.is_fitted:
            raise NotFittedError("LiveDecay needs a fitted DecayModel: call fit(store, cutoff=...)")
        self.model = model
        catalogue = model.catalogue_
        self._user_code = {u: i for i, u in enumerate(catalogue.user_ids)}
        self._cat_code = {c: i for i, c in enumerate(catalogue.category_ids)}
        self._weights = tuple(float(w) for w in model.config.behavior_weights)
        self._delta = np.asarray(model.delta_, dtype=np.float64)
        self._alpha = np.asarray(model.alpha_, dtype=np.float64)
        self._delta_global = float(model.delta_global_)
        self._alpha_global = float(model.alpha_global_)
        self._pair_key = np.asarray(model.pair_key_, dtype=np.int64)
        self._pair_mu = np.asarray(model.pair_mu_, dtype=np.float64)
        self._default_mu = float(model.default_mu_)
        self._nu = np.asarray(model.nu_, dtype=np.float64)
        self._nu_global = float(model.nu_global_)
        self._rho = np.asarray(model.rho_, dtype=np.float64)
        self._rho_global = float(model.rho_global_)
        self._answers_buy = "p_buy" in model.answers
        self._categories: dict[str, tuple[int, float, float]] = {}
        self._users: dict[str, _User] = {}
        # The decayed sums depend on δ and the weights: state is only valid for them.
        digest = hashlib.blake2b(digest_size=8)
        digest.update(model.cutoff_.isoformat().encode())
        digest.update(self._delta.tobytes())
        digest.update(np.float64(self._delta_global).tobytes())
        digest.update(np.asarray(self._weights).tobytes())
        self.fingerprint = digest.hexdigest()

    # -- users -------------------------------------------------------------------------
    def __contains__(self, user_id: object) -> bool:
        return user_id in self._users

    def __len__(self) -> int:
        return len(self._users)

    def user_ids(self) -> list[str]:
        """Users with live state, in the order they arrived."""
        return list(self._users)

    def last_time(self, user_id: str) -> float:
        """Time of the user's last event (days since the epoch); KeyError if unknown."""
        return self._users[user_id].last

    def forget(self, user_id: str) -> bool:
        """Drop the user's state; False when there was none."""
        return self._users.pop(user_id, None) is not None

    def forget_fitted(self, user_id: str) -> None:
        """Drop the user's fitted code and rates, after `Model.forget` reset them in the
        model: if the user comes back, they start as a user unseen at fit."""
        self._user_code.pop(user_id, None)
        model = self.model
        self._pair_key = np.asarray(model.pair_key_, dtype=np.int64)
        self._pair_mu = np.asarray(model.pair_mu_, dtype=np.float64)
        self._nu = np.asarray(model.nu_, dtype=np.float64)
        self._rho = np.asarray(model.rho_, dtype=np.float64)

    # -- events ------------------------------------------------------------------------
    def add(self, user_id: str, category_id: str | None, behavior: int, t: float) -> None:
        """One event: `t` in days since the Unix epoch (`to_days` units), `behavior` a
        `Behavior` code 0..3; no category is `UNCATEGORISED`, as in the batch path."""
        if not 0 <= behavior < len(self._weights):
            raise ConfigError(f"behavior={behavior!r}: a Behavior code 0..3")
        if not math.isfinite(t):
            raise ConfigError(f"t={t!r}: event time must be finite (days since the epoch)")
        w = self._weights[behavior]
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = self._user(user_id, t)
        elif t > user.last:
            user.last = t
        category = UNCATEGORISED if category_id is None else category_id
        pair = user.pairs.get(category)
        if pair is None:
            user.pairs[category] = self._pair(user.code, category, t, 0.0, w)
        elif t > pair.t:
            pair.s = (pair.s + pair.w) * math.exp(-pair.delta * (t - pair.t))
            pair.t, pair.w = t, w
        elif t == pair.t:  # the same instant: one occurrence, the strongest weight
            pair.w = max(pair.w, w)
        else:  # late arrival (see the module docstring)
            pair.s += w * math.exp(-pair.delta * (pair.t - t))

    def _user(self, user_id: str, last: float) -> _User:
        """A new user with the batch path's ν and ρ (`DecayModel._user_param`)."""
        code = self._user_code.get(user_id, -1)
        nu = float(self._nu[code]) if 0 <= code < self._nu.size else self._nu_global
        rho = float(self._rho[code]) if 0 <= code < self._rho.size else self._rho_global
        return _User(last, code, nu, rho)

    def _pair(self, user_code: int, category: str, t: float, s: float, w: float) -> _Pair:
        """A new pair with the batch path's parameters (`DecayModel._compute_pairs`)."""
        params = self._categories.get(category)
        if params is None:
            code = self._cat_code.get(category, -1)
            known = 0 <= code < self._delta.size  # delta_ and alpha_ share their size
            delta = float(self._delta[code]) if known else self._delta_global
            alpha = float(self._alpha[code]) if known else self._alpha_global
            params = self._categories[category] = (code, delta, alpha)
        code, delta, alpha = params
        mu = self._default_mu
        if user_code >= 0 and code >= 0 and self._pair_key.size:
            key = user_code * int(_KEY) + code
            where = min(int(self._pair_key.searchsorted(key)), self._pair_key.size - 1)
            if self._pair_key.item(where) == key:
                mu = self._pair_mu.item(where)
        return _Pair(t, s, w, code, delta, alpha, mu)

    # -- answers -----------------------------------------------------------------------
    def answer(self, user_id: str, at: float, horizon: float) -> LiveAnswer:
        """The user's return, purchase, return time and interest at `at` over `horizon`
        (both in days), as the batch queries answer them; KeyError for an unknown user."""
        user = self._users[user_id]
        if not horizon > 0:
            raise ConfigError(f"horizon={horizon!r} days must be positive")
        model = self.model
        ids = list(user.pairs)
        pairs = list(user.pairs.values())
        # α Σ_j w_j e^{−δ(t_last − t_j)} at each pair's last occurrence, then decayed.
        state = [(pr.t, pr.alpha * (pr.s + pr.w), pr.delta, pr.mu) for pr in pairs]
        t, alpha_carried, delta, mu = np.array(state).reshape(-1, 4).T.copy()
        code = self._order_codes(ids, pairs)
        q = np.zeros(len(pairs), dtype=np.int64)
        p_now = {
            "q": q,
            "category": code,
            "mu": mu,
            "excitation": alpha_carried * np.exp(-delta * np.maximum(at - t, 0.0)),
            "delta": delta,
        }
        p_last = {**p_now, "excitation": alpha_carried * np.exp(-delta * (user.last - t))}
        nu = np.array([user.nu])
        alive = model._alive(p_last, nu, np.array([max(at - user.last, 0.0)]))
        span = np.array([float(horizon)])
        curve = model._cumulative(p_now, nu, span)
        p_return = alive * model._p_event(curve, span, np.ones(1))
        p_buy = None
        if self._answers_buy:
            rho = np.array([user.rho])
            p_buy = float((alive * model._p_event(curve, span, rho))[0])
        days = model._return_days(p_now, nu, alive)
        rows = model._interest_of(p_now, q[:1], horizon)
        by_code = dict(zip(code.tolist(), ids, strict=True))
        columns = [rows[name].tolist() for name in _INTEREST_COLUMNS]
        categories = tuple(
            CategoryInterest(by_code[c], *values)
            for c, *values in zip(rows["category_idx"].tolist(), *columns, strict=True)
        )
        level = sum(c.level for c in categories)
        baseline = sum(c.baseline for c in categories)
        later = sum(  # as `interest_summary`: the excitation faded over the horizon
            c.baseline + c.excitation * 2.0 ** (-horizon / max(c.half_life_days, 1e-9))
            for c in categories
        )
        return LiveAnswer(
            p_return=float(p_return[0]),
            p_buy=p_buy,
            expected_return_days=float(days[0]),
            categories=categories,
            interest_vs_usual=level / baseline if baseline > 0 else math.nan,
            interest_change=later / level - 1.0 if level > 0 else 0.0,
        )

    def _order_codes(self, ids: list[str], pairs: list[_Pair]) -> np.ndarray:
        """Category codes for the batch order of interest rows: the fitted code, and for
        categories new since the fit codes after every fitted one, by category id (the
        batch path numbers them in order of first sight in its store)."""
        codes = [pr.code for pr in pairs]
        if min(codes, default=0) < 0:
            new = sorted(c for c, pr in zip(ids, pairs, strict=True) if pr.code < 0)
            rank = {c: self._delta.size + i for i, c in enumerate(new)}
            codes = [rank[c] if code < 0 else code for c, code in zip(ids, codes, strict=True)]
        return np.array(codes, dtype=np.int64)

    # -- sharing state -----------------------------------------------------------------
    def export_user(self, user_id: str) -> dict:
        """The user's full state as JSON-able values (for Redis); KeyError if unknown.

        The decayed sums hold the model's half-lives: `model` names the model they
        belong to, and `import_user` refuses another one's.
        """
        user = self._users[user_id]
        return {
            "version": _STATE_VERSION,
            "model": self.fingerprint,
            "last": user.last,
            "pairs": [[c, pr.t, pr.s, pr.w] for c, pr in user.pairs.items()],
        }

    def import_user(self, user_id: str, state: dict) -> None:
        """Replace the user's state by what `export_user` returned."""
        if state.get("version") != _STATE_VERSION:
            raise ConfigError(
                f"live decay state version {state.get('version')!r}; this ebbtide reads"
                f" {_STATE_VERSION}"
            )
        if state.get("model") != self.fingerprint:
            raise ConfigError(
                f"live decay state of user {user_id!r} belongs to model"
                f" {state.get('model')!r}, not to this one ({self.fingerprint}): rebuild it"
                " from the events"
            )
        user = self._user(user_id, float(state["last"]))
        for category, t, s, w in state["pairs"]:
            user.pairs[category] = self._pair(user.code, category, float(t), float(s), float(w))
        self._users[user_id] = user
