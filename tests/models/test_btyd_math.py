"""BG/NBD and Pareto/NBD maths: published CDNOW estimates, probability laws, scale, failures."""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from scipy import integrate, special, stats

from ebbtide.errors import ConfigError, ConvergenceError, ConvergenceWarning
from ebbtide.models import btyd_math as bm
from ebbtide.models.btyd_math import (
    RFM,
    BGNBDParams,
    ParetoNBDParams,
    bgnbd_expected_transactions,
    bgnbd_loglik,
    bgnbd_p_alive,
    bgnbd_p_any_transaction,
    fit_bgnbd,
    fit_pareto_nbd,
    pareto_nbd_expected_transactions,
    pareto_nbd_loglik,
    pareto_nbd_p_alive,
    pareto_nbd_p_any_transaction,
    rfm_from_transactions,
)

EPOCH = np.datetime64("1997-01-01", "D")
CALIBRATION_END = int((np.datetime64("1997-09-30", "D") - EPOCH).astype(int))  # inclusive
HOLDOUT_END = int((np.datetime64("1998-06-30", "D") - EPOCH).astype(int))  # inclusive
HOLDOUT_WEEKS = (HOLDOUT_END - CALIBRATION_END) / 7.0  # 39 weeks

# Fader, Hardie & Lee (2005) on the 2,357-customer CDNOW sample, weeks 1-39.
PUBLISHED_BGNBD = BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
PUBLISHED_BGNBD_LL = -9582.4
PUBLISHED_PNBD = ParetoNBDParams(r=0.553, alpha=10.578, s=0.606, beta=11.669)
PUBLISHED_PNBD_LL = -9595.0


class Cdnow(NamedTuple):
    ids: np.ndarray
    rfm: RFM
    holdout: np.ndarray  # distinct purchase days per customer in the 39 holdout weeks


def _days_since_epoch(yyyymmdd: np.ndarray) -> np.ndarray:
    year, month, day = yyyymmdd // 10000, yyyymmdd // 100 % 100, yyyymmdd % 100
    months = (year - 1970) * 12 + (month - 1)
    dates = months.astype("datetime64[M]").astype("datetime64[D]") + (day - 1)
    return (dates - EPOCH).astype(np.int64)


@pytest.fixture(scope="module")
def cdnow(datasets: Path) -> Cdnow:
    path = datasets / "cdnow" / "CDNOW_sample.txt"
    # master_id, sample_id, date YYYYMMDD, number_of_cds, dollar_value
    raw = np.loadtxt(path, usecols=(0, 2), dtype=np.int64)
    customer, day = raw[:, 0], _days_since_epoch(raw[:, 1])
    ids, rfm = rfm_from_transactions(customer, day, CALIBRATION_END, unit_days=7.0)
    hold = (day > CALIBRATION_END) & (day <= HOLDOUT_END)
    pairs = np.unique(np.stack([customer[hold], day[hold]], axis=1), axis=0)
    holdout = np.bincount(np.searchsorted(ids, pairs[:, 0]), minlength=ids.size)
    return Cdnow(ids, rfm, holdout)


