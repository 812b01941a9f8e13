"""Compressed scoring of `neural` on the Taobao holdout: float32 vs int8 vs ONNX.

Fits `neural` once on the sample's events before the cut (2017-12-02 00:00 China time),
then answers the next 24 h with each runtime of `ebbtide.models.neural_compressed` on
the same history: re-engagement AUC, purchase AUC, return AUC and NDCG@10 of the
window's items (full ranking, `ebbtide.evaluate.temporal.evaluate_model`), and the time
per user of

- the network: the per-user terms every query but `recommend` starts from
  (`NeuralModel._query_state`), median of `--repeats`;
- all the queries `evaluate_model` asks (p_return, expected return time, p_buy,
  interest, recommend; `recommend` is float32 PyTorch in every runtime), one run.

"float scorer" is the float32 scoring network the compressed runtimes are made from
(last-event row only, users chunked by history length): the part of the speed-up that is
restructuring, not compression.

    python bench/compressed_scoring.py [--max-seconds 60] [--repeats 3] [--threads N]

Writes bench/RESULTS.md (section "Compressed scoring of neural") and a JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _results import machine, write_section
from ebbtide.datasets import taobao_sample_path
from ebbtide.evaluate.temporal import evaluate_model, holdout_targets
from ebbtide.features.history import snapshot
from ebbtide.features.sequences import to_days
from ebbtide.ingest import ingest_file
from ebbtide.models.base import Model
from ebbtide.models.neural import NeuralConfig, NeuralModel
from ebbtide.models.neural_compressed import _TorchRunner, float_runner, quantised
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)
HORIZON = timedelta(hours=24)
HERE = Path(__file__).resolve().parent
RUNS = ("onnx", "int8", "int8, Linear only", "float scorer", "torch")  # the cheap ones first
ORDER = ("torch", "float scorer", "int8", "int8, Linear only", "onnx")  # in the table
METRICS = ("engage_auc", "buy_auc", "return_auc", "ndcg_at_k")


def _use(model: NeuralModel, run: str, folder: Path, threads: int | None) -> float:
    """Switch `model` to `run`; the seconds it took (the ONNX export included)."""
    clock = time.perf_counter()
    if run == "float scorer":
        model.compress("torch")
        model.runner_ = float_runner(model, threads)
        model._state_cache = None
    elif run == "int8, Linear only":
        model.compress("torch")
        model.runner_ = _TorchRunner(quantised(model.net_, (nn.Linear,)), "int8", threads)
        model._state_cache = None
    else:
        model.compress(run, directory=folder, threads=threads)
    return time.perf_counter() - clock


def _network_seconds(model: NeuralModel, history, repeats: int) -> list[float]:
    """Times of the per-user terms for every user with history, cache cleared each time."""
    local, users, _ = model._prepare("p_return", history, None, False)
    at = to_days(history.at)
    times = []
    for _ in range(repeats):
        model._state_cache = None
        clock = time.perf_counter()
        model._query_state(local.events, users, at)
        times.append(time.perf_counter() - clock)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-seconds", type=float, default=60.0, help="each training stage")
    parser.add_argument("--repeats", type=int, default=3, help="timings of the network")
    parser.add_argument("--threads", type=int, default=None, help="int8/ONNX CPU threads")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="keep the fitted model here; a later run with the same folder reuses it",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model_dir or Path(tmp) / "neural"
        with EventStore(Path(tmp) / "s.duckdb") as store:
            ingest_file(store, taobao_sample_path(), "taobao")
            config = NeuralConfig(
                max_train_seconds=args.max_seconds, item_max_seconds=args.max_seconds
            )
            clock = time.perf_counter()
            fit_s = None
            if (folder / "network.pt").exists():  # fitted by an earlier run
                model = Model.load(folder)
            else:
                model = NeuralModel(config).fit(store, cutoff=CUT)
                fit_s = time.perf_counter() - clock
                model.save(folder)
            targets = holdout_targets(store, cutoff=CUT, horizon=HORIZON)
            history = snapshot(store, at=CUT)
        rows = []
        for run in RUNS:
            setup_s = _use(model, run, folder, args.threads)
            network = _network_seconds(model, history, args.repeats)
            model._state_cache = None
            clock = time.perf_counter()
            metrics = evaluate_model(model, history, targets, k=10)
            all_s = time.perf_counter() - clock
            row = {
                "run": run,
                "setup_s": setup_s,
                "network_s": network,
                "all_queries_s": all_s,
                "users": len(targets.users),
                **{name: metrics.get(name) for name in METRICS},
            }
            print(json.dumps(row))
            rows.append(row)
        gru = _gru_alone(model, args.repeats)
        print(json.dumps(gru))
    _report(rows, fit_s, gru, args)


def _gru_alone(model: NeuralModel, repeats: int) -> dict:
    """Seconds of the network's GRU alone on 64 users × 400 events, float32 vs int8:
    where the int8 runtime's time goes."""
    gru = model.net_.gru
    x = torch.randn(64, 400, gru.input_size)
    int8 = quantised(model.net_).net.gru
    out = {}
    for name, layer in (("float32", gru), ("int8", int8)):
        times = []
        with torch.no_grad():
            for _ in range(repeats):
                clock = time.perf_counter()
                layer(x)
                times.append(time.perf_counter() - clock)
        out[name] = statistics.median(times)
    return out


