"""The EM of `decay` over one partition of users, with the few global sums behind a reducer.

Why a partition: every (user, category) pair is its own Hawkes process and only the
category parameters (δ_c, α_c) and a handful of scalars are shared, so a fit splits by
user. One process fits with `LOCAL_REDUCER` (the whole log is one partition); Spark runs
the same code in every task and sums through the barrier's all-gather
(`ebbtide.spark.decay`). Whatever the split, each worker sees the same sums in the same
order and so takes the same steps.

Why a compiled kernel: an iteration touches every occurrence a few times (the recursion
over a pair's events, the E-step shares, the compensator), a hundred iterations and two
fits (the dropout validation refits) per model. As numpy passes that is ~180 ns per
occurrence and iteration; one fused numba loop over the pairs, run on all cores, is
several times less. The maths is in the module docstring of `ebbtide.models.decay`.

Searches (`SearchMarks`) excite a pair with a kernel of their own, two exponentials
``Σ_j α_sj e^{−δ_sj t}`` (one fast, one slow: a search comes minutes before the burst it
starts, or hours before a new interest's first step), and are not events the process has
to explain: the kernel walks them beside the pair's occurrences. Their four scalars (δ_s,
α_s of each) are fitted after the rest, which they leave as it was (`fit_hawkes`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Protocol

import numba
import numpy as np

_DELTA_MIN, _DELTA_MAX = 1e-4, 1e3
#: Starting half-lives (days) of the searches' fast and slow kernels.
SEARCH_HALF_LIVES = (1.0 / 24.0, 1.0)
_N_SEARCH = len(SEARCH_HALF_LIVES)
KEY = np.int64(2**31)  # pair key = user * 2**31 + category
_CHUNK_EVENTS = 65_536  # occurrences per unit of parallel work (and of summation order)


class Reducer(Protocol):
    """Sums over all workers that hold the other users' events."""

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum of a 1-D float64 vector over all workers; every worker must
        get the bit-identical result (add the parts in a fixed worker order)."""
        ...


class _LocalReducer:
    """One process holds every user: the sum over workers is the value itself."""

    def sum(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)


LOCAL_REDUCER: Reducer = _LocalReducer()


def reduce_parts(reducer: Reducer, *parts: float | np.ndarray) -> list[np.ndarray]:
    """Scalars and vectors summed over workers in one exchange, handed back in order."""
    arrays = [np.atleast_1d(np.asarray(p, dtype=np.float64)) for p in parts]
    total = reducer.sum(np.concatenate(arrays) if arrays else np.zeros(0))
    bounds = np.cumsum([0] + [a.size for a in arrays])
    return [total[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def occurrences(
    key: np.ndarray, t: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of one pair at one instant as one occurrence, weighted by its strongest row.

    An order's lines (or a burst logged in one second) are one decision, not a cascade
    of events a minute apart: counted separately they would drive the half-life to its
    floor. `key`, `t` are sorted by (key, t); returns the occurrences' key, t and weight.
    """
    if t.size == 0:
        return key, t, w
    first, weight = _occurrence_runs(key, t, np.asarray(w, dtype=np.float64))
    return key[first], t[first], weight


@numba.njit(cache=True)
def _occurrence_runs(key, t, w):  # pragma: no cover
    """Where each run of equal (key, t) starts, and its largest weight: one pass."""
    first = np.empty(key.size, dtype=np.int64)
    weight = np.empty(key.size)
    n = 0
    for i in range(key.size):
        if i == 0 or key[i] != key[i - 1] or t[i] != t[i - 1]:
            first[n] = i
            weight[n] = w[i]
            n += 1
        elif w[i] > weight[n - 1]:
            weight[n - 1] = w[i]
    return first[:n], weight[:n]


@numba.njit(cache=True, parallel=True)
def _stable_within(starts, cat):  # pragma: no cover
    order = np.empty(cat.size, dtype=np.int64)
    for r in numba.prange(starts.size - 1):
        lo, hi = starts[r], starts[r + 1]
        sub = np.argsort(cat[lo:hi], kind="mergesort")
        for j in range(hi - lo):
            order[lo + j] = lo + sub[j]
    return order


