"""BTYD speed: fitting and scoring Pareto/NBD and BG/NBD on a million synthetic customers.

Customers are drawn from Pareto/NBD with CDNOW-like weekly parameters (r=0.553,
alpha=10.578, s=0.606, beta=11.669; ``--truth`` for others, e.g. ``2,1,1,300`` for frequent
buyers who hardly ever leave): first purchases spread over 78 weeks, purchase and
death rates from their gamma mixing laws, repeat purchases up to death or the end, times
recorded to the day as `rfm_from_transactions` does (``--continuous`` keeps exact times:
every row distinct, the worst case for merging identical customers). Each fit and each
scoring pass runs ``--repeats`` times in this process; medians are reported, with the
Pareto/NBD estimates next to the true values and the process's peak memory. If the
`lifetimes` package is importable (it is not a dependency), it is timed on the same data.

    python bench/btyd.py [--customers 1000000] [--repeats 3] [--continuous] [--no-write]
                         [--truth r,alpha,s,beta]

Writes the tables into bench/RESULTS.md (section "BTYD speed").
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import astuple, fields
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from _results import machine, write_section
from ebbtide.models import btyd_math as bm

TRUE = bm.ParetoNBDParams(r=0.553, alpha=10.578, s=0.606, beta=11.669)
WEEKS = 78  # acquisition and observation window
HORIZON = 39.0  # weeks ahead for expected transactions and P(any)


def simulate(n: int, params: bm.ParetoNBDParams, seed: int, continuous: bool) -> bm.RFM:
    """Pareto/NBD customers, vectorised: x ~ Poisson(lambda min(tau, T)), t_x the last arrival."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    mu = rng.gamma(params.s, 1.0 / params.beta, n)
    # age: exact, or whole days from the first purchase to the end
    age = rng.uniform(0.0, WEEKS, n) if continuous else rng.integers(0, WEEKS * 7 + 1, n) / 7.0
    alive_for = np.minimum(rng.exponential(1.0, n) / mu, age)
    x = rng.poisson(lam * alive_for)
    # the last of x uniform arrivals on (0, alive_for): alive_for * U^(1/x)
    recency = alive_for * rng.random(n) ** (1.0 / np.maximum(x, 1))
    if not continuous:  # days between the purchase days, the first made at a random hour
        recency = np.floor(rng.random(n) + recency * 7.0) / 7.0
    return bm.RFM(x.astype(np.float64), np.where(x > 0, recency, 0.0), age)


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 0.1 else f"{seconds * 1e3:.0f} ms"


def _ebbtide(rfm: bm.RFM, repeats: int) -> dict[str, dict]:
    out = {}
    models = (
        ("Pareto/NBD", bm.fit_pareto_nbd, bm.pareto_nbd_p_alive,
         bm.pareto_nbd_expected_transactions, bm.pareto_nbd_p_any_transaction),
        ("BG/NBD", bm.fit_bgnbd, bm.bgnbd_p_alive,
         bm.bgnbd_expected_transactions, bm.bgnbd_p_any_transaction),
    )  # fmt: skip
    for name, fit, p_alive, expected, p_any in models:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit_s, (params, loglik) = _median_time(lambda fit=fit: fit(rfm), repeats)
        alive_s, _ = _median_time(lambda f=p_alive, p=params: f(p, rfm), repeats)
        expected_s, total = _median_time(
            lambda f=expected, p=params: f(p, rfm, HORIZON).sum(), repeats
        )
        any_s, _ = _median_time(lambda f=p_any, p=params: f(p, rfm, HORIZON), repeats)
        out[name] = {
            "fit": fit_s,
            "p_alive": alive_s,
            "expected": expected_s,
            "p_any": any_s,
            "params": params,
            "loglik": loglik,
            "expected_total": float(total),
            "warnings": [str(w.message).split(":")[0] for w in caught],
        }
        print(f"ebbtide {name}: fit {fit_s:.2f} s, {params}", flush=True)
    return out


