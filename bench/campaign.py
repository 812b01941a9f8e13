"""Campaign of 64,000 customers in three arms: how long analysis, uplift fitting and
planning take, and how close learned targeting comes to targeting by the true effect.

The log comes from `ebbtide.synthetic_campaigns` (control, push, coupon; known per-customer
effects). Uplift learners are fitted on 70% of the coupon-vs-control rows and judged on the
rest twice: by the observed Qini (what a user would see) and by the *true* Qini, the area
under the cumulative true effect of targeting in the learner's order, relative to ordering
by the true effect itself (1.0 = oracle). Each step runs ``--repeats`` times; medians.

    python bench/campaign.py [--customers 64000] [--repeats 3] [--no-write]

Writes bench/RESULTS.md (section "Campaign analysis").
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

import numpy as np

from _results import machine, write_section
from ebbtide.activate.qini import effect_qini
from ebbtide.activate.uplift import compare_learners
from ebbtide.synthetic_campaigns import CampaignConfig, generate_campaign

FEATURES = ["recency_days", "frequency", "monetary", "interest_trend", "channel", "segment"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=64_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()

    rows, fit_seconds = {}, []
    for seed in range(args.repeats):
        campaign = generate_campaign(CampaignConfig(customers=args.customers, seed=seed))
        log = campaign.log
        keep = log["arm"].isin(["control", "coupon"]).to_numpy()
        pair = log[keep]
        effect = campaign.true_effect("coupon")[keep]
        clock = time.perf_counter()
        result = compare_learners(
            pair, (pair["arm"] == "coupon").to_numpy(), "conversion", FEATURES, seed=seed
        )
        fit_seconds.append(time.perf_counter() - clock)
        scores = result.test_scores
        held_effect = effect[pair.index.get_indexer(scores.index)]
        for row in result.table.itertuples():
            if row.learner == "random":
                score = np.random.default_rng(seed).random(held_effect.size)
            else:
                score = scores[row.learner].to_numpy()
            rows.setdefault(row.learner, []).append(
                (
                    row.qini,
                    row.uplift_at_10pct,
                    effect_qini(score, held_effect),
                    row.fit_seconds,
                )
            )
        print(f"seed {seed}: {time.perf_counter() - clock:.1f} s")

    lines = [
        "## Campaign analysis",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}, CPU only",
        f"- command: `python bench/campaign.py --customers {args.customers}"
        f" --repeats {args.repeats}`",
        f"- data: `ebbtide campaign synth`, {args.customers:,} customers in three equal arms "
        "(control, push, coupon), seeds 0..; uplift of coupon vs control on conversion, "
        "70/30 split; medians over seeds",
        f"- fitting all three learners: {statistics.median(fit_seconds):.1f} s (median)",
        "",
        "| learner | observed Qini (per customer) | uplift@10% | true Qini / oracle | fit |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in rows.items():
        qini, at10, ratio, seconds = (statistics.median(v) for v in zip(*values, strict=True))
        fit = "–" if name == "random" else f"{seconds:.1f} s"
        lines.append(f"| {name} | {qini:.4f} | {at10:+.4f} | {ratio:.2f} | {fit} |")
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section("Campaign analysis", section)


if __name__ == "__main__":
    main()