@pytest.fixture(scope="module")
def bgnbd_fit(cdnow: Cdnow) -> tuple[BGNBDParams, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        return fit_bgnbd(cdnow.rfm)


@pytest.fixture(scope="module")
def pnbd_fit(cdnow: Cdnow) -> tuple[ParetoNBDParams, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        return fit_pareto_nbd(cdnow.rfm)


def _assert_params_close(got, want, rel: float) -> None:
    for field in dataclasses.fields(want):
        g, w = getattr(got, field.name), getattr(want, field.name)
        assert g == pytest.approx(w, rel=rel), f"{field.name}: got {g:.4f}, published {w}"


# ---------------------------------------------------------------------------- RFM summaries


def test_rfm_from_transactions_merges_days_and_cuts_at_end_day_inclusive() -> None:
    customer = np.array(["b", "a", "a", "a", "b", "a", "c", "a"])
    day = np.array([3, 0, 0, 7, 10, 14, 15, 14])  # "a" buys twice on day 0 and on day 14
    ids, rfm = rfm_from_transactions(customer, day, end_day=14, unit_days=7.0)
    assert ids.tolist() == ["a", "b"]  # "c" first bought after the end: not in calibration
    assert rfm.frequency.tolist() == [2.0, 1.0]  # days 0, 7, 14 -> 2 repeats; the end is kept
    assert rfm.recency.tolist() == [2.0, 1.0]
    assert rfm.age.tolist() == [2.0, 11 / 7]


def test_rfm_from_transactions_handles_no_calibration_rows() -> None:
    ids, rfm = rfm_from_transactions(np.array([1, 2]), np.array([5, 6]), end_day=0)
    assert ids.size == 0 and len(rfm) == 0


def test_cdnow_summary_is_the_published_calibration_data(cdnow: Cdnow) -> None:
    rfm = cdnow.rfm
    assert cdnow.ids.size == 2357
    assert int((rfm.frequency == 0).sum()) == 1411  # no repeat purchase in weeks 1-39
    first = np.searchsorted(cdnow.ids, 4)  # master id 4, the first row of FHL's data
    assert (rfm.frequency[first], rfm.recency[first], rfm.age[first]) == pytest.approx(
        (2, 30.43, 38.86), abs=0.005
    )
    assert int(cdnow.holdout.sum()) == 1882


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frequency": [1.0], "recency": [5.0], "age": [4.0]}, "recency must not exceed age"),
        ({"frequency": [0.0], "recency": [1.0], "age": [4.0]}, "recency must be 0"),
        ({"frequency": [-1.0], "recency": [0.0], "age": [4.0]}, "frequency must be >= 0"),
        ({"frequency": [1.5], "recency": [1.0], "age": [4.0]}, "whole number"),
        ({"frequency": [1.0], "recency": [np.nan], "age": [4.0]}, "finite"),
        ({"frequency": [1.0, 2.0], "recency": [1.0], "age": [4.0]}, "one length"),
    ],
)
def test_rfm_rejects_inconsistent_summaries(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RFM(**{k: np.asarray(v) for k, v in kwargs.items()})


def test_bad_parameters_and_penalizer_are_config_errors(cdnow: Cdnow) -> None:
    with pytest.raises(ConfigError, match="alpha must be a positive"):
        BGNBDParams(r=1.0, alpha=-1.0, a=1.0, b=1.0)
    with pytest.raises(ConfigError, match="penalizer"):
        fit_bgnbd(cdnow.rfm, penalizer=-0.1)
    with pytest.raises(ConfigError, match="horizon"):
        bgnbd_p_any_transaction(PUBLISHED_BGNBD, cdnow.rfm, -1.0)


# ---------------------------------------------------------------------------- published fits


def test_bgnbd_reproduces_fader_hardie_lee_on_cdnow(bgnbd_fit) -> None:
    params, loglik = bgnbd_fit
    _assert_params_close(params, PUBLISHED_BGNBD, rel=0.01)
    assert loglik == pytest.approx(PUBLISHED_BGNBD_LL, abs=0.5)


def test_pareto_nbd_reproduces_published_estimates_on_cdnow(pnbd_fit) -> None:
    params, loglik = pnbd_fit
    _assert_params_close(params, PUBLISHED_PNBD, rel=0.01)
    assert loglik == pytest.approx(PUBLISHED_PNBD_LL, abs=0.5)


@pytest.mark.parametrize("unit_days", [1.0, 1 / 24])
def test_fits_do_not_depend_on_the_time_unit(cdnow: Cdnow, bgnbd_fit, pnbd_fit, unit_days) -> None:
    """Days or hours instead of weeks: same shapes, rates rescaled, LL shifted by x log(7/u)."""
    factor = 7.0 / unit_days
    rfm = RFM(cdnow.rfm.frequency, cdnow.rfm.recency * factor, cdnow.rfm.age * factor)
    shift = cdnow.rfm.frequency.sum() * np.log(factor)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        bg, bg_ll = fit_bgnbd(rfm)
        pn, pn_ll = fit_pareto_nbd(rfm)
    want_bg = dataclasses.replace(bgnbd_fit[0], alpha=bgnbd_fit[0].alpha * factor)
    want_pn = dataclasses.replace(
        pnbd_fit[0], alpha=pnbd_fit[0].alpha * factor, beta=pnbd_fit[0].beta * factor
    )
    _assert_params_close(bg, want_bg, rel=1e-4)
    _assert_params_close(pn, want_pn, rel=1e-4)
    assert bg_ll + shift == pytest.approx(bgnbd_fit[1], abs=1e-6)
    assert pn_ll + shift == pytest.approx(pnbd_fit[1], abs=1e-6)


def test_holdout_totals_are_within_15_percent_of_actual(cdnow: Cdnow, bgnbd_fit, pnbd_fit) -> None:
    actual = cdnow.holdout.sum()
    bg = bgnbd_expected_transactions(bgnbd_fit[0], cdnow.rfm, HOLDOUT_WEEKS).sum()
    pn = pareto_nbd_expected_transactions(pnbd_fit[0], cdnow.rfm, HOLDOUT_WEEKS).sum()
    assert bg == pytest.approx(1653, abs=2)  # lifetimes 0.11.3 predicts 1,653 vs 1,882 actual
    assert bg == pytest.approx(actual, rel=0.15)
    assert pn == pytest.approx(actual, rel=0.15)


def test_weights_give_the_same_fit_as_repeated_rows() -> None:
    x = np.array([0.0, 1.0, 3.0, 0.0, 2.0, 5.0])
    tx = np.array([0.0, 5.0, 20.0, 0.0, 30.0, 12.0])
    T = np.array([10.0, 20.0, 30.0, 35.0, 38.0, 38.0])
    counts = np.array([40, 12, 7, 30, 9, 2])
    weighted = RFM(x, tx, T, weights=counts.astype(float))
    repeated = RFM(np.repeat(x, counts), np.repeat(tx, counts), np.repeat(T, counts))
    for fit in (fit_bgnbd, fit_pareto_nbd):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # 100 customers: may be flat
            (p1, ll1), (p2, ll2) = fit(weighted), fit(repeated)
        assert ll1 == pytest.approx(ll2, abs=1e-6)
        assert np.allclose(dataclasses.astuple(p1), dataclasses.astuple(p2), rtol=1e-4)


# ---------------------------------------------------------------------------- formulas


def test_pareto_nbd_loglik_matches_the_hypergeometric_formula(cdnow: Cdnow) -> None:
    """Fader-Hardie's note, both branches, evaluated plainly with scipy (no log tricks)."""
    rows = np.r_[0:40, np.argsort(-cdnow.rfm.frequency)[:10]]
    x, tx, T = (a[rows] for a in (cdnow.rfm.frequency, cdnow.rfm.recency, cdnow.rfm.age))
    sub = RFM(x, tx, T)
    for params in (PUBLISHED_PNBD, dataclasses.replace(PUBLISHED_PNBD, alpha=14.0)):
        r, alpha, s, beta = dataclasses.astuple(params)
        rsx = r + s + x
        if alpha >= beta:
            big, second = alpha, s + 1
        else:
            big, second = beta, r + x
        z = abs(alpha - beta) / (big + np.stack([tx, T]))
        f = special.hyp2f1(rsx, second, rsx + 1, z) / (big + np.stack([tx, T])) ** rsx
        a0 = f[0] - f[1]
        ref = (
            special.gammaln(r + x)
            - special.gammaln(r)
            + r * np.log(alpha)
            + s * np.log(beta)
            + np.log((alpha + T) ** -(r + x) * (beta + T) ** -s + s / rsx * a0)
        )
        np.testing.assert_allclose(pareto_nbd_loglik(params, sub), ref, rtol=1e-9)


def test_bgnbd_loglik_matches_the_paper_formula(cdnow: Cdnow) -> None:
    r, alpha, a, b = dataclasses.astuple(PUBLISHED_BGNBD)
    x, tx, T = cdnow.rfm.frequency, cdnow.rfm.recency, cdnow.rfm.age
    betaf = special.beta
    lam = special.gamma(r + x) * alpha**r / special.gamma(r)
    ref = np.log(
        betaf(a, b + x) / betaf(a, b) * lam / (alpha + T) ** (r + x)
        + (x > 0) * betaf(a + 1, b + x - 1) / betaf(a, b) * lam / (alpha + tx) ** (r + x)
    )
    np.testing.assert_allclose(bgnbd_loglik(PUBLISHED_BGNBD, cdnow.rfm), ref, rtol=1e-10)


def test_conditional_expectations_match_numerical_integrals(cdnow: Cdnow) -> None:
    """E[Y(h) | alive] as an integral over the posterior, for a spread of customers."""
    rows = np.r_[0:15, np.argsort(-cdnow.rfm.frequency)[:5]]
    x, tx, T = (a[rows] for a in (cdnow.rfm.frequency, cdnow.rfm.recency, cdnow.rfm.age))
    sub, h = RFM(x, tx, T), 26.0
    r, alpha, a, b = dataclasses.astuple(PUBLISHED_BGNBD)
    bg = bgnbd_expected_transactions(PUBLISHED_BGNBD, sub, h) / bgnbd_p_alive(PUBLISHED_BGNBD, sub)
    for i in range(rows.size):
        # alive: p ~ Beta(a, b+x), lambda ~ Gamma(r+x, alpha+T); E[Y | p, lambda] = (1-e^-lpt)/p
        def integrand(p: float, i: int = i) -> float:
            laplace = ((alpha + T[i]) / (alpha + T[i] + p * h)) ** (r + x[i])
            return (1 - laplace) / p * stats.beta.pdf(p, a, b + x[i])

        assert bg[i] == pytest.approx(integrate.quad(integrand, 0, 1, limit=200)[0], rel=1e-7)

    r, alpha, s, beta = dataclasses.astuple(PUBLISHED_PNBD)
    pn = pareto_nbd_expected_transactions(PUBLISHED_PNBD, sub, h) / pareto_nbd_p_alive(
        PUBLISHED_PNBD, sub
    )
    buy = pareto_nbd_p_any_transaction(PUBLISHED_PNBD, sub, h) / pareto_nbd_p_alive(
        PUBLISHED_PNBD, sub
    )
    for i in range(rows.size):
        rate = (r + x[i]) / (alpha + T[i])  # E[lambda | alive]

        def survival(u: float, i: int = i) -> float:  # E[e^-mu u | alive]
            return ((beta + T[i]) / (beta + T[i] + u)) ** s

        def first_purchase(u: float, i: int = i, rate: float = rate) -> float:
            return rate * ((alpha + T[i]) / (alpha + T[i] + u)) ** (r + x[i] + 1) * survival(u)

        assert pn[i] == pytest.approx(rate * integrate.quad(survival, 0, h)[0], rel=1e-9)
        assert buy[i] == pytest.approx(integrate.quad(first_purchase, 0, h)[0], rel=1e-9)


def test_p_alive_is_a_probability_and_one_without_repeats_under_bgnbd(cdnow: Cdnow) -> None:
    bg = bgnbd_p_alive(PUBLISHED_BGNBD, cdnow.rfm)
    pn = pareto_nbd_p_alive(PUBLISHED_PNBD, cdnow.rfm)
    assert np.all((bg >= 0) & (bg <= 1)) and np.all((pn >= 0) & (pn <= 1))
    assert np.all(bg[cdnow.rfm.frequency == 0] == 1.0)
    assert np.all(pn[cdnow.rfm.frequency == 0] < 1.0)  # Pareto/NBD customers die any time
    # a customer silent for long after a busy spell is likely gone
    busy_then_silent = (cdnow.rfm.frequency >= 5) & (cdnow.rfm.age - cdnow.rfm.recency > 25)
    assert bg[busy_then_silent].max() < 0.2 and pn[busy_then_silent].max() < 0.2


def test_p_any_transaction_is_a_probability_increasing_in_horizon(cdnow: Cdnow) -> None:
    horizons = [0.0, 0.01, 1.0, 4.0, 13.0, 39.0, 520.0]
    for p_any, p_alive, params in (
        (bgnbd_p_any_transaction, bgnbd_p_alive, PUBLISHED_BGNBD),
        (pareto_nbd_p_any_transaction, pareto_nbd_p_alive, PUBLISHED_PNBD),
    ):
        probs = np.stack([p_any(params, cdnow.rfm, h) for h in horizons])
        assert np.all((probs >= 0) & (probs <= 1))
        assert np.all(probs[0] == 0)
        assert np.all(np.diff(probs, axis=0) > 0)
        assert np.all(probs <= p_alive(params, cdnow.rfm) + 1e-12)
        per_customer = p_any(params, cdnow.rfm, np.full(len(cdnow.rfm), 13.0))
        np.testing.assert_array_equal(per_customer, probs[4])


# Pareto/NBD parameter sets for the accuracy checks: CDNOW and its mirror (alpha >= beta),
# alpha ~ beta, ratios far beyond 10 (the hypergeometric's z near 1, where the quadrature
# takes over), integer r and s (where scipy's hyp2f1 near z = 1 is slowest), tiny s.
HARD_PNBD = [
    PUBLISHED_PNBD,
    ParetoNBDParams(r=0.606, alpha=11.669, s=0.553, beta=10.578),
    ParetoNBDParams(r=0.553, alpha=10.578, s=0.606, beta=10.578 * (1 + 1e-9)),
    ParetoNBDParams(r=2.0, alpha=0.05, s=1.0, beta=40.0),
    ParetoNBDParams(r=0.3, alpha=300.0, s=2.0, beta=0.2),
    ParetoNBDParams(r=4.12, alpha=2.86, s=3e-6, beta=13_600.0),
    ParetoNBDParams(r=1.0, alpha=1.0, s=0.8, beta=1e4),
    ParetoNBDParams(r=0.9, alpha=5e3, s=0.4, beta=1.5),
]


def _mp_log_g(mp, alpha, beta, p, q, y):
    """log integral_y^inf (alpha+u)^-p (beta+u)^-q du, by mpmath's hyp2f1 (real for z < 1)."""
    a, b, p, q, y = (mp.mpf(float(v)) for v in (alpha, beta, p, q, y))
    n = p + q - 1
    big, small, k = (a, b, q) if a >= b else (b, a, p)
    z = (big - small) / (big + y)
    return -n * mp.log(big + y) - mp.log(n) + mp.log(mp.re(mp.hyp2f1(n, k, n + 1, z)))


def _random_rows(rng: np.random.Generator, n: int) -> RFM:
    """x up to 1000 with t_x ~ T, t_x << T, t_x = T and in between; x = 0 with t_x = 0."""
    x = rng.choice([0.0, 1.0, 2.0, 7.0, 40.0, 200.0, 1000.0], n)
    T = rng.uniform(0.05, 78.0, n)
    share = rng.choice(
        [1.0, 1 - 1e-9, 1 - 1e-5, 0.999, 1e-4, 0.01, 0.5, 0.9], n
    )  # t_x as a share of T
    tx = np.where(x > 0, T * share, 0.0)
    return RFM(x, tx, T)


def test_pareto_nbd_loglik_and_p_alive_match_mpmath_on_random_inputs() -> None:
    """The fast path (hyp2f1 series up to z = 0.9, quadrature beyond, de-duplication)."""
    mp = pytest.importorskip("mpmath")
    rng = np.random.default_rng(11)
    with mp.workdps(30):  # t_x = T (1 - 1e-9) costs I = G(t_x) - G(T) nine of them
        for params in HARD_PNBD:
            rfm = _random_rows(rng, 16)
            ll, alive = pareto_nbd_loglik(params, rfm), pareto_nbd_p_alive(params, rfm)
            r, alpha, s, beta = (mp.mpf(v) for v in dataclasses.astuple(params))
            for i, (x, tx, T) in enumerate(zip(rfm.frequency, rfm.recency, rfm.age, strict=True)):
                log_alive = -(r + x) * mp.log(alpha + T) - s * mp.log(beta + T)
                died = 0
                if tx < T:
                    g_lo, g_hi = (_mp_log_g(mp, alpha, beta, r + x, s + 1, y) for y in (tx, T))
                    died = s * mp.exp(g_lo) * -mp.expm1(g_hi - g_lo)
                head = mp.loggamma(r + x) - mp.loggamma(r) + r * mp.log(alpha) + s * mp.log(beta)
                want_ll = head + mp.log(mp.exp(log_alive) + died)
                want_alive = mp.exp(log_alive) / (mp.exp(log_alive) + died)
                where = f"{params}, x={x}, t_x={tx!r}, T={T!r}"
                assert ll[i] == pytest.approx(float(want_ll), rel=1e-9, abs=1e-12), where
                assert alive[i] == pytest.approx(float(want_alive), rel=1e-9), where


def test_pareto_nbd_tail_integral_matches_mpmath_near_z_one() -> None:
    """G(y) itself, where scipy's hyp2f1 is slow or returns NaN and the quadrature takes over."""
    mp = pytest.importorskip("mpmath")
    rng = np.random.default_rng(5)
    cases = []
    for alpha, beta in ((0.01, 50.0), (300.0, 0.2), (1e-3, 1e3), (2.0, 21.0)):
        for p in (0.3, 1.0, 1.0 + 1e-7, 2.0, 17.5, 1000.6):
            for q in (3e-6, 0.6, 1.0, 1.606, 3.0):
                if p + q > 1.0:  # the model's n = p + q - 1 = r + s + x > 0
                    y = float(rng.uniform(0.0, 0.1 * max(alpha, beta)))
                    cases.append((alpha, beta, p, q, y))
    alpha_beta = {}
    for alpha, beta, p, q, y in cases:
        alpha_beta.setdefault((alpha, beta, q), []).append((p, y))
    with mp.workdps(30):
        for (alpha, beta, q), rows in alpha_beta.items():
            p, y = (np.array(v) for v in zip(*rows, strict=True))
            got = bm._log_g(alpha, beta, p, q, y)
            want = [float(_mp_log_g(mp, alpha, beta, pi, q, yi)) for pi, yi in rows]
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"{alpha=} {beta=} {q=}")


