"""How time and memory grow with the log: ingest, fit, score every user and plan, 1M to 30M events.

For each size, a synthetic Taobao-like log (`ebbtide.synthetic`, about 100 events per user
over 9 days) is written once; each stage then runs in a process of its own so that its
peak memory (``ru_maxrss``) is its own: ingest into a fresh store, fit `decay` two days
before the end, score every user with it (`score_users`: return, purchase, return time,
interest and items), plan re-activation at the cut-off, and one epoch of `neural` (its
next-item head one epoch too). The bar (issue 18): the cost per event grows at most 1.5x
from the smallest size to the largest, and no stage peaks above 16 GB.

    python bench/scale.py [--sizes 1M,3M,10M,30M] [--stages ingest,decay,score,plan,neural]
                          [--neural-up-to 3M] [--no-write]

Writes bench/RESULTS.md (section "Scale: 1M to 30M events").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _results import machine, write_section

STAGES = ("ingest", "decay", "score", "plan", "neural")
EVENTS_PER_USER = 100  # SynthConfig's default rate over 9 days


def _count(text: str) -> int:
    """``"3M"`` → 3_000_000, ``"500k"`` → 500_000."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def _cutoff(store) -> datetime:
    last = store.con.execute("SELECT max(ts) FROM events").fetchone()[0]
    return last.astimezone(UTC) - timedelta(days=2)


def run_stage(stage: str, folder: Path) -> dict:
    """One stage in this process; what it did and its peak memory, as a dict."""
    from ebbtide.store import EventStore

    db = folder / "store.duckdb"
    clock = time.perf_counter()
    out: dict = {}
    if stage == "ingest":
        from ebbtide.ingest import ingest_file

        with EventStore(db) as store:
            out["events"] = ingest_file(store, folder / "log.csv", "taobao").loaded
    else:
        from ebbtide.features.history import snapshot
        from ebbtide.models.decay import DecayModel

        with EventStore(db, read_only=True) as store:
            at = _cutoff(store)
            if stage == "decay":
                model = DecayModel().fit(store, cutoff=at)
                model.save(folder / "decay")
                out["iterations"] = model.metrics_["iterations"]
            elif stage == "score":
                from ebbtide.models.scoring import score_users

                model = DecayModel.load(folder / "decay")
                history = snapshot(store, at=at)
                clock = time.perf_counter()  # the snapshot is read once per command
                users, _ = score_users(model, history, horizon=timedelta(days=7))
                out["users"] = len(users)
            elif stage == "plan":
                from ebbtide.activate.actions import default_actions, override
                from ebbtide.activate.reactivation import plan_reactivation

                model = DecayModel.load(folder / "decay")
                n_users = store.con.execute("SELECT count(DISTINCT user_idx) FROM events")
                catalogue = override(default_actions(), budget=n_users.fetchone()[0] * 0.02)
                result = plan_reactivation(
                    model, store, at=at, catalogue=catalogue, order_value=30.0
                )
                out["contacts"] = result.summary()["contacts"]
            elif stage == "neural":
                from ebbtide.models.neural import NeuralConfig, NeuralModel

                config = NeuralConfig(epochs=1, item_epochs=1, max_train_seconds=1e9)
                model = NeuralModel(config).fit(store, cutoff=at)
                out["epoch_seconds"] = model.metrics_["train_seconds"]
    out["seconds"] = time.perf_counter() - clock
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _in_child(stage: str, folder: Path) -> dict:
    command = [sys.executable, __file__, "--child", stage, "--folder", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,3M,10M,30M", help="events per log, e.g. 1M,3M")
    parser.add_argument("--stages", default=",".join(STAGES), help="which stages to time")
    parser.add_argument(
        "--neural-up-to", default="3M", help="largest log a neural epoch is timed on"
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_stage(args.child, Path(args.folder))))
        return

    from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}: use {','.join(STAGES)}")
    neural_cap = _count(args.neural_up_to)
    rows = []
    for size_text in args.sizes.split(","):
        size = _count(size_text)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            users = max(size // EVENTS_PER_USER, 1)
            write_taobao_csv(generate(SynthConfig(users=users, days=9.0)), folder / "log.csv")
            events = None
            for stage in ["ingest", *[s for s in stages if s != "ingest"]]:
                if stage == "neural" and size > neural_cap:
                    continue
                if stage in ("score", "plan") and "decay" not in stages:
                    continue
                result = _in_child(stage, folder)
                events = result.get("events", events)
                rows.append({"size": size_text, "stage": stage, "events": events, **result})
                print(
                    f"{size_text:>4} {stage:<7} {result['seconds']:8.1f} s"
                    f" {result['peak_mb']:8.0f} MB",
                    flush=True,
                )
    section = _section(rows, args)
    print(section)
    if not args.no_write:
        write_section("Scale: 1M to 30M events", section)


def _section(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "## Scale: 1M to 30M events",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}, CPU only; load average at the end {os.getloadavg()[0]:.1f}",
        f"- command: `python bench/scale.py --sizes {args.sizes} --stages {args.stages}"
        f" --neural-up-to {args.neural_up_to}`",
        "- data: `ebbtide.synthetic` logs (about 100 events per user over 9 days); `decay`"
        " fitted two days before the end (dropout validated, so two fits); every user"
        " scored at that instant with a 7-day horizon; the plan at that instant (budget:"
        " 2% of users); `neural`: one epoch of each of its two stages, default settings.",
        "- each stage in a process of its own; peak = that process's maximum resident set.",
        "",
        "| events | stage | seconds | µs per event | peak MB |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        per_event = row["seconds"] / row["events"] * 1e6 if row["events"] else float("nan")
        lines.append(
            f"| {row['events']:,} | {row['stage']} | {row['seconds']:.1f} |"
            f" {per_event:.2f} | {row['peak_mb']:,.0f} |"
        )
        if "epoch_seconds" in row:
            epoch = row["epoch_seconds"]
            lines.append(
                f"| {row['events']:,} | neural: its epoch alone | {epoch:.1f} |"
                f" {epoch / row['events'] * 1e6:.2f} | |"
            )
    lines += ["", "Cost per event, largest log over smallest (bar: at most 1.5):", ""]
    for stage in STAGES:
        mine = [r for r in rows if r["stage"] == stage and r["events"]]
        if len(mine) >= 2:
            first, last = mine[0], mine[-1]
            ratio = (last["seconds"] / last["events"]) / (first["seconds"] / first["events"])
            lines.append(
                f"- {stage}: {ratio:.2f} ({first['events']:,} → {last['events']:,} events)"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
