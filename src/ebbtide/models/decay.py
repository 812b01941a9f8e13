"""`decay`: per-category self-exciting (Hawkes) interest with learned half-lives.

Every (user u, category c) pair is a Hawkes process with an exponential kernel whose decay
rate belongs to the category::

    λ_uc(t) = μ_uc + α_c · Σ_{j: t_j < t} w_{b_j} · exp(−δ_c (t − t_j))

``w_b`` are fixed behaviour weights, ``μ_uc`` the pair's background rate, ``α_c`` the jump of
the intensity per unit-weight event and ``ln 2 / δ_c`` the category's half-life (days).

Fitting is EM on the branching structure: events are sorted by (pair, time) and one
compiled pass over each pair's events runs the recursions (``D = t_i − t_{i−1}``)::

    A_i = e^{−δD} (A_{i−1} + w_{i−1}),   B_i = e^{−δD} (B_{i−1} + D (A_{i−1} + w_{i−1}))

so that ``λ_i = μ + α A_i``. E-step: background share ``μ/λ_i``, offspring share
``α A_i/λ_i`` and offspring delay mass ``α B_i/λ_i``. M-step: ``μ_uc`` = background count
over the window (with a small prior), ``δ_c`` = offspring count / (delay mass + censored
time), ``α_c`` = offspring count / compensator, both shrunk towards global values for
categories with few offspring.

Occurrences, not rows: the rows of one pair at one instant (an order's lines, a burst logged
in one second) are one event, weighted by the strongest. Events without a category belong
to the catalogue's implicit category, so a log without categories is modelled per user.

Leaving for good: a user may stop at rate θ (one per model). Given the Hawkes parameters,
θ maximises the likelihood of the silences after users' last occurrences, and
``P(return within H) = P(alive | silence) · P(an event within H | alive, may leave)``.
Whether θ is used is decided on a validation window inside the training period
(`DecayConfig.dropout`): a year of orders wants it, a few busy days (nights of silence)
do not.

Searches excite the categories their query is about with kernels of their own::

    λ_uc(t) += Σ_{k: s_k < t} p_kc · (α_f e^{−δ_f (t − s_k)} + α_l e^{−δ_l (t − s_k)})

over the user's searches ``s_k``, ``p_kc`` the probability that search k is about c (from
`ebbtide.features.queries.QueryCategoryMap`, learned before the cut-off from what users
engaged with after searching; a search excites its likeliest categories with
``p_kc >= DecayConfig.search_min_probability``). A fast and a slow kernel: a search
comes minutes before the burst it starts, or hours before a new interest's first step.
Their δ and α are fitted by EM after everything else, which they leave as it was: μ keeps
the average of what searches bring (a forecast cannot see the searches to come) and a
search made adds what it says beyond that. A search is no event of the pair either:
interest forecasts engagement with items. Both were measured on `ebbtide synth
--behaviours all` (2,000 users, cut at day 7, 2 days ahead): as one more event, a search
pulled its category's half-life down to its lead (median 0.45 → 0.003 days) and
re-engagement AUC over touched pairs fell (0.862 → 0.857); fitted jointly as a kernel, it
took over part of μ (0.862 → 0.849); held, 0.862 → 0.862, and over touched or searched
pairs 0.917 → 0.920. A category searched for but never touched gets a new category's
rate, ``μ = ν_u · share_c``, plus what its searches add. At ``at`` every search before
``at`` counts, placed by the map fitted at the cut-off (no refit, no future); `interest`'s
excitation includes theirs, and `DecayModel.explain_queries` names the searches behind
it. No searches, or a model saved before them: ``α = 0``, and every answer is what it
was, to the bit.

Every answer is a function of the pairs at an instant (μ, excitation E and δ per user and
category) and of each user's last time: `ebbtide.models.decay_live` keeps those event by
event for the live service and answers with the same functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import numba
import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from ebbtide.errors import ConfigError
from ebbtide.features.history import Catalogue, History, Localised
from ebbtide.features.queries import (
    explain_searches,
    fit_query_map,
    load_model_map,
    save_model_map,
    search_users,
)
from ebbtide.features.sequences import EventArrays, to_days, user_event_ranges
from ebbtide.models.base import Model, Progress
from ebbtide.models.decay_em import KEY as _KEY
from ebbtide.models.decay_em import (
    LOCAL_REDUCER,
    SEARCH_HALF_LIVES,
    PairEvents,
    Reducer,
    SearchMarks,
    fit_hawkes,
    occurrences,
    pair_order,
    reduce_parts,
)
from ebbtide.schema import ITEM_BEHAVIORS, Behavior

_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 365.0, 400)])  # days, for return time
_FRACTIONS = np.concatenate([[0.0], np.geomspace(1e-6, 1.0, 63)])  # of a span, for dropout
_GRID_STEP = np.diff(_GRID)
_BLOCK = 262_144  # pairs × grid points computed at once in `_cumulative`
_SEARCH_CATEGORIES = 3  # the most categories one search excites


def _trapezoid(y: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``np.trapezoid(y, axis=1)`` with the steps of x given: one user's live answer
    calls it several times, and the wrapper would cost more than the sum."""
    return (step * (y[:, 1:] + y[:, :-1]) / 2.0).sum(1)


def _quiet_chance(theta: float, curve: np.ndarray, span: np.ndarray) -> np.ndarray:
    """P(no event within `span` | active at its start, leaving at rate θ)::

        e^{−θS − Λ(S)} + ∫_0^S θ e^{−θs − Λ(s)} ds

    with ``Λ`` given on ``s = span · _FRACTIONS`` (rows of `curve`); trapezoid rule. A
    compiled loop: the dropout fit asks it for every user some twenty times; a few users
    (one live read) skip the threads.
    """
    kernel = _quiet_parallel if curve.shape[0] >= 4096 else _quiet_serial
    return kernel(float(theta), np.ascontiguousarray(curve, dtype=np.float64), span, _FRACTIONS)


def _quiet_loop(theta, curve, span, fractions):  # pragma: no cover
    """`_quiet_chance`'s loop; `numba.prange` is a plain range when compiled serial."""
    out = np.empty(curve.shape[0])
    for u in numba.prange(curve.shape[0]):
        prev_s, prev_q = 0.0, math.exp(-curve[u, 0])
        area = 0.0
        for j in range(1, fractions.size):
            s = span[u] * fractions[j]
            q = math.exp(-theta * s - curve[u, j])
            area += (s - prev_s) * (q + prev_q) / 2.0
            prev_s, prev_q = s, q
        out[u] = min(max(prev_q + theta * area, 0.0), 1.0)
    return out


_quiet_serial = numba.njit(cache=True)(_quiet_loop)
_quiet_parallel = numba.njit(cache=True, parallel=True)(_quiet_loop)


