"""Why `neural` trails `btyd` on "will the user come back tomorrow" (Taobao holdout).

At the cut-off of `ebbtide evaluate`'s default holdout on the bundled slice, this fits
`btyd`, `decay` and `neural` and ranks the 815 users for "any event in the next 24 h" by
each model's p_return and by four plain features read from the log before the cut:
hours since the last event, active days in the last 7, events in the last 24 h, and all
events. Per ranker: ROC-AUC, and Spearman's correlation with each feature, so one can see
what each model's answer follows.

    python bench/return_diagnosis.py

Writes the RESULTS.md section "Taobao holdout: what p_return follows".
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

from _results import machine, write_section
from ebbtide.datasets import taobao_sample_path
from ebbtide.evaluate.metrics import roc_auc
from ebbtide.evaluate.temporal import holdout_targets
from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.scoring import build_model
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 2, 15, 59, 24, tzinfo=UTC)  # `ebbtide evaluate`'s default here
HORIZON = timedelta(days=1)
FAMILIES = ("btyd", "decay", "neural")


def _features(store: EventStore) -> pd.DataFrame:
    return store.con.execute(
        """SELECT u.user_id,
               epoch(?::TIMESTAMPTZ - max(e.ts)) / 3600 AS hours_since_last,
               count(DISTINCT CAST(e.ts AS DATE))
                   FILTER (WHERE e.ts >= ?::TIMESTAMPTZ - INTERVAL 7 DAY) AS active_days_7,
               count(*) FILTER (WHERE e.ts >= ?::TIMESTAMPTZ - INTERVAL 1 DAY) AS events_24h,
               count(*) AS events
           FROM events e JOIN users u USING (user_idx) WHERE e.ts < ? GROUP BY ALL""",
        [CUT, CUT, CUT, CUT],
    ).df()


def diagnose() -> tuple[pd.DataFrame, float, int]:
    """The rankers' table, the share of users who came back, and how many users."""
    with tempfile.TemporaryDirectory() as folder, EventStore(Path(folder) / "s.duckdb") as store:
        ingest_file(store, taobao_sample_path(), "taobao")
        targets = holdout_targets(store, cutoff=CUT, horizon=HORIZON).users
        frame = targets[["user_id", "returned"]].merge(_features(store), on="user_id")
        for family in FAMILIES:
            model = build_model(family).fit(store, cutoff=CUT)
            answer = model.p_return(
                snapshot(store, at=CUT), list(frame["user_id"]), horizon=HORIZON
            )
            frame = frame.merge(answer.rename(columns={"p_return": family}), on="user_id")
    features = ["hours_since_last", "active_days_7", "events_24h", "events"]
    rows = []
    for ranker in [*FAMILIES, *features]:
        sign = -1.0 if ranker == "hours_since_last" else 1.0
        row = {
            "ranker": ranker,
            "auc": roc_auc(frame["returned"].to_numpy(), sign * frame[ranker].to_numpy()),
        }
        for feature in features:
            row[feature] = spearmanr(frame[ranker], frame[feature]).statistic
        rows.append(row)
    return pd.DataFrame(rows), float(frame["returned"].mean()), len(frame)


def _section(table: pd.DataFrame, rate: float, users: int) -> str:
    features = [c for c in table.columns if c not in ("ranker", "auc")]
    lines = [
        "## Taobao holdout: what p_return follows",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {machine()}, CPU only",
        "- command: `python bench/return_diagnosis.py`",
        f"- cut-off {CUT:%Y-%m-%d %H:%M} UTC, next 24 h; {users} users, {rate:.1%} came back;"
        " models with their defaults; features from the events before the cut",
        "",
        "| ranker | return AUC | " + " | ".join(f"ρ with {f}" for f in features) + " |",
        "|---|---:|" + "---:|" * len(features),
    ]
    for row in table.to_dict(orient="records"):
        cells = " | ".join(f"{row[f]:+.2f}" for f in features)
        lines.append(f"| {row['ranker']} | {row['auc']:.3f} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    section = _section(*diagnose())
    print(section)
    if not args.no_write:
        write_section("Taobao holdout: what p_return follows", section)


if __name__ == "__main__":
    main()
