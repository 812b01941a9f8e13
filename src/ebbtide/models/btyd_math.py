r"""BG/NBD and Pareto/NBD ("buy till you die") maths on per-customer arrays.

Both models see each customer through three numbers: ``x`` repeat transactions, the time
``t_x`` of the last one and the age ``T`` (time from the first transaction to the end of
calibration), all in one time unit the caller chooses (weeks for CDNOW). Purchases follow a
Poisson process with rate ``lambda ~ Gamma(r, alpha)`` while the customer is alive; the models
differ in how customers die.

BG/NBD (Fader, Hardie & Lee 2005): after each repeat purchase the customer dies with
probability ``p ~ Beta(a, b)``::

    L = B(a, b+x)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+T)^(r+x))
        + [x > 0] B(a+1, b+x-1)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x))
    P(alive) = 1 / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))
    E[Y(h)] = P(alive) (a+b+x-1)/(a-1)
              * [1 - ((alpha+T)/(alpha+T+h))^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; h/(alpha+T+h))]
    P(Y(h) > 0) = P(alive) [1 - ((alpha+T)/(alpha+T+h))^(r+x)]

``G`` is the gamma function and ``Y(h)`` the number of transactions in ``(T, T+h]``. The
expectation is FHL's eq. 10 after an Euler transformation, which keeps the hypergeometric
parameters small for heavy buyers. ``P(Y(h) > 0)``: death only follows a purchase, so an alive
customer buys in ``(T, T+h]`` iff the next purchase comes within ``h``, with ``lambda`` drawn
from its posterior ``Gamma(r+x, alpha+T)``.

Pareto/NBD (Schmittlein, Morrison & Colombo 1987; the likelihood of Fader & Hardie's note
"A Note on Deriving the Pareto/NBD Model and Related Expressions"): lifetimes are
``Exponential(mu)`` with ``mu ~ Gamma(s, beta)``::

    L = G(r+x) alpha^r beta^s / G(r)
        * [(alpha+T)^-(r+x) (beta+T)^-s + s I(r+x, s+1; t_x, T)]
    I(p, q; lo, hi) = integral_lo^hi (alpha+y)^-p (beta+y)^-q dy = G_pq(lo) - G_pq(hi)
    G_pq(y) = (M+y)^-n / n * 2F1(n, k; n+1; (M-m)/(M+y))
        n = p+q-1, M = max(alpha, beta), m = min(alpha, beta), k = q if alpha >= beta else p
    P(alive) = 1 / (1 + s I(r+x, s+1; t_x, T) (alpha+T)^(r+x) (beta+T)^s)
    E[Y(h)] = P(alive) (r+x)(beta+T) / ((alpha+T)(s-1)) [1 - ((beta+T)/(beta+T+h))^(s-1)]
    P(Y(h) > 0) = P(alive) (r+x) (alpha+T)^(r+x) (beta+T)^s I(r+x+1, s; T, T+h)

``s I(r+x, s+1; t_x, T)`` is the note's ``s/(r+s+x) A_0`` with both ``alpha >= beta`` and
``alpha < beta`` branches (the branch picks which side the hypergeometric series expands); this
is the quantity lifetimes 0.11.3 computes in ``ParetoNBDFitter._log_A_0``. Here it is kept in
log space, ``2F1(n, k; n+1; z)`` is rewritten as ``(1-z)^(1-k) 2F1(1, n+1-k; n+1; z)`` when
``k > 1`` so the series stays bounded as ``z -> 1``, scipy sums the series up to ``z = 0.9`` and
Gauss-Legendre quadrature takes the rest of the way (`_log_g` says why), and when ``G(lo)`` and
``G(hi)`` agree to six digits the difference is replaced by quadrature of the integrand. ``G``
runs once per distinct ``(x, y)``: with day-level data a million customers share a few
thousand of them.
``P(Y(h) > 0)``: alive at ``T``, ``lambda ~ Gamma(r+x, alpha+T)`` and ``mu ~ Gamma(s, beta+T)``
independently; a purchase falls in ``(T, T+h]`` iff the first purchase time ``u`` comes
before both death and ``h``, ``P = integral_0^h E[lambda e^(-lambda u)] E[e^(-mu u)] du``,
which is the integral ``I`` above.

Fitting maximises the weighted mean log-likelihood (minus ``penalizer * sum(params^2)``, the
lifetimes convention, on parameters in rescaled time) over log-parameters: identical
``(x, t_x, T)`` rows are merged with weights, time is rescaled so that ``max(T) = 10``,
L-BFGS-B starts from a data-driven guess, then other starts and Nelder-Mead are tried if the
answer is not clean; large inputs get a warm start from a fit on a random subsample.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, expit, gammaln, hyp2f1, logsumexp

from ebbtide.errors import ConfigError, ConvergenceError, ConvergenceWarning

logger = logging.getLogger(__name__)

__all__ = [
    "RFM",
    "BGNBDParams",
    "ParetoNBDParams",
    "bgnbd_expected_transactions",
    "bgnbd_loglik",
    "bgnbd_p_alive",
    "bgnbd_p_any_transaction",
    "fit_bgnbd",
    "fit_pareto_nbd",
    "p_any_transaction_curve",
    "pareto_nbd_expected_transactions",
    "pareto_nbd_loglik",
    "pareto_nbd_p_alive",
    "pareto_nbd_p_any_transaction",
    "rfm_from_transactions",
]

_PARAM_MIN, _PARAM_MAX = 1e-6, 1e6  # bounds of every parameter, in rescaled time
_LOG_LO, _LOG_HI = float(np.log(_PARAM_MIN)), float(np.log(_PARAM_MAX))
_TIME_SCALE_TARGET = 10.0  # max(T) after rescaling, as lifetimes does
_BAD = 1e10  # objective value for parameters where the likelihood is not finite
_GRAD_TOL = 1e-4  # max |d mean-NLL / d log-param| accepted as converged
_FLAT_TOL = 1e-7  # smallest Hessian eigenvalue (mean NLL, log-params) accepted as identified
#: |log-parameter| (times rescaled to max T = 10) beyond which a fit has run along a ridge
#: (e.g. r and alpha growing together: only their ratio is known) rather than found a point.
_EXTREME_LOG = float(np.log(1e3))
_DEDUP_SAMPLE = 1 << 16  # rows sampled to decide whether merging duplicates pays
_MEMO_SIZE = 64  # objective values and gradients remembered per fit
_WARM_START_ROWS = 200_000  # above this many distinct rows, warm-start from a subsample
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)
_GL_UNIT_NODES, _GL_UNIT_WEIGHTS = 0.5 * (_GL_NODES + 1.0), 0.5 * _GL_WEIGHTS  # on [0, 1]
_SERIES_MAX_Z = 0.9  # Pareto/NBD: hyp2f1 series up to here, quadrature beyond (`_log_g`)
_TAIL_LOG_W = float(np.log1p(-_SERIES_MAX_Z))
_TAIL_PEAK_STEPS = np.array([-40.0, -8.0, 8.0, 40.0])  # panel breaks, in widths of the peak
_TAIL_REACH = 40.0  # widths past an end peak that count (e^-40)
_TAIL_CUT_STEPS = np.array([-8.0, -3.0, -1.0, 0.0, 1.0, 2.0, 4.0])
_TAIL_CHUNK = 4096  # elements per vectorised quadrature pass
_GL64_NODES, _GL64_WEIGHTS = np.polynomial.legendre.leggauss(64)


# ---------------------------------------------------------------------------- data types


@dataclass(frozen=True, eq=False)
class RFM:
    """Per-customer summaries: repeat count, recency and age, in one time unit.

    Parameters
    ----------
    frequency : np.ndarray
        Number of repeat transactions ``x`` (non-negative integers).
    recency : np.ndarray
        Time of the last transaction since the first, ``t_x`` (0 when ``x == 0``).
    age : np.ndarray
        Time from the first transaction to the end of calibration, ``T >= t_x``.
    weights : np.ndarray or None
        Number of customers each row stands for (identical rows may be merged); None means 1.

    Raises
    ------
    ConfigError
        If the arrays differ in shape, hold NaN/inf or break ``0 <= t_x <= T``.
    """

    frequency: np.ndarray
    recency: np.ndarray
    age: np.ndarray
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        names = ("frequency", "recency", "age") + (("weights",) if self.weights is not None else ())
        arrays = {name: np.asarray(getattr(self, name), dtype=np.float64) for name in names}
        shape = arrays["frequency"].shape
        for name, arr in arrays.items():
            if arr.ndim != 1 or arr.shape != shape:
                raise ConfigError(
                    f"RFM arrays must be 1-D and of one length; {name} has shape {arr.shape}, "
                    f"frequency has shape {shape}"
                )
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                raise ConfigError(
                    f"RFM {name} must be finite; row {bad[0]} is {arr[bad[0]]}: "
                    "drop or repair that customer before fitting"
                )
            object.__setattr__(self, name, arr)
        x, tx, age = arrays["frequency"], arrays["recency"], arrays["age"]
        _first_bad(x < 0, "frequency must be >= 0", x)
        _first_bad(x != np.floor(x), "frequency must be a whole number of transactions", x)
        _first_bad(tx < 0, "recency must be >= 0", tx)
        _first_bad(
            tx > age,
            "recency must not exceed age (compute both from the same first purchase)",
            tx,
            age,
        )
        _first_bad((x == 0) & (tx != 0), "recency must be 0 for customers with frequency 0", tx)
        if "weights" in arrays:
            _first_bad(arrays["weights"] < 0, "weights must be >= 0", arrays["weights"])

    def __len__(self) -> int:
        return int(self.frequency.shape[0])


def _first_bad(mask: np.ndarray, what: str, *values: np.ndarray) -> None:
    """Raise `ConfigError` naming the first row where ``mask`` holds."""
    rows = np.flatnonzero(mask)
    if rows.size:
        i = int(rows[0])
        shown = ", ".join(f"{v[i]:g}" for v in values)
        raise ConfigError(f"RFM {what}: row {i} has {shown} ({rows.size} rows affected)")


@dataclass(frozen=True)
class BGNBDParams:
    """BG/NBD parameters: purchase rate ``Gamma(r, alpha)``, dropout ``Beta(a, b)``.

    ``alpha`` is in the time unit of the data it was fitted on.
    """

    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        _check_params(self)


@dataclass(frozen=True)
class ParetoNBDParams:
    """Pareto/NBD parameters: purchase rate ``Gamma(r, alpha)``, death rate ``Gamma(s, beta)``.

    ``alpha`` and ``beta`` are in the time unit of the data they were fitted on.
    """

    r: float
    alpha: float
    s: float
    beta: float

    def __post_init__(self) -> None:
        _check_params(self)


def _check_params(params: BGNBDParams | ParetoNBDParams) -> None:
    for name, value in zip(type(params).__dataclass_fields__, astuple(params), strict=True):
        if not (np.isfinite(value) and value > 0):
            raise ConfigError(
                f"{type(params).__name__}.{name} must be a positive finite number, got {value!r}"
            )


# ---------------------------------------------------------------------------- RFM building


def rfm_from_transactions(
    customer: np.ndarray, day: np.ndarray, end_day: int, unit_days: float = 7.0
) -> tuple[np.ndarray, RFM]:
    """Summarise transactions into per-customer (x, t_x, T), as the BTYD papers do.

    Calibration holds the transactions with ``day <= end_day`` (inclusive, like lifetimes'
    ``calibration_period_end``); several transactions of one customer on one day count as one.
    ``x`` = distinct calibration days - 1, ``t_x`` = (last day - first day) / unit_days,
    ``T`` = (end_day - first day) / unit_days. With CDNOW, ``end_day`` = 1997-09-30 and
    ``unit_days=7`` reproduce the published data (e.g. T = 38.86 weeks for a 1997-01-01 buyer).

    Parameters
    ----------
    customer : np.ndarray
        Customer id per transaction, any sortable dtype.
    day : np.ndarray
        Integer day number per transaction (e.g. days since an epoch).
    end_day : int
        Last calibration day, included.
    unit_days : float
        Days per time unit of the result (7 gives weeks).

    Returns
    -------
    customers : np.ndarray
        Sorted unique ids of customers with a transaction on or before ``end_day``.
    rfm : RFM
        Their summaries, in the order of ``customers``.

    Raises
    ------
    ConfigError
        If the arrays differ in length, ``day`` is not integer or ``unit_days <= 0``.
    """
    customer = np.asarray(customer)
    day = np.asarray(day)
    if customer.ndim != 1 or customer.shape != day.shape:
        raise ConfigError(
            f"customer and day must be 1-D and of one length, got shapes {customer.shape} "
            f"and {day.shape}"
        )
    if not np.issubdtype(day.dtype, np.integer):
        raise ConfigError(
            f"day must hold integer day numbers, got dtype {day.dtype}; convert dates with "
            "(dates - epoch).astype('timedelta64[D]').astype(int)"
        )
    if not (np.isfinite(unit_days) and unit_days > 0):
        raise ConfigError(f"unit_days must be > 0, got {unit_days!r}")
    keep = day <= end_day
    ids, code = np.unique(customer[keep], return_inverse=True)
    d = day[keep].astype(np.int64)
    order = np.lexsort((d, code))
    code, d = code[order], d[order]
    distinct = np.ones(code.shape, dtype=bool)
    distinct[1:] = (code[1:] != code[:-1]) | (d[1:] != d[:-1])
    code, d = code[distinct], d[distinct]
    if code.size:
        starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
        ends = np.r_[starts[1:], code.size]
    else:
        starts = ends = np.zeros(0, dtype=np.intp)
    first, last = d[starts], d[np.maximum(ends - 1, 0)]
    rfm = RFM(
        frequency=(ends - starts - 1).astype(np.float64),
        recency=(last - first) / float(unit_days),
        age=(end_day - first) / float(unit_days),
    )
    return ids, rfm


# ---------------------------------------------------------------------------- shared helpers


class _Pairs(NamedTuple):
    """Distinct (x, y) pairs over y in {lo, hi}, so hypergeometrics run once per pair.

    With day-level data a million customers hold a few thousand distinct pairs.
    """

    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray  # row -> pair index of (x, lo)
    hi: np.ndarray  # row -> pair index of (x, hi)


class _Data(NamedTuple):
    x: np.ndarray
    tx: np.ndarray
    T: np.ndarray
    w: np.ndarray
    xu: np.ndarray  # distinct values of x: terms in x alone are computed once per value
    xi: np.ndarray  # row -> index into xu
    pairs: _Pairs | None = None


def _unique_rows(*cols: np.ndarray, always: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of equal-length columns and each input row's index among them.

    Hashing (pandas' factorize, in order of first appearance), not sorting: with day-level
    data, where most rows repeat, that takes a tenth of the time. Unless ``always`` (a fit,
    which reuses the result a hundred times), best effort: when a strided sample shows a column
    mostly distinct (continuous times), merging would cost more than it saves in one pass, so
    the rows come back as they are.
    """
    n = cols[0].shape[0]
    if not always and n > 4 * _DEDUP_SAMPLE:
        for col in cols:
            sample = col[:: n // _DEDUP_SAMPLE]
            if pd.unique(sample).size > 0.5 * sample.size:
                return list(cols), np.arange(n)
    codes = np.zeros(n, dtype=np.int64)
    for col in cols:
        col_codes, uniques = pd.factorize(col)
        codes, _ = pd.factorize(codes * max(len(uniques), 1) + col_codes)
    size = int(codes.max()) + 1 if n else 0
    first = np.empty(size, dtype=np.intp)
    first[codes] = np.arange(n)  # any row of a group represents it: they are identical
    return [c[first] for c in cols], codes.astype(np.intp, copy=False)


def _with_pairs(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, always: bool = False) -> _Pairs:
    (px, py), inv = _unique_rows(np.concatenate([x, x]), np.concatenate([lo, hi]), always=always)
    return _Pairs(px, py, inv[: x.size], inv[x.size :])


def _make_data(x, tx, T, w, *, pairs: bool) -> _Data:
    (xu,), xi = _unique_rows(x)
    return _Data(x, tx, T, w, xu, xi, _with_pairs(x, tx, T, always=True) if pairs else None)


def _data_from_rfm(rfm: RFM, *, compress: bool, pairs: bool) -> _Data:
    x, tx, T = rfm.frequency, rfm.recency, rfm.age
    w = np.ones_like(x) if rfm.weights is None else rfm.weights
    if compress and x.size:
        (T, tx, x), inv = _unique_rows(T, tx, x, always=True)
        w = np.bincount(inv, weights=w, minlength=x.size)
        keep = w > 0
        x, tx, T, w = x[keep], tx[keep], T[keep], w[keep]
    return _make_data(x, tx, T, w, pairs=pairs)


def _log1mexp(d: np.ndarray) -> np.ndarray:
    """log(1 - exp(d)) for d <= 0, accurate at both ends (Maechler 2012)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > -np.log(2.0), np.log(-np.expm1(d)), np.log1p(-np.exp(d)))


def _horizon(horizon: float | np.ndarray, n: int) -> np.ndarray:
    h = np.asarray(horizon, dtype=np.float64)
    try:
        h = np.broadcast_to(h, (n,)).astype(np.float64)
    except ValueError:
        raise ConfigError(
            f"horizon must be a number or one value per customer ({n}), got shape {h.shape}"
        ) from None
    _first_bad(~np.isfinite(h) | (h < 0), "horizon must be finite and >= 0", h)
    return h


# ---------------------------------------------------------------------------- BG/NBD maths


def _bgnbd_ll(theta: np.ndarray, d: _Data) -> np.ndarray:
    r, alpha, a, b = theta
    x, tx, T, xu = d.x, d.tx, d.T, d.xu
    rx = r + x
    # terms in x alone, once per distinct x (gammaln and betaln are the costly part)
    head = gammaln(r + xu) - gammaln(r) + r * np.log(alpha) + betaln(a, b + xu) - betaln(a, b)
    head = head[d.xi]
    alive = -rx * np.log(alpha + T)
    # log(a / (b+x-1)); max(x, 1) keeps b + x - 1 > 0 where the term is masked out anyway
    odds = (np.log(a) - np.log(b + np.maximum(xu, 1.0) - 1.0))[d.xi]
    died = odds - rx * np.log(alpha + tx)
    return head + np.where(x > 0, np.logaddexp(alive, died), alive)


def _bgnbd_p_alive(theta: np.ndarray, x, tx, T) -> np.ndarray:
    r, alpha, a, b = theta
    xs = np.maximum(x, 1.0)
    log_odds_dead = (
        np.log(a) - np.log(b + xs - 1.0) + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
    )
    return np.where(x > 0, expit(-log_odds_dead), 1.0)


def _bgnbd_alive_expected(theta, x, T, h) -> np.ndarray:
    """E[Y(h) | alive at T, data]; the a = 1 singularity is removable, so interpolate."""
    r, alpha, a, b = theta
    delta = 1e-5
    if abs(a - 1.0) < delta:
        lo = _bgnbd_alive_expected((r, alpha, 1.0 - 2.0 * delta, b), x, T, h)
        hi = _bgnbd_alive_expected((r, alpha, 1.0 + 2.0 * delta, b), x, T, h)
        return lo + (hi - lo) * (a - (1.0 - 2.0 * delta)) / (4.0 * delta)
    z = h / (alpha + T + h)
    log1mz = np.log(alpha + T) - np.log(alpha + T + h)
    c = a + b + x - 1.0
    with np.errstate(all="ignore"):
        inner = 1.0 - np.exp((a - 1.0) * log1mz) * hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
        out = c / (a - 1.0) * inner
    bad = ~np.isfinite(out) | (out < -1e-9)  # the series failed; a hair below 0 is rounding
    if np.any(bad):
        out[bad] = _bgnbd_alive_expected_quad(theta, x[bad], T[bad], h[bad])
    return np.maximum(out, 0.0)


def _bgnbd_alive_expected_quad(theta, x, T, h) -> np.ndarray:
    """Fallback: E_p[(1 - (1 + p h/(alpha+T))^-(r+x)) / p] with p ~ Beta(a, b+x).

    Substituting p = v^(1/a) removes the p^(a-1) endpoint singularity of the Beta density.
    """
    r, alpha, a, b = theta
    v = 0.5 * (_GL64_NODES + 1.0)
    p = v[None, :] ** (1.0 / a)
    bx = (b + x)[:, None]
    g = -np.expm1(-(r + x)[:, None] * np.log1p(p * (h / (alpha + T))[:, None])) / p
    log_dens = (bx - 1.0) * np.log1p(-p) - np.log(a) - betaln(a, bx)
    return 0.5 * np.sum(_GL64_WEIGHTS * g * np.exp(log_dens), axis=1)


# ---------------------------------------------------------------------------- Pareto/NBD maths


def _log_g(alpha: float, beta: float, p: np.ndarray, q: float, y: np.ndarray) -> np.ndarray:
    """log of G(y) = integral_y^inf (alpha+u)^-p (beta+u)^-q du (see module docstring).

    ``G = (M-m)^-n J(z)``, ``J(z) = integral_0^z t^(n-1) (1-t)^-k dt = z^n/n 2F1(n, k; n+1; z)``.
    Up to ``z = 0.9`` scipy's hyp2f1 sums an all-positive series, fast and to ~1e-15: the direct
    one when ``k <= 1``, Euler's ``(1-z)^(1-k) 2F1(1, n+1-k; n+1; z)`` when ``k > 1``. Above
    0.9 it is 10 to 5000 times slower (worst with integer r or s), returns NaN for about one
    input in five and is off by up to 3e-11 on others (against mpmath), and no transformation
    rescues it: Pfaff's ``z/(z-1)`` lands beyond -1, the ``1-z`` connection formulas cancel or
    degenerate. There ``J(z) = J(0.9) + integral_0.9^z``, the latter by `_log_tail_quad`.
    ``z > 0.9`` needs ``max(alpha, beta) > 10 min(alpha, beta)``: rare for CDNOW-like fits, the
    rule when a fit says customers hardly ever die (beta -> inf, as on a few days of data).
    """
    p, y = np.broadcast_arrays(np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64))
    n = p + q - 1.0
    if alpha >= beta:
        big, small, k = alpha, beta, np.full(p.shape, float(q))
    else:
        big, small, k = beta, alpha, p
    log_big = np.log(big + y)
    log_w = np.log(small + y) - log_big  # log(1 - z), accurate as z -> 1
    z = (big - small) / (big + y)
    tail = z > _SERIES_MAX_Z
    zs, log_ws = np.minimum(z, _SERIES_MAX_Z), np.maximum(log_w, _TAIL_LOG_W)  # series' end
    log_f = np.empty(p.shape)
    with np.errstate(all="ignore"):
        euler = k > 1.0
        for rows, is_euler in ((euler, True), (~euler, False)):
            if not np.any(rows):
                continue
            i = slice(None) if np.all(rows) else rows  # indexing copies: skip it when possible
            ni, ki, zi = n[i], k[i], zs[i]
            if is_euler:
                log_f[i] = np.log(hyp2f1(1.0, ni + 1.0 - ki, ni + 1.0, zi)) + (1.0 - ki) * log_ws[i]
            else:
                log_f[i] = np.log(hyp2f1(ni, ki, ni + 1.0, zi))
        out = -n * log_big - np.log(n) + log_f
        if np.any(tail):
            nt, kt, lwt = n[tail], k[tail], log_w[tail]
            if nt.size > _TAIL_CHUNK:  # 1-2 us an element: once per distinct (p, y) among them
                (nt, kt, lwt), inv = _unique_rows(nt, kt, lwt, always=True)
                log_k = _log_tail_quad(nt, kt, lwt)[inv]
            else:
                log_k = _log_tail_quad(nt, kt, lwt)
            nt = n[tail]
            log_j0 = nt * np.log(_SERIES_MAX_Z) - np.log(nt) + log_f[tail]
            out[tail] = -nt * np.log(big - small) + np.logaddexp(log_j0, log_k)
    return out


def _log_tail_quad(n: np.ndarray, k: np.ndarray, log_w: np.ndarray) -> np.ndarray:
    """log of integral_0.9^(1-w) t^(n-1) (1-t)^-k dt by composite Gauss-Legendre.

    With ``1 - t = w e^sigma`` the integrand is ``e^psi``,
    ``psi = -(k-1) sigma + (n-1) log(1 - w e^sigma)`` on ``[0, L = log(0.1/w)]`` (L reaches
    hundreds when alpha/beta is extreme). ``psi`` is concave when ``n >= 1`` and nearly linear
    otherwise, so the mass sits around one peak: ``sigma = 0`` when ``k >= 1``, the mode
    ``log((1-k)/(n-k)/w)`` or an end when ``k < 1``. Panels of 16 nodes break at 0 and L, 8 and
    40 widths from the peak (width: 1/|psi'| at an end, 1/sqrt(-psi'') at the mode), and around
    where ``(1 - w e^sigma)^(n-1)`` cuts off, ``sigma = -log((n-1) w)`` (or L, if sooner).
    Against mpmath: within 1e-13 for n, k up to 2000 and w down to 1e-16; 12 nodes would
    give only 5e-12. Fixed nodes vectorise over all elements at once, in chunks that keep the
    temporaries in cache, and empty panels are dropped: 1 to 2 us an element.
    """
    out = np.empty(n.shape)
    for i in range(0, n.size, _TAIL_CHUNK):
        part = slice(i, i + _TAIL_CHUNK)
        out[part] = _log_tail_quad_chunk(n[part], k[part], log_w[part])
    return out


def _log_tail_quad_chunk(n: np.ndarray, k: np.ndarray, log_w: np.ndarray) -> np.ndarray:
    n, k, log_w = n[:, None], k[:, None], log_w[:, None]
    length = np.maximum(_TAIL_LOG_W - log_w, 0.0)
    zero = np.zeros_like(length)

    def psi(sigma: np.ndarray) -> np.ndarray:
        return -(k - 1.0) * sigma + (n - 1.0) * np.log1p(-np.exp(log_w + sigma))

    with np.errstate(divide="ignore", invalid="ignore"):
        mode = np.log((1.0 - k) / (n - k)) - log_w  # psi' = 0, when k < 1 < n
        interior = (k < 1.0) & (n > 1.0) & (mode > 0.0) & (mode < length)
        at_end = ~interior & (psi(length) > psi(zero))
        peak = np.where(interior, mode, np.where(at_end, length, zero))
        v = np.exp(log_w + peak)
        slope = np.abs((k - 1.0) + (n - 1.0) * v / (1.0 - v))
        curvature = np.sqrt(np.abs(n - 1.0) * v) / (1.0 - v)
        width = 1.0 / np.maximum(np.where(interior, curvature, slope), 1.0 / length)
        # a mode inside: breaks on both sides; a peak at an end: on the inner side only
        side = np.where(interior, 1.0, np.where(at_end, -1.0, 1.0))
        steps = np.where(interior | (_TAIL_PEAK_STEPS > 0), _TAIL_PEAK_STEPS * side, 0.0)
        cut = np.where(n > 1.0, np.minimum(-log_w - np.log(np.abs(n - 1.0)), length), length)
        # psi concave with the peak at an end: the integrand stays below
        # e^(psi(peak) - |sigma - peak| / width), so nothing past 40 widths counts (e^-40)
        ends = ~interior & (n >= 1.0)
        lo = np.where(ends & at_end, np.maximum(length - _TAIL_REACH * width, 0.0), 0.0)
        hi = np.where(ends & ~at_end, np.minimum(_TAIL_REACH * width, length), length)
        breaks = np.concatenate([lo, hi, peak + steps * width, cut + _TAIL_CUT_STEPS], axis=1)
        breaks = np.sort(np.clip(breaks, lo, hi), axis=1)
        widths = np.diff(breaks, axis=1)
        # drop the empty panels (most of them when the peak is sharp), keeping rows aligned:
        # a row's used panels move to its first columns, the rest pad with empty ones at lo
        used = widths > 0.0
        column = np.cumsum(used, axis=1) - 1
        shape = (n.shape[0], max(int(column[:, -1].max()) + 1, 1))
        starts, packed = np.broadcast_to(lo, shape).copy(), np.zeros(shape)
        row, col = np.nonzero(used)
        starts[row, column[row, col]] = breaks[row, col]
        packed[row, column[row, col]] = widths[row, col]
        log_j = _gauss_legendre_log(n, k, log_w, starts, packed)
        return (1.0 - k[:, 0]) * log_w[:, 0] + log_j


def _gauss_legendre_log(n, k, log_w, starts, widths) -> np.ndarray:
    """log of the sum over panels (``starts``, ``widths``) of 16-node Gauss-Legendre on e^psi."""
    width = widths[:, :, None]
    sigma = width * _GL_UNIT_NODES
    sigma += starts[:, :, None]
    log_f = sigma + log_w[..., None]  # in place from here: these passes are memory-bound
    np.exp(log_f, out=log_f)
    np.negative(log_f, out=log_f)
    np.log1p(log_f, out=log_f)
    log_f *= (n - 1.0)[..., None]
    sigma *= (1.0 - k)[..., None]
    log_f += sigma
    top = log_f.max(axis=(1, 2))
    log_f -= top[:, None, None]
    np.exp(log_f, out=log_f)
    return top + np.log(np.einsum("mpj,j,mp->m", log_f, _GL_UNIT_WEIGHTS, widths))


def _log_int_quad(alpha, beta, p, q, lo, hi) -> np.ndarray:
    half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
    y = mid[:, None] + half[:, None] * _GL_NODES
    log_f = -p[:, None] * np.log(alpha + y) - q * np.log(beta + y)
    return np.log(half) + logsumexp(log_f, b=_GL_WEIGHTS, axis=1)


def _log_int(
    alpha: float,
    beta: float,
    c: float,
    q: float,
    x: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    pairs: _Pairs | None = None,
) -> np.ndarray:
    """log I(c+x, q; lo, hi), elementwise; -inf where lo == hi.

    ``G`` runs once per distinct ``(x, y)`` pair (``pairs``, built here unless given).
    Where ``G(lo)`` and ``G(hi)`` agree to six digits their difference would lose most of
    them, so ``I`` is integrated directly instead (the integrand hardly varies there).
    """
    if pairs is None:
        pairs = _with_pairs(x, lo, hi)
    lg = _log_g(alpha, beta, c + pairs.x, q, pairs.y)
    lg_lo, lg_hi = lg[pairs.lo], lg[pairs.hi]
    diff = np.minimum(lg_hi - lg_lo, 0.0)
    out = lg_lo + _log1mexp(diff)
    near = (diff > -1e-6) & (hi > lo)
    if np.any(near):
        out[near] = _log_int_quad(alpha, beta, c + x[near], q, lo[near], hi[near])
    out[hi <= lo] = -np.inf
    return out


def _pnbd_parts(theta, x, tx, T, pairs=None) -> tuple[np.ndarray, np.ndarray]:
    """log of the 'alive throughout' term and of the 'died in (t_x, T]' term, without A1."""
    r, alpha, s, beta = theta
    log_alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    log_died = np.log(s) + _log_int(alpha, beta, r, s + 1.0, x, tx, T, pairs)
    return log_alive, log_died


def _pnbd_ll(theta: np.ndarray, d: _Data) -> np.ndarray:
    r, alpha, s, beta = theta
    head = (gammaln(r + d.xu) - gammaln(r) + r * np.log(alpha) + s * np.log(beta))[d.xi]
    log_alive, log_died = _pnbd_parts(theta, d.x, d.tx, d.T, d.pairs)
    return head + np.logaddexp(log_alive, log_died)


def _pnbd_p_alive(theta, x, tx, T) -> np.ndarray:
    log_alive, log_died = _pnbd_parts(theta, x, tx, T)
    return expit(log_alive - log_died)


# ---------------------------------------------------------------------------- public queries


def _theta(params: BGNBDParams | ParetoNBDParams, cls: type) -> np.ndarray:
    if not isinstance(params, cls):
        raise ConfigError(f"expected {cls.__name__}, got {type(params).__name__}")
    return np.array(astuple(params), dtype=np.float64)


def bgnbd_loglik(params: BGNBDParams, rfm: RFM) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood (unweighted), in the data's time unit.

    Examples
    --------
    >>> rfm = RFM(np.array([2.0]), np.array([30.43]), np.array([38.86]))
    >>> float(bgnbd_loglik(BGNBDParams(0.243, 4.414, 0.793, 2.426), rfm)[0])  # doctest: +ELLIPSIS
    -9.4...
    """
    theta = _theta(params, BGNBDParams)
    return _bgnbd_ll(theta, _data_from_rfm(rfm, compress=False, pairs=False))


def pareto_nbd_loglik(params: ParetoNBDParams, rfm: RFM) -> np.ndarray:
    """Per-customer Pareto/NBD log-likelihood (unweighted), in the data's time unit."""
    theta = _theta(params, ParetoNBDParams)
    return _pnbd_ll(theta, _data_from_rfm(rfm, compress=False, pairs=False))


def bgnbd_p_alive(params: BGNBDParams, rfm: RFM) -> np.ndarray:
    """P(alive at T | x, t_x, T) under BG/NBD; exactly 1 for customers with no repeat purchase."""
    return _bgnbd_p_alive(_theta(params, BGNBDParams), rfm.frequency, rfm.recency, rfm.age)


def pareto_nbd_p_alive(params: ParetoNBDParams, rfm: RFM) -> np.ndarray:
    """P(alive at T | x, t_x, T) under Pareto/NBD."""
    return _pnbd_p_alive(_theta(params, ParetoNBDParams), rfm.frequency, rfm.recency, rfm.age)


def bgnbd_expected_transactions(
    params: BGNBDParams, rfm: RFM, horizon: float | np.ndarray
) -> np.ndarray:
    """Conditional expected number of transactions in ``(T, T+horizon]`` under BG/NBD.

    Parameters
    ----------
    params : BGNBDParams
        Fitted parameters, in the time unit of ``rfm``.
    rfm : RFM
        Customers' calibration summaries.
    horizon : float or np.ndarray
        Length of the prediction window (same unit), one value or one per customer.
    """
    theta = _theta(params, BGNBDParams)
    h = _horizon(horizon, len(rfm))
    x, T = rfm.frequency, rfm.age
    alive = _bgnbd_p_alive(theta, x, rfm.recency, T)
    (xu, Tu, hu), inv = _unique_rows(x, T, h)  # hyp2f1 once per distinct (x, T, h)
    return alive * _bgnbd_alive_expected(theta, xu, Tu, hu)[inv]


def pareto_nbd_expected_transactions(
    params: ParetoNBDParams, rfm: RFM, horizon: float | np.ndarray
) -> np.ndarray:
    """Conditional expected number of transactions in ``(T, T+horizon]`` under Pareto/NBD."""
    r, alpha, s, beta = theta = _theta(params, ParetoNBDParams)
    h = _horizon(horizon, len(rfm))
    x, T = rfm.frequency, rfm.age
    log_q = np.log(beta + T) - np.log(beta + T + h)  # <= 0
    # (1 - ((beta+T)/(beta+T+h))^(s-1)) / (s-1), with its s -> 1 limit -log_q
    frac = -log_q if s == 1.0 else -np.expm1((s - 1.0) * log_q) / (s - 1.0)
    alive = _pnbd_p_alive(theta, x, rfm.recency, T)
    return alive * (r + x) * (beta + T) / (alpha + T) * frac


def bgnbd_p_any_transaction(
    params: BGNBDParams, rfm: RFM, horizon: float | np.ndarray
) -> np.ndarray:
    """P(at least one transaction in ``(T, T+horizon]``) under BG/NBD.

    Death only follows a purchase, so an alive customer buys in the window iff the next
    purchase comes within it: ``P(alive) * (1 - ((alpha+T)/(alpha+T+h))^(r+x))``.
    """
    _theta(params, BGNBDParams)
    return p_any_transaction_curve(params, rfm, [horizon])[0]


def pareto_nbd_p_any_transaction(
    params: ParetoNBDParams, rfm: RFM, horizon: float | np.ndarray
) -> np.ndarray:
    """P(at least one transaction in ``(T, T+horizon]``) under Pareto/NBD.

    An alive customer buys in the window iff the first purchase comes before both death and
    the window's end; averaging over the posterior rates gives
    ``(r+x) (alpha+T)^(r+x) (beta+T)^s I(r+x+1, s; T, T+h)`` (module docstring).
    """
    _theta(params, ParetoNBDParams)
    return p_any_transaction_curve(params, rfm, [horizon])[0]


def p_any_transaction_curve(
    params: BGNBDParams | ParetoNBDParams,
    rfm: RFM,
    horizons: Sequence[float | np.ndarray],
) -> np.ndarray:
    """`bgnbd_p_any_transaction` / `pareto_nbd_p_any_transaction` for several horizons.

    Returns shape ``(len(horizons), len(rfm))``; each horizon is a number or one per
    customer. P(alive) is computed once for all of them: for Pareto/NBD that is half of
    each horizon's work.
    """
    hs = [_horizon(h, len(rfm)) for h in horizons]
    x, tx, T = rfm.frequency, rfm.recency, rfm.age
    out = np.empty((len(hs), len(rfm)))
    if isinstance(params, ParetoNBDParams):
        r, alpha, s, beta = theta = _theta(params, ParetoNBDParams)
        alive = _pnbd_p_alive(theta, x, tx, T)
        base = np.log(r + x) + (r + x) * np.log(alpha + T) + s * np.log(beta + T)
        for i, h in enumerate(hs):
            log_buy = base + _log_int(alpha, beta, r + 1.0, s, x, T, T + h)
            out[i] = np.clip(alive * np.exp(log_buy), 0.0, 1.0)
    else:
        r, alpha, _, _ = theta = _theta(params, BGNBDParams)
        alive = _bgnbd_p_alive(theta, x, tx, T)
        for i, h in enumerate(hs):
            buy = -np.expm1((r + x) * (np.log(alpha + T) - np.log(alpha + T + h)))
            out[i] = np.clip(alive * buy, 0.0, 1.0)
    return out


# ---------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class _Spec:
    """What the generic fitter needs to know about one model."""

    name: str
    names: tuple[str, ...]
    is_time: tuple[bool, ...]  # parameters measured in time units (rescaled with the data)
    loglik: Callable[[np.ndarray, _Data], np.ndarray]
    starts: Callable[[_Data], list[np.ndarray]]
    cls: type
    pairs: bool


def _rate_start(d: _Data) -> tuple[float, float]:
    """Gamma(r, alpha) moment guess from x/T, netting out Poisson noise."""
    pos = d.T > 0
    w = d.w[pos]
    if w.sum() <= 0:
        return 1.0, 1.0
    rho = d.x[pos] / d.T[pos]
    m = float(np.average(rho, weights=w))
    v = float(np.average((rho - m) ** 2, weights=w) - np.average(rho / d.T[pos], weights=w))
    if not (m > 0 and v > 0):
        return 1.0, 1.0 / max(m, 1e-3)
    r = float(np.clip(m * m / v, 0.05, 20.0))
    return r, r / m


def _bgnbd_starts(d: _Data) -> list[np.ndarray]:
    r, alpha = _rate_start(d)
    return [np.array([r, alpha, 1.0, 1.0]), np.ones(4), np.array([r, alpha, 0.5, 5.0])]


def _pnbd_starts(d: _Data) -> list[np.ndarray]:
    r, alpha = _rate_start(d)
    t_mean = float(np.average(d.T, weights=d.w)) or 1.0
    return [
        np.array([r, alpha, 1.0, t_mean]),
        np.ones(4),
        np.array([r, alpha, 0.5, 3.0 * t_mean]),
    ]


_BGNBD = _Spec(
    "BG/NBD",
    ("r", "alpha", "a", "b"),
    (False, True, False, False),
    _bgnbd_ll,
    _bgnbd_starts,
    BGNBDParams,
    pairs=False,
)
_PNBD = _Spec(
    "Pareto/NBD",
    ("r", "alpha", "s", "beta"),
    (False, True, False, True),
    _pnbd_ll,
    _pnbd_starts,
    ParetoNBDParams,
    pairs=True,
)


class _Attempt(NamedTuple):
    fun: float
    z: np.ndarray
    how: str
    message: str


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread while fitting.

    The fit's numerical work is elementwise NumPy; BLAS only serves L-BFGS-B's 4-vectors
    and 4x4 matrices, where OpenBLAS's thread start-up costs ~2 ms a call on a busy two-core
    machine: a fit of 100 customers took 0.4 s instead of 0.08 s. threadpoolctl comes with
    scikit-learn; without it nothing is limited.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _weighted_sum(w: np.ndarray, values: np.ndarray) -> float:
    """``sum(w * values)``, not ``np.dot``: OpenBLAS's threaded dot product took ~8 ms for
    100k values on a busy two-core machine (0.02 ms on one thread), more than the likelihood.
    """
    return float(np.sum(w * values))


class _Objective:
    """Weighted mean negative log-likelihood over log-parameters (plus the penalty).

    Values and gradients are remembered for recent points: L-BFGS-B asks for the value and
    the gradient separately, and the checks after it ask for the gradient at its answer again,
    each a full pass over the data (a central-difference gradient is eight).
    """

    def __init__(self, spec: _Spec, data: _Data, penalizer: float) -> None:
        self.spec, self.data, self.penalizer = spec, data, penalizer
        self.wsum = float(data.w.sum())
        self._memo: dict[tuple[bytes, float], float | np.ndarray] = {}

    def _remember(self, key: tuple[bytes, float], value):
        if len(self._memo) >= _MEMO_SIZE:
            del self._memo[next(iter(self._memo))]
        self._memo[key] = value
        return value

    def __call__(self, z: np.ndarray) -> float:
        key = (np.asarray(z, dtype=np.float64).tobytes(), 0.0)
        if key in self._memo:
            return self._memo[key]
        theta = np.exp(np.clip(z, _LOG_LO, _LOG_HI))
        with np.errstate(all="ignore"):
            ll = self.spec.loglik(theta, self.data)
            val = -_weighted_sum(self.data.w, ll) / self.wsum
            val += self.penalizer * float(np.sum(theta * theta))
        return self._remember(key, val if np.isfinite(val) else _BAD)

    def grad(self, z: np.ndarray, h: float = 1e-6) -> np.ndarray:
        key = (np.asarray(z, dtype=np.float64).tobytes(), h)
        if key not in self._memo:
            g = np.empty_like(z)
            for i in range(z.size):
                e = np.zeros_like(z)
                e[i] = h
                g[i] = (self(z + e) - self(z - e)) / (2.0 * h)
            self._remember(key, g)
        return self._memo[key].copy()

    def hessian(self, z: np.ndarray, h: float = 1e-4) -> np.ndarray:
        k = z.size
        eye = np.eye(k) * h
        f0 = self(z)
        hess = np.empty((k, k))
        for i in range(k):
            hess[i, i] = (self(z + eye[i]) - 2.0 * f0 + self(z - eye[i])) / (h * h)
            for j in range(i):
                hess[i, j] = hess[j, i] = (
                    self(z + eye[i] + eye[j])
                    - self(z + eye[i] - eye[j])
                    - self(z - eye[i] + eye[j])
                    + self(z - eye[i] - eye[j])
                ) / (4.0 * h * h)
        return hess


def _lbfgsb(obj: _Objective, z0: np.ndarray, how: str) -> _Attempt:
    res = minimize(
        obj,
        np.clip(z0, _LOG_LO, _LOG_HI),
        jac=obj.grad,
        method="L-BFGS-B",
        bounds=[(_LOG_LO, _LOG_HI)] * z0.size,
        options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-8},
    )
    return _Attempt(float(res.fun), np.asarray(res.x), f"L-BFGS-B from {how}", str(res.message))


def _nelder_mead(obj: _Objective, z0: np.ndarray, how: str) -> _Attempt:
    res = minimize(
        obj,
        np.clip(z0, _LOG_LO, _LOG_HI),
        method="Nelder-Mead",
        options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-12, "adaptive": True},
    )
    z = np.clip(res.x, _LOG_LO, _LOG_HI)
    return _Attempt(obj(z), z, f"Nelder-Mead from {how}", str(res.message))