def _lifetimes(rfm: bm.RFM, limit: int) -> tuple[int, dict[str, dict]] | None:
    """The same work with lifetimes, once, on at most ``limit`` customers; None if absent."""
    try:
        from lifetimes import BetaGeoFitter, ParetoNBDFitter
    except ImportError:
        return None
    n = min(len(rfm), limit)
    x, tx, age = rfm.frequency[:n], rfm.recency[:n], rfm.age[:n]
    out = {}
    for name, cls in (("Pareto/NBD", ParetoNBDFitter), ("BG/NBD", BetaGeoFitter)):
        model = cls()
        try:
            fit_s, _ = _median_time(lambda model=model: model.fit(x, tx, age), 1)
            alive_s, _ = _median_time(
                lambda model=model: model.conditional_probability_alive(x, tx, age), 1
            )
            expected_s, _ = _median_time(
                lambda model=model: model.conditional_expected_number_of_purchases_up_to_time(
                    HORIZON, x, tx, age
                ),
                1,
            )
        except Exception as err:  # a comparison, not a test of lifetimes: report and go on
            out[name] = {"error": f"{type(err).__name__}: {err}"}
            continue
        out[name] = {"fit": fit_s, "p_alive": alive_s, "expected": expected_s}
        print(f"lifetimes {name}: fit {fit_s:.2f} s", flush=True)
    return n, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="synthetic customers")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed")
    parser.add_argument(
        "--truth",
        default=",".join(f"{v:g}" for v in astuple(TRUE)),
        help="Pareto/NBD r,alpha,s,beta (weeks) to simulate from",
    )
    parser.add_argument(
        "--continuous", action="store_true", help="exact times instead of whole days"
    )
    parser.add_argument(
        "--lifetimes-customers",
        type=int,
        default=100_000,
        help="at most this many customers for lifetimes (if installed)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()

    truth = bm.ParetoNBDParams(*map(float, args.truth.split(",")))
    started = time.perf_counter()
    rfm = simulate(args.customers, truth, args.seed, args.continuous)
    sim_s = time.perf_counter() - started
    columns = {"x": rfm.frequency, "t_x": rfm.recency, "T": rfm.age}
    distinct = len(pd.DataFrame(columns).drop_duplicates())
    repeaters = int(np.count_nonzero(rfm.frequency))
    print(f"{len(rfm):,} customers, {distinct:,} distinct (x, t_x, T), {sim_s:.1f} s", flush=True)

    ours = _ebbtide(rfm, args.repeats)
    theirs = _lifetimes(rfm, args.lifetimes_customers)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB

    table = [
        "| model | library | customers | fit | P(alive) | E[transactions, 39 wk] | P(any, 39 wk) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in ours.items():
        times = " | ".join(_s(r[k]) for k in ("fit", "p_alive", "expected", "p_any"))
        table.append(f"| {name} | ebbtide | {len(rfm):,} | {times} |")
    if theirs is not None:
        n, results = theirs
        for name, r in results.items():
            if "error" in r:
                table.append(f"| {name} | lifetimes | {n:,} | {r['error']} | | | |")
            else:
                times = " | ".join(_s(r[k]) for k in ("fit", "p_alive", "expected"))
                table.append(f"| {name} | lifetimes | {n:,} | {times} | — |")
    pn, bg = ours["Pareto/NBD"], ours["BG/NBD"]
    params = ["| Pareto/NBD | true | fitted | error |", "|---|---:|---:|---:|"]
    for field, true, got in zip(fields(truth), astuple(truth), astuple(pn["params"]), strict=True):
        params.append(f"| {field.name} | {true:g} | {got:.4g} | {got / true - 1:+.1%} |")
    bg_params = ", ".join(
        f"{f.name}={v:.4g}"
        for f, v in zip(fields(bg["params"]), astuple(bg["params"]), strict=True)
    )
    summary = (
        f"Log-likelihood: Pareto/NBD {pn['loglik']:,.1f}, BG/NBD {bg['loglik']:,.1f} (fitted"
        f" {bg_params}). Expected transactions in the next 39 weeks, all customers:"
        f" {pn['expected_total']:,.0f} (Pareto/NBD), {bg['expected_total']:,.0f} (BG/NBD)."
    )
    notes = [f"{name}: {'; '.join(r['warnings'])}" for name, r in ours.items() if r["warnings"]]
    lifetimes_line = (
        "- lifetimes: not installed (not a dependency), so not compared"
        if theirs is None
        else f"- lifetimes: one run each on the first {theirs[0]:,} customers"
    )
    command = f"python bench/btyd.py --customers {args.customers} --repeats {args.repeats}"
    if truth != TRUE:
        command += f" --truth {args.truth}"
    if args.continuous:
        command += " --continuous"
    section = "\n".join(
        [
            "## BTYD speed",
            "",
            f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"- machine: {machine()}, NumPy {np.__version__}",
            f"- command: `{command}`",
            f"- data: {len(rfm):,} customers drawn from Pareto/NBD (r={truth.r:g},"
            f" alpha={truth.alpha:g}, s={truth.s:g}, beta={truth.beta:g}, weeks; seed"
            f" {args.seed}), first purchases over"
            f" {WEEKS} weeks, times {'exact' if args.continuous else 'to the day'}:"
            f" {repeaters:,} repeat buyers, {distinct:,} distinct (x, t_x, T) rows",
            f"- median of {args.repeats} runs in one process; scoring uses the fitted parameters",
            f"- peak memory (whole process): {peak / 2**30:.2f} GiB",
            lifetimes_line,
            "",
            *table,
            "",
            *params,
            "",
            summary,
            "",
            *([f"Warnings: {'; '.join(notes)}", ""] if notes else []),
        ]
    )
    print(section)
    if not args.no_write:
        write_section("BTYD speed", section)


if __name__ == "__main__":
    main()
