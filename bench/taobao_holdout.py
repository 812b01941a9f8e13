"""Category re-engagement and purchase on the Taobao slice: every family, one split.

Cut at 2017-12-02 00:00 China time (16:00 UTC the day before); each model is fitted on
events before the cut and asked, at the cut, for the next 24 h:

- re-engagement: p_engage of every (user, category) pair the user touched before the
  cut; positive if the user has any event in that category in the window;
- purchase: p_buy of every user with history; positive if the user buys in the window.

Two closed-form references sit beside the families: a decayed count of the user's
events in the category (2-day half-life) and a decayed count of past purchases.

    python bench/taobao_holdout.py [--models neural,decay,gbdt,popular,btyd] [--seeds 3]

Writes bench/RESULTS.md (section "Taobao temporal holdout") and a JSON next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from _results import add_settings_option, machine, parse_settings, settings_flags, write_section
from ebbtide.datasets import taobao_sample_path
from ebbtide.errors import UnsupportedQueryError
from ebbtide.evaluate.holdout import engagement_labels, purchase_labels
from ebbtide.evaluate.metrics import roc_auc
from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.scoring import build_model
from ebbtide.schema import Behavior
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)
HORIZON = timedelta(hours=24)
HERE = Path(__file__).resolve().parent


def _pairs(store: EventStore) -> pd.DataFrame:
    """Every (user, category) touched before the cut, with the two reference scores."""
    return store.con.execute(
        """SELECT u.user_id, c.category_id,
               sum(exp(-ln(2) * epoch(? - e.ts) / 86400 / 2.0)) AS decayed_count
        FROM events e JOIN users u USING (user_idx) JOIN categories c USING (category_idx)
        WHERE e.ts < ? GROUP BY ALL ORDER BY ALL""",
        [CUT, CUT],
    ).df()


def _buyers(store: EventStore) -> pd.DataFrame:
    return store.con.execute(
        """SELECT u.user_id,
               sum(CASE WHEN e.behavior = ? THEN exp(-ln(2) * epoch(? - e.ts) / 86400 / 2.0)
                   ELSE 0 END) AS decayed_buys
        FROM events e JOIN users u USING (user_idx)
        WHERE e.ts < ? GROUP BY ALL ORDER BY ALL""",
        [Behavior.BUY.code, CUT, CUT],
    ).df()


def _evaluate(store, name, seed, settings, pairs, users, engaged, bought) -> dict:
    model = build_model(name, **settings, **({} if seed is None else {"seed": seed}))
    clock = time.perf_counter()
    model.fit(store, cutoff=CUT)
    fit_s = time.perf_counter() - clock
    clock = time.perf_counter()
    row = {"model": name, "seed": seed, "fit_s": fit_s}
    history = snapshot(store, at=CUT)
    if "interest" in model.answers:
        interest = model.interest(history, horizon=HORIZON)
        p = pairs.merge(interest, how="left", on=["user_id", "category_id"])["p_engage"]
        row["engage_auc"] = roc_auc(engaged, p.fillna(0.0))
    with contextlib.suppress(UnsupportedQueryError):
        p_buy = users.merge(model.p_buy(history, horizon=HORIZON), how="left", on="user_id")
        row["buy_auc"] = roc_auc(bought, p_buy["p_buy"].fillna(0.0))
    row["score_s"] = time.perf_counter() - clock
    row["metrics"] = {k: v for k, v in getattr(model, "metrics_", {}).items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="neural,decay,gbdt,popular,btyd")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the seeded families")
    add_settings_option(parser)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EventStore(Path(tmp) / "s.duckdb") as store:
        ingest_file(store, taobao_sample_path(), "taobao")
        pairs, users = _pairs(store), _buyers(store)
        engaged = engagement_labels(store, pairs, at=CUT, horizon=HORIZON)
        bought = purchase_labels(store, users.user_id, at=CUT, horizon=HORIZON)
        rows = [
            {
                "model": "reference: decayed count (2-day half-life)",
                "engage_auc": roc_auc(engaged, pairs.decayed_count),
                "buy_auc": roc_auc(bought, users.decayed_buys),
            }
        ]
        for name in args.models.split(","):
            seeded = name in ("neural", "gbdt")
            for seed in range(args.seeds) if seeded else [None]:
                settings = parse_settings(args.set) if name == "neural" else {}
                row = _evaluate(store, name, seed, settings, pairs, users, engaged, bought)
                print(json.dumps(row, default=str))
                rows.append(row)
    _report(rows, pairs, engaged, users, bought, args)


def _report(rows, pairs, engaged, users, bought, args) -> None:
    (HERE / "taobao_holdout.json").write_text(json.dumps(rows, indent=1, default=str))
    lines = [
        "## Taobao temporal holdout",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}, CPU only",
        f"- command: `python bench/taobao_holdout.py --models {args.models} --seeds {args.seeds}"
        + settings_flags(args.set)
        + "`",
        f"- split: fit on events before {CUT:%Y-%m-%d %H:%M} UTC (2017-12-02 00:00 China "
        f"time), answer for the next {HORIZON.total_seconds() / 3600:.0f} h",
        f"- re-engagement: {len(pairs):,} (user, category) pairs, {engaged.mean():.1%} "
        f"engaged; purchase: {len(users):,} users, {bought.mean():.1%} bought",
        "- seeded families: median over seeds, range in brackets",
        "",
        "| model | re-engagement AUC | purchase AUC | fit time | score time |",
        "|---|---:|---:|---:|---:|",
    ]
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    for name, group in by_model.items():
        cells = [name]
        for key in ("engage_auc", "buy_auc", "fit_s", "score_s"):
            values = [r[key] for r in group if r.get(key) is not None]
            if not values:
                cells.append("–")
                continue
            fmt = "{:.3f}" if key.endswith("auc") else "{:.1f} s"
            text = fmt.format(statistics.median(values))
            if len(values) > 1:
                text += f" [{fmt.format(min(values))}–{fmt.format(max(values))}]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section("Taobao temporal holdout", section)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