def pair_order(run: np.ndarray, category: np.ndarray) -> np.ndarray:
    """The permutation that sorts rows grouped by `run` (a user, a query row) stably by
    category within each run: ``argsort(run · 2^31 + category, stable)`` for grouped rows,
    one short sort per run in threads instead of one sort of every row."""
    n = run.size
    starts = np.flatnonzero(np.r_[True, run[1:] != run[:-1]]) if n else np.zeros(0, np.int64)
    return _stable_within(np.append(starts, n).astype(np.int64), category.astype(np.int64))


@dataclass(frozen=True, slots=True)
class PairEvents:
    """One partition's occurrences sorted by (pair, time), with the pairs' boundaries.

    ``bounds[p]:bounds[p + 1]`` are pair p's occurrences; `gap` is the time since the
    pair's previous occurrence (0 for its first), `tail` the time left to the cut-off.
    """

    key: np.ndarray
    t: np.ndarray
    w: np.ndarray
    cat: np.ndarray
    gap: np.ndarray
    tail: np.ndarray
    bounds: np.ndarray
    chunks: np.ndarray  # pair indices where a unit of parallel work starts

    @property
    def n_pairs(self) -> int:
        return self.bounds.size - 1

    @classmethod
    def build(
        cls,
        user_idx: np.ndarray,
        category_idx: np.ndarray,
        t: np.ndarray,
        w: np.ndarray,
        t_end: float,
    ) -> PairEvents:
        """From events sorted by (user, time): occurrences grouped by pair."""
        key = user_idx.astype(np.int64) * KEY + category_idx
        order = pair_order(user_idx, category_idx)  # events are time-sorted within a user
        key, t, w = occurrences(key[order], t[order], w[order])
        n = t.size
        new_pair = np.r_[True, key[1:] != key[:-1]] if n else np.zeros(0, dtype=bool)
        starts = np.flatnonzero(new_pair)
        gap = np.zeros(n)
        gap[1:] = np.where(new_pair[1:], 0.0, np.maximum(t[1:] - t[:-1], 0.0))
        bounds = np.append(starts, n).astype(np.int64)
        # units of about _CHUNK_EVENTS occurrences, cut at pair starts: the same cut
        # whatever the number of threads, so sums come out the same on any machine
        cuts = np.searchsorted(starts, np.arange(0, n, _CHUNK_EVENTS), side="left")
        chunks = np.unique(np.append(cuts, starts.size)).astype(np.int64)
        return cls(
            key=key,
            t=t,
            w=w,
            cat=(key % KEY).astype(np.int64),
            gap=gap,
            tail=np.maximum(t_end - t, 0.0),
            bounds=bounds,
            chunks=chunks,
        )


