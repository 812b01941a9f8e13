"""`ebbtide evaluate`'s temporal holdout at several cut-offs of the Taobao slice, averaged.

One cut-off and one seed showed the ordering of the models move with the cut (issue 4), so
this runs `ebbtide.evaluate.temporal_holdout` at each cut-off (default: 16:00 UTC of four
consecutive days, each with the next 24 h as the window) for every family, and reports per
metric the mean over cut-offs, the range, and how many cut-offs each model won.

    python bench/holdout_cuts.py [--cuts 2017-11-30T16:00Z,...] [--models ...] [--threads 2]

Writes bench/holdout_cuts.json and the RESULTS.md section "Taobao temporal holdout over
several cut-offs".
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import torch

from _results import machine, write_section
from ebbtide.datasets import taobao_sample_path
from ebbtide.evaluate.temporal import temporal_holdout
from ebbtide.ingest import ingest_file
from ebbtide.store import EventStore

HERE = Path(__file__).resolve().parent
OUT = HERE / "holdout_cuts.json"
CUTS = "2017-11-29T16:00Z,2017-11-30T16:00Z,2017-12-01T16:00Z,2017-12-02T16:00Z"
#: Metrics where lower is better; every other metric is better higher.
LOWER = ("ece", "brier", "log_loss", "mae")


def _lower_is_better(metric: str) -> bool:
    return any(part in metric for part in LOWER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", default=CUTS, help="comma-separated ISO instants")
    parser.add_argument("--models", default="popular,btyd,gbdt,decay,neural")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md as it is")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuts = [datetime.fromisoformat(c).astimezone(UTC) for c in args.cuts.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as folder, EventStore(Path(folder) / "s.duckdb") as store:
        ingest_file(store, taobao_sample_path(), "taobao")
        for cut in cuts:
            print(f"cut-off {cut:%Y-%m-%d %H:%M} UTC", flush=True)
            result = temporal_holdout(
                store, args.models.split(","), cutoff=cut, horizon=timedelta(days=1)
            )
            runs.append({"cutoff": cut.isoformat(), **result.to_dict()})
    payload = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "command": f"python bench/holdout_cuts.py --cuts {args.cuts} --models {args.models}",
        "runs": runs,
    }
    OUT.write_text(json.dumps(payload, indent=1, default=str))
    print(_section(payload))
    if not args.no_write:
        write_section("Taobao temporal holdout over several cut-offs", _section(payload))


def _long(payload: dict) -> pd.DataFrame:
    """One row per (cut-off, model, metric) with a number."""
    rows = []
    for run in payload["runs"]:
        for record in run["models"]:
            for metric, value in record.items():
                if metric == "model" or not isinstance(value, int | float) or value != value:
                    continue
                rows.append(
                    {
                        "cutoff": run["cutoff"],
                        "model": record["model"],
                        "metric": metric,
                        "v": value,
                    }
                )
    return pd.DataFrame(rows)


def _section(payload: dict) -> str:
    """Mean [min–max] over cut-offs per metric and model, the best mean in bold, and wins."""
    long = _long(payload)
    metrics = [m for m in long["metric"].unique() if not m.endswith("seconds")]
    models = list(dict.fromkeys(long["model"]))
    n_cuts = len(payload["runs"])
    lines = [
        "## Taobao temporal holdout over several cut-offs",
        "",
        f"- date: {payload['date']}; machine: {payload['machine']}, CPU only",
        f"- command: `{payload['command']}`",
        f"- {n_cuts} cut-offs, each followed by a 24 h window; every model fitted at each"
        " cut-off on the events before it, with its defaults (seed 0)",
        "- cell: mean over cut-offs [min–max]; **bold**: best mean; wins: cut-offs where the"
        " model was best (ties to both)",
        "",
        "| metric | " + " | ".join(models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    wins = {m: 0 for m in models}
    for metric in metrics:
        part = long[long["metric"] == metric]
        table = part.pivot_table(index="cutoff", columns="model", values="v")
        lower = _lower_is_better(metric)
        means = table.mean()
        best = means.idxmin() if lower else means.idxmax()
        per_cut = table.min(axis=1) if lower else table.max(axis=1)
        for model in table.columns:
            wins[model] += int((table[model] == per_cut).sum())
        cells = []
        for model in models:
            if model not in table.columns:
                cells.append("–")
                continue
            col = table[model]
            text = f"{col.mean():.3f} [{col.min():.3f}–{col.max():.3f}]"
            cells.append(f"**{text}**" if model == best else text)
        arrow = "↓" if lower else "↑"
        lines.append(f"| {metric} {arrow} | " + " | ".join(cells) + " |")
    lines += ["", "Wins over all (metric, cut-off) cells: " + ", ".join(
        f"{model} {count}" for model, count in wins.items()
    ), ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
