"""What matters in `neural`'s next-item head: the same leave-one-out split, parts taken out.

The head (`ebbtide.models.next_item`) is trained alone (the point process above it does
not feed it) on the split of bench/loo_ours.py, once per variant and seed:

- ``full``: the head as shipped;
- ``no repeat``: the gate held at 0 and no item masked, i.e. a GRU with a full softmax over
  the catalogue (GRU4Rec with time features);
- ``no time``: every event's age and the time to the prediction held at 0, so the repeat
  weights only know how many steps back an event is;
- ``no target time``: the head predicts as of the last event it has read, not as of the
  held-out event's moment: the time to the prediction is 0 and the ages of the events it
  repeats from are counted to the last one (in training and at test). RecBole's models do
  not see when the held-out event happens; this variant does not either, but keeps the
  times of the history;
- ``no categories``: item vectors without their category's embedding.

Test HR/NDCG@10 over all items, each user scored at the held-out event's moment from the
events before it; the head's early stopping uses its own held-out last training events.

    python bench/loo_ablation.py [--datasets taobao] [--seeds 0,1,2] [--variants ...]

Writes bench/loo_ablation.json and the RESULTS.md section "Leave-one-out: what mattered".
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _results import machine, write_section
from ebbtide.evaluate.leave_one_out import split_leave_one_out
from ebbtide.evaluate.metrics import ranking_metrics
from ebbtide.features.sequences import load_events, to_days
from ebbtide.models import next_item
from ebbtide.models.neural import NeuralConfig, NeuralModel
from ebbtide.store import EventStore
from loo_ours import ingest_loo

HERE = Path(__file__).resolve().parent
OUT = HERE / "loo_ablation.json"


class _NoRepeat(next_item.NextItemNet):
    def log_gate(self, s):
        zero = torch.zeros(s.shape[0], device=s.device)
        return zero + next_item._MASKED, zero

    def explore_logits(self, s, items, mask, candidates=None):
        return super().explore_logits(s, items, torch.zeros_like(mask), candidates)


class _NoTime(next_item.NextItemNet):
    def query(self, h, lead):
        return super().query(h, torch.zeros_like(lead))

    def repeat_logits(self, s, batch, t_pred):
        return super().repeat_logits(s, {**batch, "t": torch.zeros_like(batch["t"])}, 0 * t_pred)


class _NoTargetTime(next_item.NextItemNet):
    def query(self, h, lead):
        return super().query(h, torch.zeros_like(lead))

    def repeat_logits(self, s, batch, t_pred):
        # position i predicts as of its own event: t_pred[:, i] := t[:, i]
        return super().repeat_logits(s, batch, batch["t"].expand_as(t_pred))


class _NoCategories(next_item.NextItemNet):
    def item_vectors(self):
        return self.item.weight


VARIANTS = {
    "full": next_item.NextItemNet,
    "no repeat": _NoRepeat,
    "no time": _NoTime,
    "no target time": _NoTargetTime,
    "no categories": _NoCategories,
}


def _test_scores(net, settings, split, ids) -> dict[str, float]:
    """HR/NDCG/MRR@10 of the test targets, ranked over every item (ties count against)."""
    with EventStore(split.train_valid, read_only=True) as store:
        events = load_events(store, before=datetime(9999, 1, 1, tzinfo=UTC))
    targets = split.targets
    users = targets["user_id"].map(ids["user"]).to_numpy()
    wanted = targets["test_item"].map(ids["item"]).to_numpy()
    at = np.array([to_days(t.to_pydatetime()) for t in pd.to_datetime(targets["test_ts"])])
    inputs = next_item._inputs(events, net.n_items)
    with torch.no_grad():
        p = next_item._user_distribution(net, events, inputs, users, at, settings)
    score = p[torch.arange(users.size), torch.as_tensor(wanted)]
    rank = (p >= score[:, None]).sum(1).numpy()
    return ranking_metrics(rank, ks=(10,))


def run(
    name: str, variants: list[str], seeds: list[int], max_seconds: float | None = None
) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as folder:
        db, _, _ = ingest_loo(name, Path(folder))
        with EventStore(db) as store:
            split = split_leave_one_out(store, Path(folder) / "split")
        with EventStore(split.train, read_only=True) as train:
            events = load_events(train, before=datetime(9999, 1, 1, tzinfo=UTC))
            ids = {}
            for kind in ("user", "item"):
                query = f"SELECT {kind}_id, {kind}_idx FROM {kind}s"
                ids[kind] = dict(train.con.execute(query).fetchall())
        for variant in variants:
            for seed in seeds:
                extra = {} if max_seconds is None else {"item_max_seconds": max_seconds}
                model = NeuralModel(NeuralConfig(seed=seed, **extra))
                settings = model._next_item_settings(events.n_items)
                next_item.NextItemNet = VARIANTS[variant]
                try:
                    clock = time.perf_counter()
                    net, info = next_item.fit_next_item(
                        events, events.n_items, settings, torch.device("cpu")
                    )
                    seconds = time.perf_counter() - clock
                finally:
                    next_item.NextItemNet = VARIANTS["full"]
                test = _test_scores(net, settings, split, ids)
                row = {
                    "dataset": name,
                    "variant": variant,
                    "seed": seed,
                    **{f"test_{k}": v for k, v in test.items()},
                    "valid_ndcg@10": info["validation_ndcg@10"],
                    "best_epoch": info["best_epoch"],
                    "epochs": info["epochs"],
                    "stopped_by": info["stopped_by"],
                    "seconds_to_best": info["seconds_to_best"],
                    "seconds": seconds,
                }
                print(json.dumps(row), flush=True)
                out.append(row)
    return out


def _section(payload: dict) -> str:
    frame = pd.DataFrame(payload["rows"])
    lines = [
        "## Leave-one-out: what mattered",
        "",
        f"- date: {payload['date']}; machine: {payload['machine']}, CPU only",
        "- commands: " + "; ".join(f"`{c}`" for c in payload["commands"]),
        "- the next-item head of `neural` alone, on the split of the table above; median over"
        " seeds [min–max]; time: seconds to the best validation epoch",
        "",
        "| data set | variant | test NDCG@10 | test HR@10 | to best validation | seeds |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (name, variant), part in frame.groupby(["dataset", "variant"], sort=False):

        def cell(column: str, digits: int = 4, part=part) -> str:
            values = part[column]
            return (
                f"{statistics.median(values):.{digits}f} "
                f"[{values.min():.{digits}f}–{values.max():.{digits}f}]"
            )

        lines.append(
            f"| {name} | {variant} | {cell('test_ndcg@10')} | {cell('test_hr@10')} | "
            f"{cell('seconds_to_best', 0)} s | {len(part)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="taobao")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--item-max-seconds",
        type=float,
        help="the head's wall-clock budget (default NeuralConfig's 600 s); on a loaded"
        " machine the default stops it by time long before early stopping would",
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the rows of bench/loo_ablation.json for other (data set, variant, seed)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [
        row
        for name in args.datasets.split(",")
        for row in run(name, variants, seeds, args.item_max_seconds)
    ]
    command = (
        f"python bench/loo_ablation.py --datasets {args.datasets} --seeds {args.seeds}"
        f" --variants '{args.variants}' --threads {args.threads}"
    )
    if args.item_max_seconds is not None:
        command += f" --item-max-seconds {args.item_max_seconds:g}"
    commands = [command]
    if args.append and OUT.exists():
        old = json.loads(OUT.read_text())
        key = ("dataset", "variant", "seed")
        new = {tuple(row[k] for k in key) for row in rows}
        rows = [r for r in old["rows"] if tuple(r[k] for k in key) not in new] + rows
        commands = [c for c in old["commands"] if c != command] + [command + " --append"]
    payload = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "commands": commands,
        "rows": rows,
    }
    OUT.write_text(json.dumps(payload, indent=1))
    print(_section(payload))
    if not args.no_write:
        write_section("Leave-one-out: what mattered", _section(payload))


if __name__ == "__main__":
    main()