def _is_clean(obj: _Objective, att: _Attempt) -> bool:
    return (
        att.fun < _BAD
        and not _at_bound(att.z).any()
        and float(np.max(np.abs(obj.grad(att.z)))) < _GRAD_TOL
    )


def _at_bound(z: np.ndarray) -> np.ndarray:
    return (z <= _LOG_LO + 1e-3) | (z >= _LOG_HI - 1e-3)


def _search(obj: _Objective, starts: Sequence[tuple[np.ndarray, str]]) -> list[_Attempt]:
    """L-BFGS-B from each start until one is clean; then Nelder-Mead plus polish if none is."""
    attempts: list[_Attempt] = []
    for theta0, how in starts:
        z0 = np.log(np.clip(theta0, _PARAM_MIN, _PARAM_MAX))
        if obj(z0) >= _BAD:
            attempts.append(_Attempt(_BAD, z0, f"L-BFGS-B from {how}", "likelihood not finite"))
            continue
        att = _lbfgsb(obj, z0, how)
        attempts.append(att)
        logger.debug("%s: %s -> %.10g (%s)", obj.spec.name, att.how, att.fun, att.message)
        if _is_clean(obj, att):
            return attempts
    seeds = sorted(attempts, key=lambda a: a.fun)[:2]
    for seed in seeds:
        nm = _nelder_mead(obj, seed.z, seed.how.removeprefix("L-BFGS-B from "))
        attempts.append(nm)
        if nm.fun < _BAD:
            polished = _lbfgsb(obj, nm.z, nm.how)
            attempts.append(polished)
            if _is_clean(obj, polished):
                break
    return attempts