@dataclass(frozen=True, slots=True, kw_only=True)
class DecayConfig:
    """Parameters of `DecayModel`.

    behavior_weights : tuple of 4 floats
        Fixed weights ``w_b`` of view, cart, fav and buy events in the excitation.
    shrink_events : float
        κ: pseudo-offspring pulling ``log δ_c`` and ``α_c`` towards their global values,
        ``log δ_c = (N_c log δ̂_c + κ log δ) / (N_c + κ)``.
    mu_prior_days : float
        m: ``μ_uc = (Σ p_bg + m μ̄) / (T_end − S + m)``, μ̄ the mean background rate.
    nu_prior_days : float
        Prior days in the per-user rate of first touches of new categories.
    buy_prior_events : float
        a: ``ρ_u = (buys + a · global buy share) / (events + a)``.
    max_iter : int
        Most EM iterations.
    tol : float
        Stop when the relative change of the log-likelihood falls below it.
    initial_half_life_days : float
        Starting half-life of every category.
    dropout : {"auto", "fit", "off"}
        Whether users may leave for good at a rate θ (fitted by maximum likelihood):
        "fit" always, "off" never, "auto" when it predicts returns better on a validation
        window, the last `validation_days` before the cut-off, with the model refitted on
        the events before it. A log whose silences are nights, not departures (a few
        busy days), is better off without; a year of orders is not.
    validation_days : float or None
        Length of that window; None: a tenth of the log before the cut-off, within
        [1, 30] days.
    validation_events : int
        Most events the validation refit sees: on a larger log it takes the users a fixed
        hash of their code draws (a yes/no on dropout needs a sample, not the whole
        log: on 10M events it was half the fit).
    use_searches : bool
        Whether searches count toward the interest of the category their query is about
        (a log without searches is modelled the same either way).
    search_min_probability : float
        A search excites one of its query's (at most three) likeliest categories when
        the query map gives it at least this probability, with that probability as its
        weight: a query that could mean anything (words never seen) would otherwise spread
        small excitations over the shop's commonest categories. The searches' jump α_s is
        learned, so they need no fixed weight beside `behavior_weights`.
    """

    behavior_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    shrink_events: float = 5.0
    mu_prior_days: float = 1.0
    nu_prior_days: float = 1.0
    buy_prior_events: float = 10.0
    max_iter: int = 100
    tol: float = 1e-6
    initial_half_life_days: float = 1.0
    dropout: str = "auto"
    validation_days: float | None = None
    validation_events: int = 2_000_000
    use_searches: bool = True
    search_min_probability: float = 0.1

    def __post_init__(self) -> None:
        if self.dropout not in ("auto", "fit", "off"):
            raise ConfigError(f"DecayConfig.dropout={self.dropout!r}: use 'auto', 'fit' or 'off'")
        v = self.validation_days
        if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise ConfigError(f"DecayConfig.validation_days={v!r} must be > 0 (or None)")
        weights = tuple(float(w) for w in self.behavior_weights)
        if len(weights) != len(ITEM_BEHAVIORS) or min(weights) < 0 or max(weights) <= 0:
            raise ConfigError(
                f"DecayConfig.behavior_weights={self.behavior_weights}: four weights >= 0,"
                " not all 0 (view, cart, fav, buy)"
            )
        object.__setattr__(self, "behavior_weights", weights)
        if not isinstance(self.use_searches, bool):
            raise ConfigError(f"DecayConfig.use_searches={self.use_searches!r}: true or false")
        p = self.search_min_probability
        if not (isinstance(p, int | float) and 0 <= p <= 1):
            raise ConfigError(f"DecayConfig.search_min_probability={p!r} must be in [0, 1]")
        for name in ("shrink_events", "mu_prior_days", "nu_prior_days", "buy_prior_events"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"DecayConfig.{name}={value!r} must be a finite number >= 0")
        if not isinstance(self.validation_events, int) or self.validation_events < 1:
            raise ConfigError(
                f"DecayConfig.validation_events={self.validation_events!r} must be an integer >= 1"
            )
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ConfigError(f"DecayConfig.max_iter={self.max_iter!r} must be an integer >= 1")
        if not (isinstance(self.tol, int | float) and self.tol > 0):
            raise ConfigError(f"DecayConfig.tol={self.tol!r} must be > 0")
        h = self.initial_half_life_days
        if not (isinstance(h, int | float) and math.isfinite(h) and h > 0):
            raise ConfigError(f"DecayConfig.initial_half_life_days={h!r} must be > 0")


def _user_draw(n_users: int) -> np.ndarray:
    """A fixed uniform number in [0, 1) per user code (a multiplicative hash), so a sample
    of users is the same on every run and in every partition."""
    codes = np.arange(n_users, dtype=np.uint64) + np.uint64(1)
    mixed = codes * np.uint64(0x9E3779B97F4A7C15)
    mixed ^= mixed >> np.uint64(29)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _pad(values: np.ndarray, size: int, fill: float) -> np.ndarray:
    if values.size >= size:
        return values
    return np.concatenate([values, np.full(size - values.size, fill)])