@dataclass(frozen=True, slots=True)
class SearchMarks:
    """Searches as marks on one partition's pairs: each excites its (user, category) pair
    with the search kernel and is not itself an event of the pair.

    Marks ``lo[p]:hi[p]`` (sorted by time) belong to `PairEvents` pair p; marks of pairs
    without occurrences excite nothing observed but still count in the compensator, so
    `w` and `tail` cover every mark, `t`/`w` in the pair order.
    """

    t: np.ndarray
    w: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    tail: np.ndarray

    @property
    def n_marks(self) -> int:
        return int(self.t.size)

    @classmethod
    def build(
        cls,
        occ: PairEvents,
        user_idx: np.ndarray,
        category_idx: np.ndarray,
        t: np.ndarray,
        w: np.ndarray,
        t_end: float,
    ) -> SearchMarks:
        """From marks in any order: sorted by (pair, time), matched to `occ`'s pairs."""
        key = user_idx.astype(np.int64) * KEY + category_idx
        order = np.lexsort((t, key))
        key, t, w = key[order], np.asarray(t, np.float64)[order], np.asarray(w, np.float64)[order]
        pairs = occ.key[occ.bounds[:-1]]
        return cls(
            t=t,
            w=w,
            lo=np.searchsorted(key, pairs, side="left").astype(np.int64),
            hi=np.searchsorted(key, pairs, side="right").astype(np.int64),
            tail=np.maximum(t_end - t, 0.0),
        )

    @classmethod
    def empty(cls, occ: PairEvents) -> SearchMarks:
        none = np.zeros(occ.n_pairs, dtype=np.int64)
        return cls(t=np.zeros(0), w=np.zeros(0), lo=none, hi=none, tail=np.zeros(0))

    def mass(self, deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per search kernel, ``G = Σ w (1 − e^{−δ tail}) / δ`` and ``H = Σ w tail
        e^{−δ tail} / δ``: the compensator per unit α and its censored part, as
        `_e_step` has for items."""
        d = np.asarray(deltas, dtype=np.float64)[:, None]
        kept = np.exp(-d * self.tail)
        g = np.sum(self.w * -np.expm1(-d * self.tail), axis=1) / d[:, 0]
        h = np.sum(self.w * self.tail * kept, axis=1) / d[:, 0]
        return g, h


@numba.njit(cache=True, parallel=True)
def _e_step(
    bounds, chunks, cat, w, gap, tail, t, mu, delta, alpha, n_cat, marks_t, marks_w, lo, hi, search
):  # pragma: no cover
    """One pass at (μ, δ, α): per unit of work, Σ log λ_i, the fading compensator and the
    category sums (offspring N_c, delay mass D_c, G_c = Σ w ∫kernel/α, H_c for the
    censored time); per pair, the background count. Numba-compiled; see `e_step`.

    One transcendental per occurrence, the fade ``e^{−δD}``: ``Σ log λ`` is the log of
    running products, taken when one leaves [1e-200, 1e200], and the tail's
    ``e^{−δ(T−t_i)}`` is the previous one over the fade (recomputed if that underflows).

    Search marks ``lo[p]:hi[p]`` add ``α_f A^f_i + α_l A^l_i`` to λ_i, ``A^f_i =
    Σ_{marks before t_i} w e^{−δ_f (t_i − t)}`` (fast; ``l`` the slow kernel; ``B`` their
    delay masses), walked beside the occurrences; each kernel's offspring count and
    delay mass are the last four columns. `search` is ``(δ_f, δ_l, α_f, α_l)``. A pair
    without marks adds exact zeros, so a log without searches gets the same bits.
    """
    n_units = chunks.size - 1
    stats = np.zeros((n_units, 6 + 4 * n_cat))
    background = np.zeros(bounds.size - 1)
    d_f, d_l, a_f, a_l = search[0], search[1], search[2], search[3]
    for unit in numba.prange(n_units):
        log_sum = 0.0
        excited = 0.0
        product = 1.0  # of λ's not yet logged: one log per several occurrences
        for p in range(chunks[unit], chunks[unit + 1]):
            start, end = bounds[p], bounds[p + 1]
            c = cat[start]
            d, a_c, m = delta[c], alpha[c], mu[p]
            a = 0.0
            b = 0.0
            bg = off = late = mass = censored = 0.0
            off_f = late_f = off_l = late_l = 0.0
            af_m = bf_m = al_m = bl_m = 0.0  # the marks' A and B at time t_m
            t_m = 0.0
            j = lo[p]
            kept = math.exp(-d * tail[start])  # e^{−δ (T − t_i)}
            for i in range(start, end):
                if i > start:
                    fade = math.exp(-d * gap[i])
                    carry = a + w[i - 1]
                    b = fade * (b + gap[i] * carry)
                    a = fade * carry
                    kept = kept * (1.0 / fade) if fade > 1e-200 else math.exp(-d * tail[i])
                while j < hi[p] and marks_t[j] < t[i]:  # marks before this occurrence
                    step = marks_t[j] - t_m
                    fade_f, fade_l = math.exp(-d_f * step), math.exp(-d_l * step)
                    bf_m = fade_f * (bf_m + step * af_m)
                    af_m = fade_f * af_m + marks_w[j]
                    bl_m = fade_l * (bl_m + step * al_m)
                    al_m = fade_l * al_m + marks_w[j]
                    t_m = marks_t[j]
                    j += 1
                af_i = bf_i = al_i = bl_i = 0.0
                if af_m > 0.0 or al_m > 0.0:
                    step = t[i] - t_m
                    fade_f, fade_l = math.exp(-d_f * step), math.exp(-d_l * step)
                    af_i, bf_i = fade_f * af_m, fade_f * (bf_m + step * af_m)
                    al_i, bl_i = fade_l * al_m, fade_l * (bl_m + step * al_m)
                lam = m + a_c * a + (a_f * af_i + a_l * al_i)
                product *= lam
                if not 1e-200 < product < 1e200:
                    log_sum += math.log(product)
                    product = 1.0
                inv = 1.0 / lam
                bg += m * inv
                off += a * inv
                late += b * inv
                off_f += af_i * inv
                late_f += bf_i * inv
                off_l += al_i * inv
                late_l += bl_i * inv
                mass += w[i] * (1.0 - kept)
                censored += w[i] * tail[i] * kept
            background[p] = bg
            excited += a_c * mass / d
            stats[unit, 2 + c] += a_c * off
            stats[unit, 2 + n_cat + c] += a_c * late
            stats[unit, 2 + 2 * n_cat + c] += mass / d
            stats[unit, 2 + 3 * n_cat + c] += censored / d
            stats[unit, 2 + 4 * n_cat] += a_f * off_f
            stats[unit, 3 + 4 * n_cat] += a_l * off_l
            stats[unit, 4 + 4 * n_cat] += a_f * late_f
            stats[unit, 5 + 4 * n_cat] += a_l * late_l
        stats[unit, 0] = log_sum + math.log(product)
        stats[unit, 1] = excited
    return stats, background


@numba.njit(cache=True, parallel=True)
def _kernel_mass(bounds, chunks, cat, w, tail, delta, n_cat):  # pragma: no cover
    """Per unit of work and category, ``Σ w (1 − e^{−δ_c tail}) / δ_c``."""
    n_units = chunks.size - 1
    out = np.zeros((n_units, n_cat))
    for unit in numba.prange(n_units):
        for p in range(chunks[unit], chunks[unit + 1]):
            lo, hi = bounds[p], bounds[p + 1]
            c = cat[lo]
            d = delta[c]
            mass = 0.0
            for i in range(lo, hi):
                mass += w[i] * (1.0 - math.exp(-d * tail[i]))
            out[unit, c] += mass / d
    return out


def e_step(
    occ: PairEvents, mu, delta, alpha, n_cat: int, marks: SearchMarks, search: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`_e_step`, its units added in order: ``[Σ log λ, Σ α w ∫kernel/α, N_c, D_c, G_c,
    H_c, N_s, D_s]`` (N_s, D_s per search kernel) and the background count per pair;
    `search` is (δ_f, δ_l, α_f, α_l)."""
    stats, background = _e_step(
        occ.bounds,
        occ.chunks,
        occ.cat,
        occ.w,
        occ.gap,
        occ.tail,
        occ.t,
        mu,
        delta,
        alpha,
        n_cat,
        marks.t,
        marks.w,
        marks.lo,
        marks.hi,
        np.asarray(search, dtype=np.float64),
    )
    return stats.sum(axis=0), background


def kernel_mass(occ: PairEvents, delta: np.ndarray, n_cat: int) -> np.ndarray:
    """``G_c(δ) = Σ_{j in c} w_j (1 − e^{−δ_c (T − t_j)}) / δ_c`` per category."""
    return _kernel_mass(occ.bounds, occ.chunks, occ.cat, occ.w, occ.tail, delta, n_cat).sum(0)


@dataclass(frozen=True, slots=True)
class HawkesFit:
    """What the EM learned: category δ, α; this partition's pair μ; global counts; the
    search kernels (δ_f, δ_l, α_f, α_l), α = 0 without searches."""

    delta: np.ndarray
    alpha: np.ndarray
    mu: np.ndarray
    search: np.ndarray
    loglik: float
    iterations: int
    n_events: int
    n_pairs: int
    category_events: np.ndarray
    mean_mu: float


@dataclass(frozen=True, slots=True)
class _Params:
    """A point of the EM: pair μ (this partition's), category δ and α, and the search
    kernels' (δ_f, δ_l, α_f, α_l) (empty when no worker has searches)."""

    mu: np.ndarray
    delta: np.ndarray
    alpha: np.ndarray
    search: np.ndarray

    def log(self) -> tuple[np.ndarray, np.ndarray]:
        """(local part, part shared by every worker), in logs: the space the
        extrapolation moves in, where every rate stays positive."""
        return np.log(self.mu), np.log(np.concatenate([self.delta, self.alpha, self.search]))

    def kernel(self) -> np.ndarray:
        """(δ_f, δ_l, α_f, α_l) for `e_step`: α = 0 (any δ) without searches."""
        return self.search if self.search.size else np.array([1.0, 1.0, 0.0, 0.0])


@dataclass(frozen=True, slots=True)
class _EMStep:
    """One EM update ``θ → F(θ)`` over a partition, its sums through the reducer."""

    occ: PairEvents
    n_cat: int
    n_pairs: int
    span: float
    kappa: float
    m: float
    reducer: Reducer
    marks: SearchMarks
    searches_only: bool = False  # update the search kernels only, the rest held

    def __call__(self, theta: _Params) -> tuple[_Params, float]:
        """F(θ) and the log-likelihood at θ."""
        occ, n_cat, span, kappa, m = self.occ, self.n_cat, self.span, self.kappa, self.m
        searched = theta.search.size > 0
        kernel = theta.kernel()
        d_s, a_s = kernel[:_N_SEARCH], kernel[_N_SEARCH:]
        stats, bg = e_step(occ, theta.mu, theta.delta, theta.alpha, n_cat, self.marks, kernel)
        marks_mass = np.concatenate(self.marks.mass(d_s)) if searched else ()
        stats, mu_sum, bg_sum, gh_s = reduce_parts(
            self.reducer, stats, theta.mu.sum(), bg.sum(), marks_mass
        )
        loglik = float(stats[0] - (mu_sum[0] * span + stats[1]))
        if searched:
            loglik -= float(a_s @ gh_s[:_N_SEARCH])
        if self.searches_only:
            search = self._search_kernels(stats[2 + 4 * n_cat :], gh_s, d_s)
            return _Params(theta.mu, theta.delta, theta.alpha, search), loglik
        n_c, d_c, g_c, h_c = stats[2 : 2 + 4 * n_cat].reshape(4, n_cat)
        # M-step: background rates.
        mu_bar = bg_sum[0] / (self.n_pairs * span) if self.n_pairs else 1.0
        mu = (bg + m * mu_bar) / (span + m)
        # Decay: N / (delay mass + N · mean censored time of the missing offspring).
        censored = n_c * h_c / np.maximum(g_c, 1e-300)
        denom = d_c + censored
        delta_global = np.clip(n_c.sum() / max(denom.sum(), 1e-300), _DELTA_MIN, _DELTA_MAX)
        raw = np.clip(n_c / np.maximum(denom, 1e-300), _DELTA_MIN, _DELTA_MAX)
        log_delta = (n_c * np.log(raw) + kappa * math.log(delta_global)) / np.maximum(
            n_c + kappa, 1e-300
        )
        delta = np.clip(np.exp(np.where(n_c + kappa > 0, log_delta, 0.0)), _DELTA_MIN, 1e3)
        delta = np.where(n_c + kappa > 0, delta, delta_global)
        # Jump size, with the compensator at the new δ and a gamma prior around the mean.
        (g_new,) = reduce_parts(self.reducer, kernel_mass(occ, delta, n_cat))
        alpha_global = max(n_c.sum() / max(g_new.sum(), 1e-300), 1e-12)
        alpha = (n_c + kappa) / (g_new + kappa / alpha_global)
        return _Params(mu, delta, alpha, theta.search), loglik

    def _search_kernels(self, sums: np.ndarray, gh_s: np.ndarray, d_s: np.ndarray) -> np.ndarray:
        """The search kernels' M-step, as a category's without shrinkage: offspring N_j
        and delay mass D_j (`sums`), the compensator G_j and its censored part H_j
        (`gh_s`) at the old δ_j; α_j from the compensator at the new δ_j."""
        n_s, late_s = sums.reshape(2, _N_SEARCH)
        g_s, h_s = gh_s.reshape(2, _N_SEARCH)
        censored_s = n_s * h_s / np.maximum(g_s, 1e-300)
        d_new = np.where(n_s > 0, n_s / np.maximum(late_s + censored_s, 1e-300), d_s)
        d_new = np.clip(d_new, _DELTA_MIN, _DELTA_MAX)
        (g_new,) = reduce_parts(self.reducer, self.marks.mass(d_new)[0])
        return np.concatenate([d_new, np.maximum(n_s / np.maximum(g_new, 1e-300), 1e-12)])

    def extrapolate(self, theta0: _Params, theta1: _Params, theta2: _Params) -> _Params:
        """SQUAREM's step (Varadhan & Roland 2008, SqS3) from two EM updates, in logs:
        ``θ0 − 2s r + s² v`` with ``r = θ1 − θ0``, ``v = θ2 − 2θ1 + θ0``,
        ``s = −‖r‖/‖v‖`` (at most −1: never shorter than plain EM's two steps)."""
        (l0, g0), (l1, g1), (l2, g2) = theta0.log(), theta1.log(), theta2.log()
        r_local, v_local = l1 - l0, l2 - 2 * l1 + l0
        r_shared, v_shared = g1 - g0, g2 - 2 * g1 + g0
        (norms,) = reduce_parts(self.reducer, [r_local @ r_local, v_local @ v_local])
        rr = norms[0] + r_shared @ r_shared
        vv = norms[1] + v_shared @ v_shared
        s = min(-math.sqrt(rr / vv), -1.0) if vv > 0 else -1.0
        local = np.exp(l0 - 2 * s * r_local + s * s * v_local)
        shared = np.exp(g0 - 2 * s * r_shared + s * s * v_shared)
        n = self.n_cat
        delta = np.clip(shared[:n], _DELTA_MIN, _DELTA_MAX)
        search = shared[2 * n :].copy()
        search[:_N_SEARCH] = np.clip(search[:_N_SEARCH], _DELTA_MIN, _DELTA_MAX)
        if self.searches_only:  # the rest is held, to the bit (no round trip through logs)
            return _Params(theta0.mu, theta0.delta, theta0.alpha, search)
        return _Params(local, delta, shared[n : 2 * n], search)


def fit_hawkes(
    occ: PairEvents,
    *,
    n_cat: int,
    span: float,
    shrink_events: float,
    mu_prior_days: float,
    initial_half_life_days: float,
    max_iter: int,
    tol: float,
    reducer: Reducer,
    progress=None,
    initial: tuple[np.ndarray, ...] | None = None,
    marks: SearchMarks | None = None,
) -> HawkesFit:
    """EM for δ_c, α_c and μ_uc, accelerated; every global quantity goes through `reducer`.

    Plain EM creeps on Hawkes likelihoods (a hundred updates left half-lives 7% from
    their limit on a million events), so updates go in SQUAREM cycles: two EM updates,
    a step along their direction, one more update from there; a cycle that lowers the
    likelihood is dropped for its two plain updates. `max_iter` counts EM updates, and
    the fit stops when one plain update moves the log-likelihood by less than `tol`
    (relative). `initial`: (δ, α, this partition's μ[, search kernels]) to start from,
    else every category at `initial_half_life_days`.

    `marks`: searches exciting the pairs with kernels of their own, fitted afterwards with
    everything else held (EM over their four scalars, from `SEARCH_HALF_LIVES`). Why
    afterwards: a forecast sees the searches made so far, not those to come; fitted
    jointly, the searches took over the part of each pair's background rate that comes
    after searches, and pairs looked idle once their searches faded (re-engagement AUC
    over touched pairs fell below the model without searches). Held, μ keeps the average
    of what searches bring, and a search adds what it says beyond that average. Without
    marks the item fit is the same to the bit.
    """
    marks = SearchMarks.empty(occ) if marks is None else marks
    n_local, counts = occ.t.size, np.bincount(occ.cat, minlength=n_cat).astype(np.float64)
    totals, category_events = reduce_parts(reducer, [n_local, occ.n_pairs, marks.n_marks], counts)
    n_total, n_pairs = int(totals[0]), int(totals[1])
    searched = totals[2] > 0
    update = _EMStep(
        occ, n_cat, n_pairs, span, shrink_events, mu_prior_days, reducer, SearchMarks.empty(occ)
    )
    first_delta = math.log(2.0) / initial_half_life_days
    search_delta = math.log(2.0) / np.asarray(SEARCH_HALF_LIVES)
    no_search = np.zeros(0)
    if initial is None:
        delta = np.full(n_cat, first_delta)
        mean_count = n_total / n_pairs if n_pairs else 0.0
        mu = np.full(occ.n_pairs, 0.5 * mean_count / span)
        theta = _Params(mu, delta, 0.5 * delta, no_search)
    else:
        theta = _Params(initial[2], initial[0], initial[1], no_search)
    theta, loglik, iterations = _iterate(update, theta, max_iter, tol, progress, "decay EM")
    if searched:
        search = np.concatenate([search_delta, 0.5 * search_delta])
        if initial is not None and len(initial) > 3 and np.all(initial[3][_N_SEARCH:] > 0):
            search = np.asarray(initial[3], dtype=np.float64).copy()
        held = replace(update, marks=marks, searches_only=True)
        theta = _Params(theta.mu, theta.delta, theta.alpha, search)
        theta, loglik, more = _iterate(held, theta, max_iter, tol, progress, "decay searches")
        iterations += more
    (mu_total,) = reduce_parts(reducer, theta.mu.sum())
    return HawkesFit(
        delta=theta.delta,
        alpha=theta.alpha,
        mu=theta.mu,
        search=theta.search if searched else np.r_[search_delta, np.zeros(_N_SEARCH)],
        loglik=loglik,
        iterations=iterations,
        n_events=n_total,
        n_pairs=n_pairs,
        category_events=category_events,
        mean_mu=float(mu_total[0]) / max(n_pairs, 1) if n_pairs else 1.0,
    )


def _iterate(
    update: _EMStep, theta: _Params, max_iter: int, tol: float, progress, label: str
) -> tuple[_Params, float, int]:
    """SQUAREM cycles of `update` from `theta` (see `fit_hawkes`): the point, its
    log-likelihood and the EM updates made."""
    iterations, best = 0, -np.inf

    def step(point: _Params) -> tuple[_Params, float]:
        nonlocal iterations
        iterations += 1
        if progress is not None:
            progress(f"{label} iteration {iterations}", min(iterations / max_iter, 1.0))
        return update(point)

    fallback = None
    while True:
        theta1, loglik0 = step(theta)
        if fallback is not None and not loglik0 >= best:  # the jump lost ground (or NaN)
            theta = fallback
            theta1, loglik0 = step(theta)
        best = max(best, loglik0)
        if iterations >= max_iter:
            return theta1, loglik0, iterations
        theta2, loglik1 = step(theta1)
        best = max(best, loglik1)
        if abs(loglik1 - loglik0) <= tol * abs(loglik1) or iterations >= max_iter:
            return theta1, loglik1, iterations
        fallback = theta2
        theta = update.extrapolate(theta, theta1, theta2)