# ---------------------------------------------------------------------------- scale


def _simulate_bgnbd(n: int, params: BGNBDParams, seed: int) -> RFM:
    """BG/NBD customers acquired over 12 weeks, observed to day 272, recorded to the day."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    T = (272 - rng.integers(0, 84, n)) / 7.0
    n_arrivals = rng.poisson(lam * T)
    x = np.minimum(n_arrivals, rng.geometric(p))  # death after the K-th repeat purchase
    # the x-th of n_arrivals uniform arrival times on (0, T] ~ T * Beta(x, n_arrivals - x + 1)
    tx = T * rng.beta(np.maximum(x, 1), np.maximum(n_arrivals - x + 1, 1))
    tx = np.where(x > 0, np.floor(tx * 7.0) / 7.0, 0.0)
    return RFM(x.astype(float), tx, T)


def test_one_million_customers_fit_in_under_a_minute_each() -> None:
    rfm = _simulate_bgnbd(1_000_000, PUBLISHED_BGNBD, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        start = time.perf_counter()
        bg, bg_ll = fit_bgnbd(rfm)
        bg_seconds = time.perf_counter() - start
        start = time.perf_counter()
        _, pn_ll = fit_pareto_nbd(rfm)
        pn_seconds = time.perf_counter() - start
    assert bg_seconds < 60, f"BG/NBD took {bg_seconds:.1f} s"
    assert pn_seconds < 60, f"Pareto/NBD took {pn_seconds:.1f} s"
    _assert_params_close(bg, PUBLISHED_BGNBD, rel=0.05)  # recorded to the day: small bias
    assert bg_ll > pn_ll  # the generating model fits better


def test_scoring_a_million_customers_takes_seconds_even_where_the_series_fails() -> None:
    """Day-level customers share (x, t_x, T); here every one of them has z > 0.999."""
    rng = np.random.default_rng(3)
    n = 1_000_000
    T = rng.integers(0, 547, n) / 7.0
    x = rng.poisson(0.05 * T).astype(float)  # CDNOW-like: mostly 0 to 3 repeats
    tx = np.where(x > 0, np.floor(T * rng.random(n) ** (1 / np.maximum(x, 1)) * 7) / 7, 0.0)
    # what a fit returns when hardly anyone dies: s and beta large, beta/alpha ~ 4000
    rfm, params = RFM(x, tx, T), ParetoNBDParams(r=0.553, alpha=10.6, s=27.0, beta=41_000.0)
    start = time.perf_counter()
    alive = pareto_nbd_p_alive(params, rfm)
    buy = pareto_nbd_p_any_transaction(params, rfm, 39.0)
    seconds = time.perf_counter() - start
    assert seconds < 10, f"scoring took {seconds:.1f} s"  # ~1 s; ~110 s with hyp2f1 alone
    assert np.all((buy >= 0) & (buy <= alive) & (alive <= 1))


def test_merging_identical_customers_does_not_change_scores() -> None:
    """Large continuous-time inputs skip the merge; small slices of them take it."""
    rng = np.random.default_rng(4)
    n = 300_000
    T = rng.uniform(0, 78, n)
    x = rng.poisson(0.2 * T).astype(float)
    tx = np.where(x > 0, T * rng.random(n), 0.0)
    params = ParetoNBDParams(r=0.553, alpha=1.0, s=0.606, beta=30.0)
    whole = pareto_nbd_p_alive(params, RFM(x, tx, T))
    parts = [pareto_nbd_p_alive(params, RFM(x[i : i + 5000], tx[i : i + 5000], T[i : i + 5000]))
             for i in range(0, 60_000, 5000)]  # fmt: skip
    np.testing.assert_allclose(whole[:60_000], np.concatenate(parts), rtol=1e-13)


@pytest.mark.parametrize("params", [PUBLISHED_BGNBD, PUBLISHED_PNBD])
def test_p_any_curve_equals_one_horizon_at_a_time(cdnow: Cdnow, params) -> None:
    horizons = [0.0, 1.0, 13.0, np.linspace(0.0, 39.0, len(cdnow.rfm))]
    single = (
        pareto_nbd_p_any_transaction
        if isinstance(params, ParetoNBDParams)
        else bgnbd_p_any_transaction
    )
    curve = bm.p_any_transaction_curve(params, cdnow.rfm, horizons)
    assert curve.shape == (4, len(cdnow.rfm))
    for row, h in zip(curve, horizons, strict=True):
        np.testing.assert_array_equal(row, single(params, cdnow.rfm, h))


# ---------------------------------------------------------------------------- failures


def test_all_customers_without_repeats_warns_instead_of_crashing() -> None:
    rng = np.random.default_rng(0)
    T = rng.uniform(20, 39, 500)
    rfm = RFM(np.zeros(500), np.zeros(500), T)
    for fit in (fit_bgnbd, fit_pareto_nbd):
        with pytest.warns(ConvergenceWarning, match="no customer made a repeat purchase"):
            params, loglik = fit(rfm)
        assert np.isfinite(loglik) and loglik <= 0
        assert all(np.isfinite(dataclasses.astuple(params)))


@pytest.mark.parametrize("fit", [fit_bgnbd, fit_pareto_nbd])
def test_a_handful_of_customers_warns_or_explains(fit) -> None:
    rfm = RFM(
        np.array([0.0, 1, 3, 0, 2]), np.array([0.0, 5, 20, 0, 30]), np.array([10.0, 20, 30, 35, 38])
    )
    try:
        with pytest.warns(ConvergenceWarning, match="doubtful"):
            params, loglik = fit(rfm)
    except ConvergenceError as err:
        assert "1." in str(err) and "2." in str(err)
    else:
        assert np.isfinite(loglik) and all(np.isfinite(dataclasses.astuple(params)))


def test_convergence_error_lists_causes_when_every_attempt_fails(
    cdnow: Cdnow, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(theta: np.ndarray, data) -> np.ndarray:
        return np.full(data.x.shape, np.nan)

    monkeypatch.setattr(bm, "_BGNBD", dataclasses.replace(bm._BGNBD, loglik=broken))
    with pytest.raises(ConvergenceError) as info:
        fit_bgnbd(cdnow.rfm)
    message = str(info.value)
    assert "2,357 customers" in message and "946 with repeat purchases" in message
    for item in ("1.", "2.", "3.", "4."):
        assert f"\n  {item}" in message


def test_penalizer_shrinks_parameters_without_warnings(cdnow: Cdnow, bgnbd_fit) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        params, loglik = fit_bgnbd(cdnow.rfm, penalizer=0.1, initial=PUBLISHED_BGNBD)
    assert loglik < bgnbd_fit[1]  # the unpenalised optimum is the maximum
    assert params.b < bgnbd_fit[0].b
