"""Our families on the leave-one-out split the RecBole peers use (bench/_loo_data.py).

Each data set is written as a CSV log (ml-100k: every rating a view in one category;
taobao: the filtered rows with their real category and behaviour) with times in
milliseconds, the rows of one user in one second spread over that second in file order, so
that ties in time fall as RecBole orders them; it is ingested into a store and evaluated
with `ebbtide.evaluate.leave_one_out`: fit on train, rank the whole
catalogue, HR/NDCG/MRR@10 of the validation and test targets. The split is checked against
`_loo_data.leave_one_out` target by target before any number is reported.

    python bench/loo_ours.py [--datasets taobao,ml-100k] [--models popular,decay,neural]

Writes bench/loo_ours.json and the RESULTS.md section "Leave-one-out: ours and RecBole",
with the peers' numbers from bench/recbole_results.json (bench/recbole_peers.py) beside
ours: same interactions, same split, same metrics.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch

from _loo_data import TAOBAO_FILE, load_interactions
from _loo_data import leave_one_out as loo_labels
from _results import machine, write_section
from ebbtide.evaluate.leave_one_out import leave_one_out, split_leave_one_out
from ebbtide.ingest import ColumnMapping, ingest_file
from ebbtide.models.scoring import build_model
from ebbtide.store import EventStore

HERE = Path(__file__).resolve().parent
OUT = HERE / "loo_ours.json"


def _rows(name: str) -> pd.DataFrame:
    """The interactions as Taobao-format rows (user, item, category, behavior, timestamp)."""
    df = load_interactions(name)
    if name == "ml-100k":
        return df.assign(category="movie", behavior="pv")[
            ["user_id", "item_id", "category", "behavior", "timestamp"]
        ]
    raw = pd.read_csv(
        TAOBAO_FILE, header=None, dtype=str,
        names=["user_id", "item_id", "category", "behavior", "timestamp"],
    ).astype({"timestamp": "int64"})  # fmt: skip
    raw["n"] = raw.groupby(["user_id", "item_id", "timestamp"]).cumcount()
    df["n"] = df.groupby(["user_id", "item_id", "timestamp"]).cumcount()
    merged = df.merge(raw, on=["user_id", "item_id", "timestamp", "n"], how="left")
    if merged["category"].isna().any():
        raise AssertionError("some filtered interactions have no raw row")
    return merged[["user_id", "item_id", "category", "behavior", "timestamp"]]


def ingest_loo(name: str, folder: Path) -> tuple[Path, object, int]:
    """The data set's interactions as a store in `folder`: its path, the ingest summary
    and the number of rows written."""
    rows = _rows(name)
    path = folder / f"{name}.csv"
    tie = rows.groupby(["user_id", "timestamp"]).cumcount()
    rows = rows.assign(time_ms=rows["timestamp"] * 1000 + tie.clip(upper=999))
    rows.drop(columns="timestamp").to_csv(path, index=False)
    mapping = ColumnMapping(
        user_col="user_id", item_col="item_id", time_col="time_ms",
        category_col="category", behavior_col="behavior", behavior_map="pv=view",
        time_format="epoch_ms", keep_repeats=True,
    )  # fmt: skip
    with EventStore(folder / "s.duckdb") as store:
        summary = ingest_file(store, path, "generic", mapping=mapping)
    return folder / "s.duckdb", summary, len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="taobao,ml-100k")
    parser.add_argument("--models", default="popular,decay,neural")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1, as RecBole's runs)"
    )
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md as it is")
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="only rewrite the RESULTS.md section from bench/loo_ours.json (e.g. after more"
        " RecBole runs)",
    )
    args = parser.parse_args()
    if args.rewrite:
        write_section("Leave-one-out: ours and RecBole", _section(json.loads(OUT.read_text())))
        return
    torch.set_num_threads(args.threads)
    results = []
    for name in args.datasets.split(","):
        with tempfile.TemporaryDirectory() as folder:
            db, summary, n_rows = ingest_loo(name, Path(folder))
            with EventStore(db) as store:
                split = split_leave_one_out(store, Path(folder) / "check")
                expected = load_interactions(name)[loo_labels(load_interactions(name)) == 2]
                same = split.targets.set_index("user_id")["test_item"].sort_index()
                theirs = expected.set_index("user_id")["item_id"].sort_index()
                agree = float((same.reindex(theirs.index) == theirs).mean())
                models = [build_model(family) for family in args.models.split(",")]
                result = leave_one_out(store, models, k=10, on_stage=print)
                training = {m.name: getattr(m, "metrics_", {}) for m in models}
        record = {
            "dataset": name,
            "rows": n_rows,
            "loaded": summary.loaded,
            "duplicates": summary.duplicates,
            "test_targets_equal_to_recbole_split": agree,
            **result.to_dict(),
            "training": training,
        }
        print(json.dumps(record, indent=1))
        results.append(record)
    payload = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "command": (
            f"python bench/loo_ours.py --datasets {args.datasets} --models {args.models}"
            f" --threads {args.threads}"
        ),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "results": results,
    }
    OUT.write_text(json.dumps(payload, indent=1))
    if not args.no_write:
        write_section("Leave-one-out: ours and RecBole", _section(payload))


def _section(payload: dict) -> str:
    """Ours and the peers per data set: test HR/NDCG/MRR@10 and the time each took."""
    peers_path = HERE / "recbole_results.json"
    peers = json.loads(peers_path.read_text()) if peers_path.exists() else {}
    lines = [
        "## Leave-one-out: ours and RecBole",
        "",
        f"- ours: {payload['date']}, machine: {payload['machine']}, CPU only, "
        f"`{payload['command']}`",
        *_peer_provenance(peers),
        "- protocol: bench/_loo_data.py (ml-100k all ratings; Taobao slice, all behaviours, "
        "user 100370 dropped, iterative 5-core); last interaction test, second to last "
        "validation; full ranking, seen items not excluded; ours scored at the moment of the "
        "held-out event; RecBole: CE loss, hidden 64, max length 50, early stopping on "
        "validation NDCG@10 (stopping step 3)",
        "- RecBole, seen masked: the same trained model, its test ranking with every item of"
        " the user's history before the target (training and validation rows) set to −inf,"
        " the target too: a target the user had seen (a repeat) is unreachable and counts as"
        " a miss, as for any recommender of unseen items. *Target kept*: the target is never"
        " masked (the popularity_unseen baseline's rule); it uses the answer to choose what"
        " to mask, so it is an upper bound, not a ranking one could serve. Ours is never"
        " masked: its next-item head mixes a pointer over the user's own events with a"
        " softmax over the items not among them",
        "- time: wall-clock seconds until the best validation epoch (RecBole: its trainer's"
        " epochs; ours: the whole fit until the next-item head's best epoch, point process"
        " included) and, for ours, the whole fit and scoring; torch threads as in the command",
        "",
        "| data set | model | test HR@10 | test NDCG@10 | test MRR@10 | to best validation"
        " | fit + score | split check |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for record in payload["results"]:
        name = record["dataset"]
        check = f"{record['test_targets_equal_to_recbole_split']:.1%} targets equal"
        for row in record["models"]:
            seconds = row["fit_seconds"] + row["score_seconds"]
            lines.append(
                f"| {name} | ebbtide {row['model']} | {row['test_hr@10']:.4f} | "
                f"{row['test_ndcg@10']:.4f} | {row['test_mrr@10']:.4f} | "
                f"{_to_best(row, record['training'].get(row['model'], {}))} | {seconds:.0f} s | "
                f"{check} |"
            )
        for run in peers.get("runs", []):
            if run["dataset"] == name:
                test = run["test"]
                capped = ", capped" if run.get("capped") else ""
                lines.append(
                    f"| {name} | RecBole {run['model']} (best epoch {run['best_epoch']}"
                    f"{capped}) | {test['hr@10']:.4f} | {test['ndcg@10']:.4f} | "
                    f"{test['mrr@10']:.4f} | {run['time_to_best_s']:.0f} s | – | same file |"
                )
                masking = run.get("test_masking", {})
                for key, label in (
                    ("masked", "seen masked"),
                    ("masked_target_kept", "seen masked, target kept"),
                ):
                    if key in masking:
                        m = masking[key]
                        lines.append(
                            f"| {name} | RecBole {run['model']}, {label} | {m['hr@10']:.4f} |"
                            f" {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | same model | – |"
                            " same file |"
                        )
        for base in peers.get("baselines", []):
            if base["dataset"] == name:
                test = base["test"]
                lines.append(
                    f"| {name} | baseline: {base['model']} | {test['hr@10']:.4f} | "
                    f"{test['ndcg@10']:.4f} | {test['mrr@10']:.4f} | – | – | same file |"
                )
    lines += _new_target_table(peers)
    return "\n".join(lines) + "\n"


def _peer_provenance(peers: dict) -> list[str]:
    """One line per RecBole command: the runs (data set, model) it made and when."""
    if not peers.get("runs"):
        return ["- peers: not run"]
    by_command: dict[str, list[dict]] = {}
    for run in peers["runs"]:
        by_command.setdefault(run.get("command", "unknown"), []).append(run)
    lines = []
    for command, runs in by_command.items():
        made = ", ".join(f"{r['dataset']} {r['model']} ({r['finished']})" for r in runs)
        lines.append(f"- peers: `{command}` made {made}")
    return lines


def _new_target_table(peers: dict) -> list[str]:
    """RecBole's test NDCG@10 on the users whose target is not in their history."""
    runs = [r for r in peers.get("runs", []) if "test_masking" in r]
    if not runs:
        return []
    lines = [
        "",
        "RecBole on the users whose test target is new to them (masking cannot hide it"
        " there, so masked and target kept coincide), and the share of test targets that"
        " are repeats:",
        "",
        "| data set | model | repeat targets | users with a new target | NDCG@10 unmasked |"
        " NDCG@10 seen masked | HR@10 unmasked | HR@10 seen masked |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        m = run["test_masking"]
        raw, masked = m["unmasked"]["new_target"], m["masked"]["new_target"]
        lines.append(
            f"| {run['dataset']} | RecBole {run['model']} | {m['share_target_in_history']:.1%}"
            f" | {raw['users']} | {raw['ndcg@10']:.4f} | {masked['ndcg@10']:.4f} |"
            f" {raw['hr@10']:.4f} | {masked['hr@10']:.4f} |"
        )
    return lines


def _to_best(row: dict, training: dict) -> str:
    """Seconds of the fit until the next-item head's best validation epoch (neural only)."""
    if "next_item_seconds_to_best" not in training:
        return "–"
    after_best = training["next_item_seconds"] - training["next_item_seconds_to_best"]
    epoch = training["next_item_best_epoch"]
    return f"{row['fit_seconds'] - after_best:.0f} s (epoch {epoch})"


if __name__ == "__main__":
    main()
