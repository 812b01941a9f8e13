"""One lifetimes 0.11.3 fit (BG/NBD or Pareto/NBD) on CDNOW calibration purchases, as JSON.

Runs inside ``bench/.venv-peers`` (made by ``bench/cdnow_peers.py``), not in the project
venv, one process per model so that its peak memory is its own.

    bench/.venv-peers/bin/python bench/_lifetimes_runner.py --model pareto_nbd \\
        --transactions cal.csv --end 1997-09-30 --horizon-weeks 39 --out pnbd.json

The CSV has one row per purchase before the cut (``customer_id,date``, date ``YYYY-MM-DD``);
`summary_data_from_transaction_data` merges purchases of one customer on one day into one
transaction and measures recency and T in days divided by 7 (``freq="D",
freq_multiplier=7``: exact weeks, as Fader, Hardie & Lee do; ``freq="W"`` would bucket
purchases into calendar weeks and merge same-week ones). "Fit" is that summary plus the
fitter's ``fit``: from purchases to parameters, as ebbtide's ``fit(store, cutoff=...)``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import lifetimes
import numpy as np
import pandas as pd
import scipy
from lifetimes import BetaGeoFitter, ParetoNBDFitter
from lifetimes.utils import summary_data_from_transaction_data

FITTERS = {"bgnbd": BetaGeoFitter, "pareto_nbd": ParetoNBDFitter}


def rss_mb() -> float:
    """Resident memory of this process now, from /proc (Linux)."""
    return _status_mb("VmRSS:")


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process's address space (VmHWM).

    Not ``ru_maxrss``: Linux carries the parent's resident size at fork over an exec, so
    every child started by a 200 MB parent would report at least 200 MB.
    """
    return _status_mb("VmHWM:")


def fit_once(model: str, transactions: pd.DataFrame, end: str):
    summary = summary_data_from_transaction_data(
        transactions,
        "customer_id",
        "date",
        freq="D",
        freq_multiplier=7,
        observation_period_end=end,
    )
    fitter = FITTERS[model]()
    # Columns by name: ``summary.T`` is the transpose of the frame, not the column T.
    fitter.fit(summary["frequency"], summary["recency"], summary["T"])
    return summary, fitter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(FITTERS), required=True)
    parser.add_argument("--transactions", type=Path, required=True, help="customer_id,date CSV")
    parser.add_argument("--end", required=True, help="last calibration day, YYYY-MM-DD")
    parser.add_argument("--horizon-weeks", type=float, default=39.0)
    parser.add_argument("--repeats", type=int, default=3, help="fits timed (median reported)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    transactions = pd.read_csv(args.transactions, dtype={"customer_id": str})
    transactions["date"] = pd.to_datetime(transactions["date"], format="%Y-%m-%d")
    rss_before = rss_mb()
    seconds = []
    for _ in range(max(args.repeats, 1)):
        started = time.perf_counter()
        summary, fitter = fit_once(args.model, transactions, args.end)
        seconds.append(time.perf_counter() - started)
    peak = peak_rss_mb()

    x, t_x, age = summary["frequency"], summary["recency"], summary["T"]
    started = time.perf_counter()
    expected = fitter.conditional_expected_number_of_purchases_up_to_time(
        args.horizon_weeks, x, t_x, age
    )
    p_alive = fitter.conditional_probability_alive(x, t_x, age)
    predict_seconds = time.perf_counter() - started

    out = {
        "model": args.model,
        "answer": "expected purchases",
        "customers": [str(c) for c in summary.index],
        "expected": np.asarray(expected, dtype=float).tolist(),
        "p_alive": np.asarray(p_alive, dtype=float).tolist(),
        "params": {k: float(v) for k, v in fitter.params_.items()},
        "summary": {
            "customers": len(summary),
            "repeat_transactions": float(x.sum()),
            "repeat_buyers": int((x > 0).sum()),
            "mean_T_weeks": float(age.mean()),
        },
        "fit_seconds": statistics.median(seconds),
        "fit_seconds_all": seconds,
        "predict_seconds": predict_seconds,
        "rss_before_fit_mb": rss_before,
        "peak_rss_mb": peak,
        "versions": {
            "python": platform.python_version(),
            "lifetimes": lifetimes.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "scipy": scipy.__version__,
            "autograd": importlib.metadata.version("autograd"),
            "dill": importlib.metadata.version("dill"),
        },
    }
    args.out.write_text(json.dumps(out))
    print(
        f"lifetimes {args.model}: fit {out['fit_seconds']:.2f} s, {out['params']}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