def _subsample(data: _Data, rows: int, pairs: bool) -> _Data:
    """Random rows (seeded, so fits are reproducible), for a cheap warm start."""
    rng = np.random.default_rng(0)
    keep = rng.random(data.x.size) < rows / data.x.size
    x, tx, T, w = data.x[keep], data.tx[keep], data.T[keep], data.w[keep]
    return _make_data(x, tx, T, w, pairs=pairs)


def _fail_message(spec: _Spec, data: _Data, attempts: list[_Attempt]) -> str:
    n = data.w.sum()
    repeaters = data.w[data.x > 0].sum()
    tried = "; ".join(f"{a.how}: {a.message}" for a in attempts) or "no start was usable"
    return (
        f"{spec.name} fit failed on {n:,.0f} customers ({repeaters:,.0f} with repeat purchases): "
        f"every attempt ended where the likelihood is not finite ({tried}). Likely causes and "
        "fixes:\n"
        "  1. Times in an extreme unit (e.g. seconds or years): express recency and age in "
        "days or weeks.\n"
        "  2. Too few repeat buyers to estimate a dropout process: use a longer calibration "
        "period or more customers.\n"
        "  3. Inconsistent summaries (recency and age from different cut-offs): rebuild them "
        "with rfm_from_transactions.\n"
        "  4. If the data are right but tiny, pass penalizer=0.001 (or larger) to keep the "
        "parameters finite."
    )