class DecayModel(Model):
    """Per-category Hawkes interest decay: how fast each category's interest fades."""

    name = "decay"
    config_class = DecayConfig
    answers = frozenset({"p_return", "p_buy", "expected_return_time", "interest", "recommend"})
    state_attributes = (
        "delta_",
        "alpha_",
        "delta_global_",
        "alpha_global_",
        "pair_key_",
        "pair_user_",
        "pair_category_",
        "pair_mu_",
        "default_mu_",
        "nu_",
        "nu_global_",
        "rho_",
        "rho_global_",
        "dropout_",
        "search_delta_",
        "search_alpha_",
        "category_share_",
    )

    # -- fitting -----------------------------------------------------------------------
    def _fit(self, events: EventArrays, progress: Progress | None) -> None:
        """The query map from the searches and engagements before the cut-off, then the
        EM on the item events and the searches it places."""
        history, local = self._local  # what `Model.fit` has just read and renumbered
        self.query_map_ = fit_query_map(history, local) if self.config.use_searches else None
        searched = self._with_searches(history, local).events
        self.fit_partition(searched, start=float(np.quantile(events.t, 0.001)), progress=progress)

    def fit_partition(
        self,
        events: EventArrays,
        *,
        start: float,
        reducer: Reducer = LOCAL_REDUCER,
        progress: Progress | None = None,
        warm: DecayModel | None = None,
    ) -> dict[str, np.ndarray]:
        """Fit on one partition's users and return this partition's state.

        `events` holds whole users in the model's numbering (``n_users`` and
        ``n_categories`` are the global sizes; other partitions' users have empty runs),
        with their placed searches when it is a `SearchedEvents`;
        `start` is the 0.001 quantile of all event times (days) and `self.cutoff_` must be
        set. Category-level arrays come out identical on every worker; the pair arrays
        and ``nu_``/``rho_`` are right for this partition's users only
        (`from_partitions` puts them together). One process: the whole log, the default
        reducer. `warm`: a model fitted on the same partition whose parameters start the
        EM (the dropout validation's refit starts from the full fit).
        """
        self._pairs_cache = None  # new parameters: earlier answers no longer hold
        cfg = self.config
        t_end = to_days(self.cutoff_)
        span = max(t_end - start, 1e-6)
        n_cat = max(events.n_categories, 1)
        w_b = np.asarray(cfg.behavior_weights)
        occ = PairEvents.build(
            events.user_idx, events.category_idx, events.t, w_b[events.behavior], t_end
        )
        placed = _placed(events)
        marks = None
        if placed is not None:
            marks = SearchMarks.build(
                occ, placed.user, placed.category, placed.t, placed.weight, t_end
            )
        fit = fit_hawkes(
            occ,
            n_cat=n_cat,
            span=span,
            shrink_events=cfg.shrink_events,
            mu_prior_days=cfg.mu_prior_days,
            initial_half_life_days=cfg.initial_half_life_days,
            max_iter=cfg.max_iter,
            tol=cfg.tol,
            reducer=reducer,
            progress=progress,
            initial=None if warm is None else warm._initial(occ.key[occ.bounds[:-1]], n_cat),
            marks=marks,
        )
        m = cfg.mu_prior_days
        weights = fit.category_events
        pair_key = occ.key[occ.bounds[:-1]]
        state = {
            "delta_": fit.delta,
            "alpha_": fit.alpha,
            "delta_global_": np.asarray(
                math.exp(float(np.average(np.log(fit.delta), weights=weights)))
                if fit.n_events
                else math.log(2.0) / cfg.initial_half_life_days
            ),
            "alpha_global_": np.asarray(
                float(np.average(fit.alpha, weights=weights)) if fit.n_events else 0.0
            ),
            "pair_key_": pair_key,
            "pair_user_": pair_key // _KEY,
            "pair_category_": pair_key % _KEY,
            "pair_mu_": fit.mu,
            "default_mu_": np.asarray((1.0 + m * fit.mean_mu) / (span + m)),
            **self._fit_users(events, t_end, reducer),
            "dropout_": np.asarray(0.0),
            "search_delta_": fit.search[: len(SEARCH_HALF_LIVES)],
            "search_alpha_": fit.search[len(SEARCH_HALF_LIVES) :],
            "category_share_": self._category_share(pair_key, n_cat, reducer),
        }
        self._set_state(state)
        if cfg.dropout != "off":
            self.dropout_ = np.asarray(self._fit_dropout(events, t_end, reducer))
        choice = {}
        if cfg.dropout == "auto":
            choice = self._validate_dropout(events, t_end, start, reducer)
        if choice and not choice["dropout_chosen"]:
            self.dropout_ = np.asarray(0.0)
        state["dropout_"] = self.dropout_
        self.metrics_ = {
            "loglik_per_event": fit.loglik / max(fit.n_events, 1),
            "iterations": fit.iterations,
            "events": fit.n_events,
            "pairs": fit.n_pairs,
            "median_half_life_days": float(np.median(math.log(2.0) / fit.delta)),
            "dropout_per_day": float(self.dropout_),
            **choice,
        }
        if marks is not None:  # scalars, so `ebbtide train` prints them
            fast, slow = math.log(2.0) / np.asarray(self.search_delta_)
            self.metrics_["search_marks"] = marks.n_marks
            self.metrics_["search_fast_half_life_days"] = float(fast)
            self.metrics_["search_slow_half_life_days"] = float(slow)
            self.metrics_["engagements_per_search"] = float(
                np.sum(np.asarray(self.search_alpha_) / np.asarray(self.search_delta_))
            )
        return state

    @classmethod
    def from_partitions(
        cls,
        config: DecayConfig | None,
        *,
        cutoff: datetime,
        catalogue: Catalogue,
        parts: list[dict[str, np.ndarray]],
        metrics: dict | None = None,
    ) -> DecayModel:
        """The fitted model from every partition's `fit_partition` state."""
        if not parts:
            raise ConfigError("from_partitions needs the state of at least one partition")
        model = cls(config)
        model.cutoff_ = cutoff
        model.catalogue_ = catalogue
        state = dict(parts[0])
        key = np.concatenate([np.asarray(p["pair_key_"], dtype=np.int64) for p in parts])
        order = np.argsort(key, kind="stable")
        for name in ("pair_key_", "pair_user_", "pair_category_", "pair_mu_"):
            state[name] = np.concatenate([np.asarray(p[name]) for p in parts])[order]
        n_users = catalogue.user_ids.size
        for name in ("nu_", "rho_"):
            merged = np.zeros(n_users)
            for part in parts:
                owned = np.asarray(part["owned_users_"], dtype=np.int64)
                merged[owned] = np.asarray(part[name])[owned]
            state[name] = merged
        state.pop("owned_users_", None)
        model._set_state(state)
        model.metrics_ = dict(metrics or {})
        return model

    def _initial(self, pair_key: np.ndarray, n_cat: int) -> tuple[np.ndarray, ...]:
        """This model's δ, α and the μ of `pair_key` (the default for pairs it lacks)."""
        fitted = np.asarray(self.pair_key_, dtype=np.int64)
        where = np.minimum(np.searchsorted(fitted, pair_key), max(fitted.size - 1, 0))
        hit = fitted[where] == pair_key if fitted.size else np.zeros(pair_key.size, bool)
        mu = np.where(hit, np.asarray(self.pair_mu_)[where] if fitted.size else 0.0, 0.0)
        mu = np.where(hit, mu, float(self.default_mu_))
        delta, alpha = self._params(n_cat)
        search = np.concatenate([self.search_delta_, self.search_alpha_])
        return delta[:n_cat], alpha[:n_cat], mu, search

    @staticmethod
    def _category_share(pair_key: np.ndarray, n_cat: int, reducer: Reducer) -> np.ndarray:
        """Each category's share of the (user, category) pairs: where a user's first touch
        of a new category goes, ``ν_u · share_c`` the rate of a first touch of c."""
        (pairs,) = reduce_parts(reducer, np.bincount(pair_key % _KEY, minlength=n_cat))
        return pairs / max(pairs.sum(), 1.0)

    def _fit_users(
        self, events: EventArrays, t_end: float, reducer: Reducer
    ) -> dict[str, np.ndarray]:
        """ν_u: rate of first touches of new categories; ρ_u: shrunk share of a user's
        occurrences (instants, so a basket counts once) that include a buy."""
        cfg = self.config
        n_users = events.n_users
        counts = events.lengths()
        key = events.user_idx.astype(np.int64) * _KEY + events.category_idx
        distinct = np.bincount(np.unique(key) // _KEY, minlength=n_users)
        active = counts > 0
        first_t = np.full(n_users, t_end)
        first_t[active] = events.t[events.offsets[:-1][active]]
        span = np.maximum(t_end - first_t, 0.0)
        new = np.maximum(distinct - 1, 0).astype(np.float64)
        bought = (events.behavior == Behavior.BUY.code).astype(np.float64)
        user, _, has_buy = occurrences(events.user_idx.astype(np.int64), events.t, bought)
        instants = np.bincount(user, minlength=n_users).astype(np.float64)
        buys = np.bincount(user, has_buy, minlength=n_users)
        sums = reduce_parts(
            reducer, [new[active].sum(), span[active].sum(), buys.sum(), instants.sum()]
        )[0]
        nu_global = sums[0] / max(sums[1], 1e-9)
        c = cfg.nu_prior_days
        share = sums[2] / max(sums[3], 1.0)
        a = cfg.buy_prior_events
        return {
            "nu_": (new + c * nu_global) / (span + c) if c > 0 else new / np.maximum(span, 1e-9),
            "nu_global_": np.asarray(nu_global),
            "rho_": (buys + a * share) / np.maximum(instants + a, 1e-9),
            "rho_global_": np.asarray(share),
            "owned_users_": np.flatnonzero(active),
        }

    # -- searches: excitation of the categories their query is about ----------------------
    def _place_searches(self, history: History, local: Localised) -> PlacedSearches:
        """The searches of `history` of users `local` knows, each on its query's likeliest
        categories (at most `_SEARCH_CATEGORIES`, each at least `search_min_probability`
        likely), weighted by that probability. Empty without a map or searches."""
        searches = getattr(history, "searches", None)
        qmap = getattr(self, "query_map_", None)
        if qmap is None or not self.config.use_searches or searches is None:
            return PlacedSearches.empty()
        user = search_users(searches, history, local.catalogue)
        category, probability = qmap.predict(searches.query, k=_SEARCH_CATEGORIES)
        row = np.repeat(np.arange(user.size), _SEARCH_CATEGORIES)
        category, probability = category.ravel(), probability.ravel()
        keep = (
            (user[row] >= 0)
            & (category >= 0)
            & (category < local.events.n_categories)
            & (probability >= max(self.config.search_min_probability, 1e-12))
        )
        row, category, probability = row[keep], category[keep], probability[keep]
        order = np.lexsort((searches.t[row], user[row]))
        row = row[order]
        return PlacedSearches(
            user=user[row].astype(np.int64),
            t=searches.t[row],
            category=category[order].astype(np.int64),
            weight=probability[order],
            row=row,
        )

    def _with_searches(self, history: History, local: Localised) -> Localised:
        """`local` with its history's searches placed beside its events; `local` itself
        when none is placed (so a log without searches is answered as before)."""
        placed = self._place_searches(history, local)
        if placed.user.size == 0:
            return local
        fields = {f.name: getattr(local.events, f.name) for f in dataclasses.fields(EventArrays)}
        events = SearchedEvents(**fields, searches=placed)
        return Localised(events=events, catalogue=local.catalogue, dictionary=local.dictionary)

    def _prepare(
        self, query: str, history: History, users, in_sample: bool
    ) -> tuple[Localised, np.ndarray, bool]:
        """The base class's answer, with the history's searches placed; the last one is
        kept, so the queries at one instant share it (and `_pairs`' cache)."""
        local, index, marked = super()._prepare(query, history, users, in_sample)
        cached = getattr(self, "_searched", None)
        if cached is None or cached[0] is not local:
            cached = (local, self._with_searches(history, local))
            self._searched = cached
        return cached[1], index, marked

    def explain_queries(
        self, history: History, users: Sequence[str] | None = None, *, k: int = 3
    ) -> pd.DataFrame:
        """Which searches drive each category's interest at ``at = history.at``.

        Per (user, category): the `k` queries contributing most to its excitation now, a
        query's contribution being ``Σ p (α_f e^{−δ_f (at − s)} + α_l e^{−δ_l (at − s)})``
        over its searches s (the part of `interest`'s ``excitation`` column they make, per
        day; p the probability that the query is about the category). Queries are grouped
        by their normalised text and shown as last typed.

        Returns
        -------
        pd.DataFrame
            user_id, category_id, query, searches (how many), last_searched_at (UTC),
            contribution (per day); rows by user, category, contribution (largest first).
            Empty when no search is placed (no map, or no searches before ``at``).

        Examples
        --------
        ``model.explain_queries(ebbtide.snapshot(store, at=now), ["u1"], k=3)``: for u1,
        per category, e.g. ``shoes | running shoes | 2 searches | last 05:50 | 13.8``.
        """
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r} must be an integer >= 1")
        local, index, _ = super()._prepare("explain_queries", history, users, False)
        placed = self._place_searches(history, local)
        asked = np.zeros(local.events.n_users, dtype=bool)
        asked[index] = True
        placed = placed.select(asked[placed.user])
        at = to_days(history.at)
        contribution = placed.weight * self._search_kernel(np.maximum(at - placed.t, 0.0)).sum(1)
        typed = history.searches.query[placed.row] if placed.row.size else np.zeros(0, object)
        return explain_searches(
            local.catalogue, placed.user, placed.category, typed, placed.t, contribution, k
        )

    def _save_extra(self, directory: Path) -> None:
        """The query map beside the weights (none: no file, so no stale one either)."""
        save_model_map(getattr(self, "query_map_", None), directory)

    def _load_extra(self, directory: Path) -> None:
        """A folder saved before searches (or without any) has no map: searches unused."""
        self.query_map_ = load_model_map(directory)

    # -- shared query machinery --------------------------------------------------------
    def _params(self, n_categories: int) -> tuple[np.ndarray, np.ndarray]:
        delta = _pad(np.asarray(self.delta_, dtype=np.float64), n_categories, self.delta_global_)
        alpha = _pad(np.asarray(self.alpha_, dtype=np.float64), n_categories, self.alpha_global_)
        return delta, alpha

    def _user_param(self, name: str, users: np.ndarray) -> np.ndarray:
        values = np.asarray(getattr(self, name), dtype=np.float64)
        fill = float(getattr(self, name.removesuffix("_") + "_global_"))
        return _pad(values, int(users.max(initial=-1)) + 1, fill)[users]

    def _pairs(
        self, events: EventArrays, users: np.ndarray, at: float | np.ndarray
    ) -> dict[str, np.ndarray]:
        """Per (query row q, category) pair before `at`: μ, excitation now E, δ.

        ``E = α_c Σ_j w_j exp(−δ_c (at − t_j))`` (per day); pairs unseen at fit get the
        default μ. With searches, also ``search_excitation`` and ``search_delta`` (pairs
        × search kernels), and pairs only searched for (μ: a new category's rate). Rows
        are sorted by (q, category). The last two answers are kept: p_return, p_buy and
        interest for the same users at the same instant (a plan, a report) ask for the
        same pairs, now and at each user's last occurrence, which on millions of events
        is most of their cost.
        """
        when = hashlib.blake2b(at.tobytes()).digest() if isinstance(at, np.ndarray) else at
        key = (id(events), when, users.size, hashlib.blake2b(users.tobytes()).digest())
        cache = getattr(self, "_pairs_cache", None) or {}
        if key in cache:
            return cache[key]
        pairs = self._compute_pairs(events, users, at)
        self._pairs_cache = {**dict(list(cache.items())[-1:]), key: pairs}
        return pairs

    def _compute_pairs(
        self, events: EventArrays, users: np.ndarray, at: float | np.ndarray
    ) -> dict[str, np.ndarray]:
        idx, q = user_event_ranges(events.offsets, users)
        row_key = q * _KEY + events.category_idx[idx]
        order = pair_order(q, events.category_idx[idx])  # time-sorted within each pair
        idx = idx[order]
        w = np.asarray(self.config.behavior_weights)[events.behavior[idx]]
        row_key, t, w = occurrences(row_key[order], events.t[idx], w)
        cat = row_key % _KEY
        searched = self._searched_pairs(events, users, at)
        delta, alpha = self._params(max(events.n_categories, int(cat.max(initial=-1)) + 1))
        at_row = at[row_key // _KEY] if isinstance(at, np.ndarray) else at
        contrib = w * np.exp(-delta[cat] * np.maximum(at_row - t, 0.0))
        new = np.r_[True, row_key[1:] != row_key[:-1]] if row_key.size else row_key > 0
        keys, inverse = row_key[new], np.cumsum(new) - 1  # row_key is sorted
        excitation = alpha[keys % _KEY] * np.bincount(inverse, contrib, minlength=keys.size)
        if searched is not None:  # pairs with searches join those with events
            every = np.union1d(keys, searched[0])
            excitation = _spread(excitation, np.searchsorted(every, keys), every.size)
            search_excitation = _spread(
                searched[1], np.searchsorted(every, searched[0]), every.size
            )
            untouched = np.ones(every.size, dtype=bool)
            untouched[np.searchsorted(every, keys)] = False
            keys = every
        pq_, pc = keys // _KEY, keys % _KEY
        fitted_key = np.asarray(self.pair_key_, dtype=np.int64)
        lookup = users[pq_] * _KEY + pc
        where = np.minimum(np.searchsorted(fitted_key, lookup), max(fitted_key.size - 1, 0))
        found = fitted_key.size > 0
        hit = (fitted_key[where] == lookup) if found else np.zeros(lookup.size, dtype=bool)
        mu_fit = np.asarray(self.pair_mu_, dtype=np.float64)
        mu = np.where(hit, mu_fit[where] if found else 0.0, float(self.default_mu_))
        if searched is not None:  # searched, never touched: a new category's rate
            share = np.asarray(self.category_share_, dtype=np.float64)
            share = _pad(share, int(pc.max(initial=-1)) + 1, 0.0)
            first_touch = self._user_param("nu_", users[pq_]) * share[pc]
            mu = np.where(untouched, first_touch, mu)
        pairs = {"q": pq_, "category": pc, "mu": mu, "excitation": excitation, "delta": delta[pc]}
        if searched is not None:
            pairs["search_excitation"] = search_excitation
            pairs["search_delta"] = np.broadcast_to(self.search_delta_, search_excitation.shape)
        return pairs

    def _searched_pairs(
        self, events: EventArrays, users: np.ndarray, at: float | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Pair keys (query row q, category) with searches before `at`, sorted, and their
        excitation now per search kernel j, ``α_j Σ p e^{−δ_j (at − s)}`` (keys × kernels,
        per day); None without any."""
        placed = _placed(events)
        if placed is None or not np.any(np.asarray(self.search_alpha_) > 0):
            return None
        by_user = np.argsort(users, kind="stable")
        lo = np.searchsorted(users[by_user], placed.user, side="left")
        count = np.searchsorted(users[by_user], placed.user, side="right") - lo
        mark = np.repeat(np.arange(placed.user.size), count)
        rank = np.arange(mark.size) - np.repeat(np.cumsum(count) - count, count)
        q = by_user[np.repeat(lo, count) + rank]
        at_row = at[q] if isinstance(at, np.ndarray) else np.full(q.size, at)
        before = placed.t[mark] < at_row
        if not before.any():
            return None
        mark, q, at_row = mark[before], q[before], at_row[before]
        fade = placed.weight[mark, None] * self._search_kernel(at_row - placed.t[mark])
        keys, inverse = np.unique(q * _KEY + placed.category[mark], return_inverse=True)
        excitation = np.stack(
            [np.bincount(inverse, column, minlength=keys.size) for column in fade.T], axis=1
        )
        return keys, excitation

    def _search_kernel(self, age: np.ndarray) -> np.ndarray:
        """``α_j e^{−δ_j age}`` per search kernel j (fast, slow): (ages, kernels), per day."""
        delta = np.asarray(self.search_delta_, dtype=np.float64)
        return np.asarray(self.search_alpha_, dtype=np.float64) * np.exp(-np.outer(age, delta))

    @staticmethod
    def _integrated(p: dict[str, np.ndarray], horizon: float) -> np.ndarray:
        """``∫_at^{at+H} λ = μH + E (1 − e^{−δH}) / δ`` per pair (plus, per search kernel,
        ``E_j (1 − e^{−δ_j H}) / δ_j``)."""
        out = p["mu"] * horizon + p["excitation"] * -np.expm1(-p["delta"] * horizon) / p["delta"]
        if "search_excitation" in p:
            d_s = p["search_delta"]
            out = out + (p["search_excitation"] * -np.expm1(-d_s * horizon) / d_s).sum(1)
        return out

    @staticmethod
    def _kernels(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The pairs' parts as rows (q, μ, E, δ) sorted by q: one per pair, and one more
        (μ 0, a search kernel's E and δ) per pair and search kernel it has; `p` itself
        without searches. What sums over a user's rows (`_cumulative`, `_return_days`)
        then sees every kernel."""
        if "search_excitation" not in p:
            return p
        has = p["search_excitation"] > 0  # (pairs, search kernels)
        row = np.nonzero(has)[0]
        q = np.concatenate([p["q"], p["q"][row]])
        order = np.argsort(q, kind="stable")
        return {
            "q": q[order],
            "mu": np.concatenate([p["mu"], np.zeros(row.size)])[order],
            "excitation": np.concatenate([p["excitation"], p["search_excitation"][has]])[order],
            "delta": np.concatenate([p["delta"], p["search_delta"][has]])[order],
        }

    def _restrict_answers(self) -> None:
        """No purchases before the cut-off (ratings, page views): no purchase forecast,
        rather than a zero for everyone."""
        no_buys = float(self.rho_global_) == 0.0
        self.answers = type(self).answers - {"p_buy"} if no_buys else type(self).answers

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """As the base class; a folder saved before searches has no search kernels (α 0)."""
        no_searches = {
            "search_delta_": math.log(2.0) / np.asarray(SEARCH_HALF_LIVES),
            "search_alpha_": np.zeros(len(SEARCH_HALF_LIVES)),
            "category_share_": np.zeros(0),
        }
        super()._set_state({**no_searches, **state})
        self._restrict_answers()

    def _forget_users(self, codes: np.ndarray) -> None:
        """Drop the users' (user, category) pairs (their μ falls back to ``default_mu_``)
        and set their ν and ρ to the global values: what a user unseen at fit gets."""
        self._pairs_cache = None
        keep = ~np.isin(np.asarray(self.pair_user_, dtype=np.int64), codes)
        for name in ("pair_key_", "pair_user_", "pair_category_", "pair_mu_"):
            setattr(self, name, np.asarray(getattr(self, name))[keep])
        for name in ("nu_", "rho_"):
            values = np.array(getattr(self, name), dtype=np.float64, copy=True)
            inside = codes[codes < values.size]
            values[inside] = float(getattr(self, name.removesuffix("_") + "_global_"))
            setattr(self, name, values)

    # -- dropout: a user may leave for good ----------------------------------------------
    def _fit_dropout(self, events: EventArrays, t_end: float, reducer: Reducer) -> float:
        """θ by maximum likelihood, the Hawkes parameters held fixed.

        A user seen at first and last occurrences ``t_1 ≤ t_n`` was alive over
        ``[t_1, t_n]`` (``e^{−θ(t_n − t_1)}``); after ``t_n`` the silence up to the
        cut-off is either a quiet life or a departure, `_quiet_chance`. One scalar, so a
        bounded search on log θ is enough; each step sums over every partition.
        """
        users = np.flatnonzero(events.lengths() > 0)
        first = events.t[events.offsets[users]]
        last = events.t[events.offsets[users + 1] - 1]
        silence = self._silence_curve(events, users, last, t_end - last)
        (totals,) = reduce_parts(reducer, [users.size, np.sum(last - first)])
        if totals[0] == 0:
            return 0.0
        lived = float(totals[1])

        def negative_loglik(log_theta: float) -> float:
            theta = math.exp(log_theta)
            quiet = _quiet_chance(theta, silence, t_end - last)
            (surprise,) = reduce_parts(reducer, -np.sum(np.log(np.maximum(quiet, 1e-300))))
            return theta * lived + float(surprise[0])

        found = minimize_scalar(
            negative_loglik,
            bounds=(math.log(1e-6), math.log(10.0)),
            method="bounded",
            options={"xatol": 1e-3},
        )
        return math.exp(float(found.x))

    def _validate_dropout(
        self, events: EventArrays, t_end: float, start: float, reducer: Reducer
    ) -> dict:
        """Refit before the validation window and compare the log-loss of P(return within
        it) with and without dropout; ties and windows without both outcomes keep it off."""
        days = self.config.validation_days
        if days is None:
            days = float(np.clip((t_end - start) / 10.0, 1.0, 30.0))
        t_val = t_end - days
        early = events.t < t_val
        (total,) = reduce_parts(reducer, np.count_nonzero(early))
        share = min(1.0, self.config.validation_events / max(float(total[0]), 1.0))
        if share < 1.0:  # a sample of users, the same whatever the partitions
            drawn = _user_draw(events.n_users) < share
            events = _keep_searches(events.select(drawn[events.user_idx]), lambda s: drawn[s.user])
            early = events.t < t_val
        before = _keep_searches(events.select(early), lambda s: s.t < t_val)
        users = np.flatnonzero(before.lengths() > 0)
        returned = (events.lengths() - before.lengths())[users] > 0
        (counts,) = reduce_parts(reducer, [users.size, returned.sum()])
        if counts[1] == 0 or counts[1] == counts[0]:
            return {"dropout_chosen": False, "validation_days": days}
        probe = DecayModel(replace(self.config, dropout="fit"))
        probe.cutoff_ = self.cutoff_ - timedelta(days=days)
        probe.fit_partition(before, start=min(start, t_val), reducer=reducer, warm=self)
        sums = []
        for theta in (probe.dropout_, 0.0):
            probe.dropout_ = np.asarray(theta)
            p = probe._p_any(before, users, t_val, days, np.ones(users.size))
            p = np.clip(p, 1e-9, 1 - 1e-9)
            sums.append(-np.sum(np.log(np.where(returned, p, 1.0 - p))))
        (loss,) = reduce_parts(reducer, sums)
        loss = loss / counts[0]
        return {
            "dropout_chosen": bool(loss[0] < loss[1]),
            "validation_days": days,
            "validation_log_loss_with_dropout": float(loss[0]),
            "validation_log_loss_without_dropout": float(loss[1]),
        }

    def _silence_curve(
        self, events: EventArrays, users: np.ndarray, start: np.ndarray, span: np.ndarray
    ) -> np.ndarray:
        """``Λ_u(s)`` (all categories and new ones) on ``s = span_u · _FRACTIONS`` after
        ``start_u``: (users, grid)."""
        p = self._pairs(events, users, start)
        return self._cumulative(p, self._user_param("nu_", users), span)

    # -- the queries' maths on pairs: shared by the batch queries below and by the live
    # state (`ebbtide.models.decay_live`), which builds `p` from its recursion instead of
    # from events. `p` is a pairs dict as `_compute_pairs` returns it (rows sorted by q),
    # `nu` the users' new-category rates, one per query row. ----------------------------
    def _cumulative(self, p: dict[str, np.ndarray], nu: np.ndarray, span: np.ndarray):
        """``Λ_u(s) = (Σ_c μ_uc + ν_u) s + Σ_c E_uc (1 − e^{−δ_c s}) / δ_c`` on
        ``s = span_u · _FRACTIONS``: (users, grid).

        The grid goes in blocks of columns: all at once for a few pairs (one user answers
        in a few numpy calls), one at a time for millions (no pairs × grid array).
        """
        p = self._kernels(p)
        q, d = p["q"], p["delta"]
        n_users, n_grid = nu.size, _FRACTIONS.size
        rate_span = (np.bincount(q, p["mu"], minlength=n_users) + nu) * span
        scaled = -d * span[q]
        out = np.empty((n_users, n_grid))
        step = min(max(_BLOCK // max(q.size, 1), 1), n_grid)
        for lo in range(0, n_grid, step):
            f = _FRACTIONS[lo : lo + step]
            jump = p["excitation"][:, None] * -np.expm1(scaled[:, None] * f) / d[:, None]
            flat = q if f.size == 1 else ((q * f.size)[:, None] + np.arange(f.size)).ravel()
            excited = np.bincount(flat, jump.ravel(), minlength=n_users * f.size)
            out[:, lo : lo + step] = rate_span[:, None] * f + excited.reshape(n_users, f.size)
        return out

    def _alive(self, p_last: dict[str, np.ndarray], nu: np.ndarray, gap: np.ndarray):
        """P(still active | silent for `gap` since the last occurrence); `p_last`: the
        pairs at each user's last occurrence."""
        theta = float(self.dropout_)
        if theta <= 0:
            return np.ones(nu.size)
        silence = self._cumulative(p_last, nu, gap)
        quiet_alive = np.exp(-theta * gap - silence[:, -1])
        return quiet_alive / np.maximum(_quiet_chance(theta, silence, gap), 1e-300)

    def _p_event(self, curve: np.ndarray, span: np.ndarray, thin: np.ndarray) -> np.ndarray:
        """P(an event, each kept with chance `thin`, within `span` | active now, may leave
        at rate θ); `curve` is `_cumulative` over the span (one for return and purchase)."""
        return 1.0 - _quiet_chance(float(self.dropout_), curve * thin[:, None], span)

    def _return_days(
        self, p: dict[str, np.ndarray], nu: np.ndarray, alive: np.ndarray
    ) -> np.ndarray:
        """``∫_0^365 P(no event by τ) dτ``: a user who left never returns; one still active
        is silent through τ with chance ``e^{−θτ−Λ(τ)}`` or leaves silently before it,
        ``Λ(τ) = (Σμ + ν)τ + Σ_c E_c (1 − e^{−δ_c τ})/δ_c``.

        Trapezoid rule on a log-spaced grid; the integral is capped at 365 days (a user
        with no activity left returns 365, a restricted mean).
        """
        theta = float(self.dropout_)
        n_users = nu.size
        p = self._kernels(p)
        rate = np.bincount(p["q"], p["mu"], minlength=n_users) + nu
        # a pair whose fading part can bring fewer than 1e-12 more events (E/δ) moves the
        # integral by less than that: leave it out of the (pairs x grid) work; on a log of
        # short half-lives, read some hours after the events, that is most pairs
        lively = p["excitation"] > 1e-12 * p["delta"]
        p = {key: p[key][lively] for key in ("q", "delta", "excitation")}
        out = np.empty(n_users)
        chunk = max(1, 2_000_000 // _GRID.size)
        bounds = np.searchsorted(p["q"], np.arange(0, n_users + chunk, chunk))
        for i, lo in enumerate(range(0, n_users, chunk)):
            hi = min(lo + chunk, n_users)
            s = slice(bounds[i], bounds[i + 1])
            d = p["delta"][s, None]
            jump = -d * _GRID  # E (1 − e^{−δτ}) / δ, in place
            np.negative(np.expm1(jump, out=jump), out=jump)
            jump /= d
            jump *= p["excitation"][s, None]
            rows = p["q"][s] - lo
            flat = ((rows * _GRID.size)[:, None] + np.arange(_GRID.size)).ravel()
            excited = np.bincount(flat, jump.ravel(), minlength=(hi - lo) * _GRID.size)
            cum = rate[lo:hi, None] * _GRID + excited.reshape(hi - lo, _GRID.size)
            quiet = np.exp(-theta * _GRID - cum)  # active and silent through s
            left = np.zeros_like(quiet)  # scipy's cumulative_trapezoid, without its wrapper
            np.cumsum(_GRID_STEP * (quiet[:, 1:] + quiet[:, :-1]) / 2.0, axis=1, out=left[:, 1:])
            out[lo:hi] = _trapezoid(quiet + theta * left, _GRID_STEP)
        return alive * out + (1.0 - alive) * _GRID[-1]

    def _interest_of(
        self, p: dict[str, np.ndarray], users: np.ndarray, horizon: float
    ) -> dict[str, np.ndarray]:
        """p_engage = 1 − exp(−∫λ) over the horizon, per pair, rows by (user, −p_engage,
        category)."""
        p_engage = -np.expm1(-self._integrated(p, horizon))
        order = np.lexsort((p["category"], -p_engage, p["q"]))
        excitation = (
            p["excitation"] + p["search_excitation"].sum(1)
            if "search_excitation" in p
            else p["excitation"]
        )
        return {
            "user_idx": users[p["q"][order]],
            "category_idx": p["category"][order],
            "p_engage": p_engage[order],
            "level": (p["mu"] + excitation)[order],
            "baseline": p["mu"][order],
            "excitation": excitation[order],
            "half_life_days": math.log(2.0) / p["delta"][order],
        }

    # -- batch: the pairs from the events ------------------------------------------------
    def _p_alive(self, events: EventArrays, users: np.ndarray, at: float) -> np.ndarray:
        """P(still active at `at` | the silence since the user's last occurrence)."""
        theta = float(self.dropout_)
        alive = np.ones(users.size)
        seen = events.lengths()[users] > 0
        if theta <= 0 or not seen.any():
            return alive
        who = users[seen]
        last = events.t[events.offsets[who + 1] - 1]
        p_last = self._pairs(events, who, last)
        gap = np.maximum(at - last, 0.0)
        alive[seen] = self._alive(p_last, self._user_param("nu_", who), gap)
        return alive

    def _p_any(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float, thin: np.ndarray
    ) -> np.ndarray:
        """P(an event, each kept with chance `thin`, within `horizon`), dropout included."""
        p = self._pairs(events, users, at)
        span = np.full(users.size, horizon)
        curve = self._cumulative(p, self._user_param("nu_", users), span)
        return self._p_alive(events, users, at) * self._p_event(curve, span, thin)

    # -- queries -----------------------------------------------------------------------
    def _interest(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> dict[str, np.ndarray]:
        """p_engage = 1 − exp(−∫λ) over the horizon, per (user, touched category).

        Leaving for good (θ) is a user-level matter (return, purchase, return time): on
        Taobao, scaling each pair by the user's P(alive) ranked next-day re-engagement
        worse (AUC 0.66 against 0.70 without), so categories keep the plain intensity.
        """
        return self._interest_of(self._pairs(events, users, at), users, horizon)

    def _p_return(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        """P(alive) · (1 − P(no event within H | alive now, may leave at rate θ))."""
        return self._p_any(events, users, at, horizon, np.ones(users.size))

    def _p_buy(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        """As `_p_return`, each action a buy with chance ρ_u."""
        return self._p_any(events, users, at, horizon, self._user_param("rho_", users))

    def _expected_return_days(
        self, events: EventArrays, users: np.ndarray, at: float
    ) -> np.ndarray:
        """Expected days to the next action, capped at 365 (`_return_days`)."""
        p = self._pairs(events, users, at)
        alive = self._p_alive(events, users, at)
        return self._return_days(p, self._user_param("nu_", users), alive)

    def _recommend(
        self, events: EventArrays, users: np.ndarray, at: float, k: int, exclude_bought: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score ``Σ_{u's events on i} w e^{−δ_c(at−t)} + p_engage_uc(1 day) · share_c(i)``.

        ``share_c(i)`` is item i's share of the recency-weighted popularity of its category
        (decayed with the category's half-life). Categories the user never touched count
        with ``p = (1 − e^{−ν_u}) · share(c)``, so a global fallback fills short lists.
        """
        n_items = events.n_items
        k = min(k, n_items)
        n_cat = max(events.n_categories, 1)
        delta, _ = self._params(n_cat)
        w_b = np.asarray(self.config.behavior_weights)
        cat_all = events.category_idx.astype(np.int64)
        d_all = np.where(cat_all >= 0, delta[np.maximum(cat_all, 0)], float(self.delta_global_))
        decayed = w_b[events.behavior] * np.exp(-d_all * np.maximum(at - events.t, 0.0))
        pop = np.bincount(events.item_idx, decayed, minlength=n_items)
        item_cat = np.full(n_items, -1, dtype=np.int64)
        item_cat[events.item_idx] = cat_all  # last observed category of each item
        cat_pop = np.bincount(np.maximum(item_cat, 0), pop * (item_cat >= 0), minlength=n_cat)
        share = np.where(
            item_cat >= 0, pop / np.maximum(cat_pop[np.maximum(item_cat, 0)], 1e-300), 0.0
        )
        global_share = pop / max(pop.sum(), 1e-300)
        cat_share = cat_pop / max(cat_pop.sum(), 1e-300)

        # Candidates: the user's own items, top-k items of each touched category, global top.
        idx, q_ev = user_event_ranges(events.offsets, users)
        own_key = q_ev * n_items + events.item_idx[idx]
        p = self._pairs(events, users, at)
        p_engage = -np.expm1(-self._integrated(p, 1.0))
        by_cat = np.lexsort((np.arange(n_items), -pop, item_cat))
        sorted_cat = item_cat[by_cat]
        cat_first = np.searchsorted(sorted_cat, np.arange(n_cat))
        cat_count = np.minimum(
            np.searchsorted(sorted_cat, np.arange(n_cat), "right") - cat_first, k
        )
        reps = cat_count[p["category"]]
        rank = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        cat_items = by_cat[np.repeat(cat_first[p["category"]], reps) + rank]
        cat_key = np.repeat(p["q"], reps) * n_items + cat_items
        bought = np.zeros(0, dtype=np.int64)
        if exclude_bought:
            buy = events.behavior[idx] == Behavior.BUY.code
            bought = np.unique(own_key[buy])
        per_user = np.bincount(bought // max(n_items, 1), minlength=users.size)
        m = min(n_items, k + int(per_user.max(initial=0)))
        top = np.argsort(-global_share, kind="stable")[:m]
        glob_key = (np.arange(users.size, dtype=np.int64)[:, None] * n_items + top).ravel()
        cand = np.unique(np.concatenate([own_key, cat_key, glob_key]))
        # Bought items go last rather than out: a shop of few items (CDNOW has one)
        # still fills every list, with repeat purchases after everything else.
        last = np.isin(cand, bought)
        cq, ci = cand // n_items, cand % n_items

        # Repeat term, then the category term (touched: p_engage; untouched: new-category).
        repeat_w = w_b[events.behavior[idx]] * np.exp(
            -d_all[idx] * np.maximum(at - events.t[idx], 0.0)
        )
        own_keys, own_inv = np.unique(own_key, return_inverse=True)
        own_score = np.bincount(own_inv, repeat_w, minlength=own_keys.size)
        pos = np.minimum(np.searchsorted(own_keys, cand), max(own_keys.size - 1, 0))
        hit = own_keys[pos] == cand if own_keys.size else np.zeros(cand.size, dtype=bool)
        score = np.where(hit, own_score[pos] if own_keys.size else 0.0, 0.0)
        pair_key = p["q"] * _KEY + p["category"]
        ccat = item_cat[ci]
        lookup = cq * _KEY + np.maximum(ccat, 0)
        where = np.minimum(np.searchsorted(pair_key, lookup), max(pair_key.size - 1, 0))
        touched = (pair_key[where] == lookup) & (ccat >= 0) if pair_key.size else ccat < -1
        p_nu = -np.expm1(-self._user_param("nu_", users))[cq]
        p_cat = np.where(
            touched,
            p_engage[where] if pair_key.size else 0.0,
            p_nu * cat_share[np.maximum(ccat, 0)],
        )
        score = score + np.where(ccat >= 0, p_cat * share[ci], p_nu * global_share[ci])

        order = np.lexsort((ci, -pop[ci], -score, last, cq))  # ties: the more popular first
        cq, ci, score = cq[order], ci[order], score[order]
        first = np.searchsorted(cq, np.arange(users.size))
        take = first[:, None] + np.arange(k)
        return ci[take], score[take]


@dataclass(frozen=True, slots=True)
class PlacedSearches:
    """Searches on the categories their query is about, sorted by (user, time).

    Attributes
    ----------
    user, category : np.ndarray of int64
        The model's codes; a search on several categories has one row per category.
    t : np.ndarray of float64
        Days since the Unix epoch.
    weight : np.ndarray of float64
        The probability that the search is about the category.
    row : np.ndarray of int64
        The search's index in the history's `SearchArrays` (for its text).
    """

    user: np.ndarray
    t: np.ndarray
    category: np.ndarray
    weight: np.ndarray
    row: np.ndarray

    @classmethod
    def empty(cls) -> PlacedSearches:
        none = np.zeros(0, dtype=np.int64)
        return cls(none, np.zeros(0), none, np.zeros(0), none)

    def select(self, keep: np.ndarray) -> PlacedSearches:
        return PlacedSearches(*(getattr(self, f.name)[keep] for f in dataclasses.fields(self)))


@dataclass(frozen=True)
class SearchedEvents(EventArrays):
    """Item events with the history's searches placed beside them (not among them: a
    search is no event of a pair, it excites pairs). `select` keeps every search."""

    searches: PlacedSearches


def _placed(events: EventArrays) -> PlacedSearches | None:
    """The searches placed beside `events`, None when there are none."""
    placed = getattr(events, "searches", None)
    return placed if placed is not None and placed.user.size else None


def _keep_searches(events: EventArrays, keep) -> EventArrays:
    """`events` with only the placed searches `keep(searches)` holds."""
    placed = _placed(events)
    return events if placed is None else replace(events, searches=placed.select(keep(placed)))


def _spread(values: np.ndarray, where: np.ndarray, size: int) -> np.ndarray:
    """`values` (rows) at rows `where` of `size` rows of zeros."""
    out = np.zeros((size, *values.shape[1:]))
    out[where] = values
    return out