def _report(rows: list[dict], fit_s: float | None, gru: dict, args: argparse.Namespace) -> None:
    (HERE / "compressed_scoring.json").write_text(json.dumps(rows, indent=1))
    rows = sorted(rows, key=lambda row: ORDER.index(row["run"]))
    base = rows[0]
    users = base["users"]
    base_net = statistics.median(base["network_s"]) / users
    base_all = base["all_queries_s"] / users
    threads = args.threads or "all"
    fitted = "reused from --model-dir" if fit_s is None else f"{fit_s:.0f} s"
    flags = (f" --threads {args.threads}" if args.threads else "") + (
        f" --model-dir {args.model_dir}" if args.model_dir else ""
    )
    lines = [
        "## Compressed scoring of neural",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}, CPU only, torch {torch.__version__}, {threads} threads"
        " (shared with other jobs: ratios, not absolute times)",
        f"- command: `python bench/compressed_scoring.py --max-seconds {args.max_seconds:g}"
        f" --repeats {args.repeats}" + flags + "`",
        f"- split: `neural` (default settings, {args.max_seconds:g} s per training stage; fit"
        f" {fitted}) on events before {CUT:%Y-%m-%d %H:%M} UTC, answers for the next"
        f" 24 h; {users:,} users; NDCG@10 of the window's items over the whole catalogue",
        "- network: per-user terms all queries but `recommend` start from, median of"
        f" {args.repeats}; all queries: p_return, expected return, p_buy, interest and"
        " recommend (the next-item head stays float32 PyTorch in every runtime), one run",
        "",
        "| runtime | re-engagement AUC | purchase AUC | return AUC | NDCG@10 |"
        " network ms/user | speed-up | all queries ms/user | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        net = statistics.median(row["network_s"]) / users
        every = row["all_queries_s"] / users
        cells = [row["run"]]
        for name in METRICS:
            value, ref = row[name], base[name]
            text = "–" if value is None else f"{value:.4f}"
            if value is not None and row is not base:
                text += f" ({value - ref:+.4f})"
            cells.append(text)
        cells += [f"{1e3 * net:.1f}", f"{base_net / net:.1f}×"]
        cells += [f"{1e3 * every:.1f}", f"{base_all / every:.1f}×"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"The GRU alone (64 users × 400 events, median of {args.repeats}): float32"
        f" {gru['float32']:.2f} s, int8 {gru['int8']:.2f} s.",
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section("Compressed scoring of neural", section)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
