"""Does `neural` train on a GPU, learn what it learns on the CPU, and how much faster?

Run by ``bench/gpu_check.sh`` (under 8 minutes on one H200). Three stages, each on the
bundled Taobao sample and on a synthetic log (`ebbtide.synthetic`, 10 M events):

1. **Same metrics.** The sample, and a slice of the synthetic log's users, trained on the
   GPU (``--device cuda``, mixed precision ``auto``: bf16 where supported) and on the CPU
   with the same settings and a fixed number of epochs; their validation NLL per interval
   must agree within 3% and the held-out window's 1 − AUC within 0.03 (what seeds move
   them by on the CPU; bf16 adds rounding, not bias).
2. **Events/s.** The point process's training pace (its progress line's events/s, median
   over epochs) on each device. On the full synthetic log the GPU trains one epoch under a
   time budget; the CPU's pace is read on the slice (a CPU epoch of 10 M events would not
   fit the budget), which the JSON says.
3. **RecBole SASRec** on the same GPU: only when RecBole is importable here; otherwise
   the JSON says it was skipped.

``--device cpu`` (or ``DEVICE=cpu``) is a dry run with tiny sizes: every step runs, both
"devices" are the CPU. Numbers go to ``gpu_check.json`` and ``gpu_check.md`` (a section
for bench/RESULTS.md) in ``--out``, else ``$OUT``, else a new temporary folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import torch

from ebbtide.datasets import taobao_sample_path
from ebbtide.ingest import ingest_file
from ebbtide.models.neural import NeuralConfig, NeuralModel
from ebbtide.store import EventStore
from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

NLL_TOLERANCE = 0.03  # relative
AUC_TOLERANCE = 0.03  # absolute, on 1 − AUC
_RATE = re.compile(r"([\d,]+) events/s")

#: Sizes per mode: the GPU check, and the CPU dry run (seconds on a laptop).
SIZES = {
    "cuda": {
        "sample_users": None,  # all 815
        "synthetic_users": 100_000,  # about 10 M events (SynthConfig: ~100 per user)
        "slice_users": 2_000,
        "epochs": 3,
        "full_seconds": 120.0,
        "model": {},
        "gpu_batch": 64,
    },
    "cpu": {
        "sample_users": 40,
        "synthetic_users": 40,
        "slice_users": 20,
        "epochs": 1,
        "full_seconds": 5.0,
        "model": {"hidden": 8, "embedding": 8, "rank": 2, "max_len": 32, "context_len": 16},
        "gpu_batch": 16,
    },
}


class CheckFailed(SystemExit):
    """A loud stop with a message saying what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(f"gpu_check: {message}")


def require_device(device: str) -> None:
    """Stop at once when CUDA is asked for and missing, saying why."""
    if device == "cpu":
        return
    if torch.version.cuda is None:
        raise CheckFailed(
            f"--device {device}: this PyTorch ({torch.__version__}) is a CPU-only build;"
            " install a CUDA build of the same version, or run the dry run with --device cpu"
        )
    if not torch.cuda.is_available():
        raise CheckFailed(
            f"--device {device}: PyTorch sees no GPU (driver missing or CUDA_VISIBLE_DEVICES"
            " empty); check nvidia-smi, or run the dry run with --device cpu"
        )


def store_from_csv(csv: Path, folder: Path, name: str) -> Path:
    path = folder / f"{name}.duckdb"
    path.unlink(missing_ok=True)
    with EventStore(path) as store:
        ingest_file(store, csv, "taobao")
    return path


def sample_store(folder: Path, users: int | None) -> Path:
    """The bundled Taobao sample (or its first `users` users) in a store."""
    source = taobao_sample_path()
    if users is None:
        return store_from_csv(source, folder, "sample")
    frame = pd.read_csv(source, header=None, dtype=str)
    keep = frame[0].drop_duplicates().iloc[:users]
    csv = folder / "sample_slice.csv"
    frame[frame[0].isin(keep)].to_csv(csv, header=False, index=False)
    return store_from_csv(csv, folder, "sample")


def synthetic_stores(folder: Path, users: int, slice_users: int) -> tuple[Path, Path, int]:
    """The synthetic log, and the slice of its first `slice_users` users, in stores."""
    started = time.monotonic()
    log = generate(SynthConfig(users=users, seed=11))
    csv = folder / "synthetic.csv"
    rows = write_taobao_csv(log, csv)
    print(
        f"synthetic log: {rows:,} events of {users:,} users in {time.monotonic() - started:.0f} s"
    )
    full = store_from_csv(csv, folder, "synthetic")
    frame = pd.read_csv(csv, header=None, dtype=str)
    keep = frame[0].drop_duplicates().iloc[:slice_users]
    sliced = folder / "synthetic_slice.csv"
    frame[frame[0].isin(keep)].to_csv(sliced, header=False, index=False)
    return full, store_from_csv(sliced, folder, "synthetic_slice"), rows


def train(store: Path, device: str, settings: dict) -> dict:
    """Fit `neural` on `store` (cut after its last event); its metrics and events/s."""
    rates: list[float] = []
    last: dict[str, float] = {}

    def progress(message: str, _fraction: float) -> None:
        epoch = re.match(r"epoch (\d+)/", message)
        found = _RATE.search(message)
        if epoch and found:
            last[epoch.group(1)] = float(found.group(1).replace(",", ""))

    config = NeuralConfig(device=device, **settings)
    with EventStore(store, read_only=True) as events:
        cutoff = events.last_event() + timedelta(seconds=1)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.monotonic()
        model = NeuralModel(config).fit(events, cutoff=cutoff, progress=progress)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.monotonic() - started
    rates = list(last.values())
    metrics = model.metrics_
    return {
        "device": device,
        "precision": metrics["precision"],
        "events": metrics["events"],
        "epochs": metrics["epochs"],
        "stopped_by": metrics["stopped_by"],
        "events_per_s": statistics.median(rates) if rates else None,
        "fit_seconds": round(seconds, 1),
        "validation_nll_per_interval": metrics["validation_nll_per_interval"],
        "validation_window_1_minus_auc": metrics["validation_window_1_minus_auc"],
    }