def _fit(
    spec: _Spec, rfm: RFM, penalizer: float, initial: BGNBDParams | ParetoNBDParams | None
) -> tuple[np.ndarray, float]:
    if not isinstance(rfm, RFM):
        raise ConfigError(f"expected an RFM, got {type(rfm).__name__}")
    if not (np.isfinite(penalizer) and penalizer >= 0):
        raise ConfigError(f"penalizer must be a finite number >= 0, got {penalizer!r}")
    if initial is not None and not isinstance(initial, spec.cls):
        raise ConfigError(f"initial must be {spec.cls.__name__}, got {type(initial).__name__}")
    with _one_blas_thread():  # see _one_blas_thread
        raw = _data_from_rfm(rfm, compress=True, pairs=False)
        if raw.w.sum() <= 0:
            raise ConfigError(f"{spec.name} needs at least one customer with positive weight")
        t_max = float(raw.T.max())
        scale = _TIME_SCALE_TARGET / t_max if t_max > 0 else 1.0
        to_scaled = np.where(spec.is_time, scale, 1.0)
        x, tx, T = raw.x, raw.tx * scale, raw.T * scale
        pairs = _with_pairs(x, tx, T, always=True) if spec.pairs else None
        data = _Data(x, tx, T, raw.w, raw.xu, raw.xi, pairs)
        obj = _Objective(spec, data, penalizer)

        starts: list[tuple[np.ndarray, str]] = []
        if initial is not None:
            starts.append((np.array(astuple(initial)) * to_scaled, "the given initial values"))
        curvature = None  # Hessian of the mean NLL from a subsample, when the data are large
        if data.x.size > _WARM_START_ROWS:
            sub = _subsample(data, _WARM_START_ROWS // 2, spec.pairs)
            sub_obj = _Objective(spec, sub, penalizer)
            sub_best = min(
                _search(sub_obj, [(s, "a data-driven start") for s in spec.starts(sub)]),
                key=lambda a: a.fun,
            )
            if sub_best.fun < _BAD:
                curvature = sub_obj.hessian(sub_best.z)
                z = _newton_polish(obj, sub_best.z, curvature)
                starts.append((np.exp(z), "a subsample fit refined by Newton steps"))
        labels = ("a data-driven start", "all-ones (lifetimes' default)", "a spread-out start")
        starts += list(zip(spec.starts(data), labels, strict=True))

        attempts = _search(obj, starts)
        best = min(attempts, key=lambda a: a.fun)
        if best.fun >= _BAD:
            raise ConvergenceError(_fail_message(spec, data, attempts))
        _warn_if_doubtful(spec, obj, best, penalizer, curvature)

        theta = np.exp(np.clip(best.z, _LOG_LO, _LOG_HI)) / to_scaled
        loglik = _weighted_sum(raw.w, spec.loglik(theta, raw))
        return theta, loglik


def _newton_polish(obj: _Objective, z: np.ndarray, hess: np.ndarray) -> np.ndarray:
    """Newton steps on the full data with a subsample's Hessian (it estimates the same mean).

    A few gradients of the full objective then replace the dozens of evaluations L-BFGS-B
    would spend rebuilding curvature, which matters when each evaluation costs a second.
    """
    if not np.all(np.isfinite(hess)) or np.linalg.eigvalsh(hess).min() <= 0:
        return z
    f = obj(z)
    for _ in range(10):
        g = obj.grad(z)
        if np.max(np.abs(g)) < 1e-8:
            break
        step = -np.linalg.solve(hess, g)
        for t in (1.0, 0.5, 0.25, 0.125):
            z_new = np.clip(z + t * step, _LOG_LO, _LOG_HI)
            f_new = obj(z_new)
            if f_new < f:
                break
        else:
            break
        z, f = z_new, f_new
    return z


def _warn_if_doubtful(
    spec: _Spec,
    obj: _Objective,
    best: _Attempt,
    penalizer: float,
    curvature: np.ndarray | None,
) -> None:
    """Warn (never raise) when the optimum is at a bound, not stationary or not identified.

    ``curvature`` is a subsample's Hessian for large data (its eigenvalues estimate the full
    data's); otherwise the Hessian is computed here.
    """
    problems = []
    if not np.any(obj.data.x > 0):
        problems.append(
            "no customer made a repeat purchase, so purchase rates and dropout cannot be told apart"
        )
    hit = _at_bound(best.z)
    if hit.any():
        names = ", ".join(
            f"{name} -> {'0' if z < 0 else 'infinity'}"
            for name, z, h in zip(spec.names, best.z, hit, strict=True)
            if h
        )
        problems.append(f"the likelihood keeps rising towards the edge ({names})")
    extreme = ~hit & (np.abs(best.z) > _EXTREME_LOG)
    if extreme.any():
        names = ", ".join(name for name, e in zip(spec.names, extreme, strict=True) if e)
        problems.append(
            f"the fit ran off to extreme values ({names}) along a ridge where the likelihood "
            "barely changes, so the parameters are not identified by these data"
        )
    grad = obj.grad(best.z)
    if not hit.any() and np.max(np.abs(grad)) >= _GRAD_TOL:
        problems.append(f"the gradient is still large (max |g| = {np.max(np.abs(grad)):.2g})")
    if not hit.any():
        hess = obj.hessian(best.z) if curvature is None else curvature
        eig = np.linalg.eigvalsh(hess)
        if eig.min() < _FLAT_TOL:
            problems.append(
                f"the likelihood is flat in some direction (smallest curvature {eig.min():.2g}), "
                "so the parameters are not identified by these data"
            )
    if problems:
        fix = (
            "more customers or a longer calibration period"
            if penalizer > 0
            else "more customers, a longer calibration period, or penalizer=0.001"
        )
        warnings.warn(
            f"{spec.name} fit is doubtful: {'; '.join(problems)} ({best.how}). "
            f"Treat these parameters with care; fix with {fix}.",
            ConvergenceWarning,
            stacklevel=4,
        )


def fit_bgnbd(
    rfm: RFM, *, penalizer: float = 0.0, initial: BGNBDParams | None = None
) -> tuple[BGNBDParams, float]:
    """Fit BG/NBD by maximum likelihood.

    Parameters
    ----------
    rfm : RFM
        Calibration summaries (weights count identical customers).
    penalizer : float
        L2 penalty on the parameters (in rescaled time, as lifetimes); 0 reproduces the
        published estimates.
    initial : BGNBDParams, optional
        First starting point to try, in the data's time unit.

    Returns
    -------
    params : BGNBDParams
        Estimates in the data's time unit.
    loglik : float
        Weighted sum of per-customer log-likelihoods at ``params``, without the penalty.

    Raises
    ------
    ConvergenceError
        If every attempt ends where the likelihood is not finite.
    ConfigError
        If ``penalizer`` is negative or there is no customer.

    Warns
    -----
    ConvergenceWarning
        If the optimum is at a parameter bound, not stationary, or not identified.
    """
    theta, loglik = _fit(_BGNBD, rfm, penalizer, initial)
    return BGNBDParams(*map(float, theta)), loglik


def fit_pareto_nbd(
    rfm: RFM, *, penalizer: float = 0.0, initial: ParetoNBDParams | None = None
) -> tuple[ParetoNBDParams, float]:
    """Fit Pareto/NBD by maximum likelihood; same contract as `fit_bgnbd`."""
    theta, loglik = _fit(_PNBD, rfm, penalizer, initial)
    return ParetoNBDParams(*map(float, theta)), loglik