def agreement(gpu: dict, cpu: dict) -> dict:
    """Whether two runs' validation metrics agree within the tolerances."""
    nll_gap = abs(gpu["validation_nll_per_interval"] / cpu["validation_nll_per_interval"] - 1)
    auc_gap = abs(gpu["validation_window_1_minus_auc"] - cpu["validation_window_1_minus_auc"])
    return {
        "nll_relative_gap": round(nll_gap, 4),
        "auc_gap": round(auc_gap, 4),
        "match": bool(nll_gap <= NLL_TOLERANCE and auc_gap <= AUC_TOLERANCE),
    }


def recbole_note() -> str:
    if importlib.util.find_spec("recbole") is None:
        return "skipped: RecBole is not importable in this Python"
    return "skipped: RecBole is importable, but its GPU timing is not written yet"


def markdown(result: dict) -> str:
    lines = [
        f"## GPU check ({result['device_name']})",
        "",
        f"- command: `{result['command']}`",
        f"- torch {result['torch']}, {result['mode']} sizes; tolerances: validation NLL"
        f" {NLL_TOLERANCE:.0%} relative, 1 − AUC {AUC_TOLERANCE} absolute",
        "",
        "| data | device | precision | events | epochs | events/s | val NLL | 1 − AUC | fit s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in result["runs"]:
        rate = "–" if run["events_per_s"] is None else f"{run['events_per_s']:,.0f}"
        lines.append(
            f"| {run['data']} | {run['device']} | {run['precision']} | {run['events']:,}"
            f" | {run['epochs']} | {rate} | {run['validation_nll_per_interval']:.4f}"
            f" | {run['validation_window_1_minus_auc']:.4f} | {run['fit_seconds']} |"
        )
    lines.append("")
    for name, check in result["agreement"].items():
        verdict = "match" if check["match"] else "DIFFER"
        lines.append(
            f"- {name}: GPU vs CPU {verdict} (NLL gap {check['nll_relative_gap']:.2%},"
            f" 1 − AUC gap {check['auc_gap']:.3f})"
        )
    speed = result.get("speedup")
    if speed:
        lines.append(f"- GPU/CPU events/s: {speed}")
    lines.append(f"- RecBole SASRec: {result['recbole']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=os.environ.get("DEVICE", "cuda"))
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON and markdown")
    parser.add_argument("--synthetic-users", type=int, default=None, help="override the size")
    args = parser.parse_args(argv)
    device = args.device
    require_device(device)
    mode = "cpu" if device == "cpu" else "cuda"
    sizes = SIZES[mode]
    out = args.out or Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu_check-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check-data-"))
    started = time.monotonic()

    fixed = {"epochs": sizes["epochs"], "patience": sizes["epochs"], "item_epochs": 1}
    fixed |= {"item_max_seconds": 30.0, **sizes["model"]}
    runs, checks = [], {}
    sample = sample_store(work, sizes["sample_users"])
    users = args.synthetic_users or sizes["synthetic_users"]
    full, sliced, rows = synthetic_stores(work, users, sizes["slice_users"])
    for data, store in (("taobao sample", sample), ("synthetic slice", sliced)):
        pair = {}
        for on in (device, "cpu"):
            # the same settings, batch included, so only the arithmetic differs
            pair[on] = train(store, on, {**fixed, "batch_size": sizes["gpu_batch"]})
            runs.append({"data": data, **pair[on]})
            print(f"{data} on {on}: {json.dumps(pair[on])}", flush=True)
        checks[data] = agreement(pair[device], pair["cpu"])
    whole = {**fixed, "epochs": 1, "max_train_seconds": sizes["full_seconds"]}
    whole |= {"batch_size": sizes["gpu_batch"], "item_max_seconds": 10.0}
    big = train(full, device, whole)
    runs.append({"data": f"synthetic {rows:,} events", **big})
    print(f"synthetic log on {device}: {json.dumps(big)}", flush=True)

    cpu_rate = next(r["events_per_s"] for r in runs if r["data"] == "synthetic slice"
                    and r["device"] == "cpu")  # fmt: skip
    speedup = None
    if big["events_per_s"] and cpu_rate:
        speedup = (
            f"{big['events_per_s'] / cpu_rate:.1f}× ({big['events_per_s']:,.0f} on the whole"
            f" synthetic log vs {cpu_rate:,.0f} on the CPU, read on the slice)"
        )
    name = (
        torch.cuda.get_device_name() if mode == "cuda" else f"CPU dry run, {os.cpu_count()} cores"
    )
    result = {
        "device_name": name,
        "mode": mode,
        "command": "bench/gpu_check.sh" + (" --device cpu" if mode == "cpu" else ""),
        "torch": torch.__version__,
        "runs": runs,
        "agreement": checks,
        "speedup": speedup,
        "recbole": recbole_note(),
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {result['seconds']} s")
    if not all(check["match"] for check in checks.values()):
        raise CheckFailed("GPU and CPU metrics differ beyond the tolerances (see above)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
