"""Campaign of 64,000 customers in three arms: how long analysis, uplift fitting and
planning take, and how close learned targeting comes to targeting by the true effect.

Timed steps (each on the same log): *analyse* = read the CSV log, validate it, and run
`analyze_campaign` on visit, conversion and spend (A/B table with SRM, out-of-fold X-learner
uplift per arm with curves and deciles, off-policy IPW/SNIPW/DR with 200 bootstrap
resamples per outcome); *A/B only* = the same without features; *plan* = learned effects of
push and coupon for every customer turned into a budgeted plan with the default catalogue
(greedy, 3 paid actions per customer); *plan 1M* = the planner alone on one million
customers x 4 actions.

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
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from _results import machine, write_section
from ebbtide.activate.actions import default_actions, override
from ebbtide.activate.campaign_analysis import analyze_campaign
from ebbtide.activate.campaign_log import prepare_campaign, read_campaign_log
from ebbtide.activate.planner import build_candidates, plan_campaign
from ebbtide.activate.qini import effect_qini
from ebbtide.activate.uplift import XLearner, compare_learners
from ebbtide.errors import CampaignWarning
from ebbtide.synthetic_campaigns import CampaignConfig, generate_campaign

FEATURES = ["recency_days", "frequency", "monetary", "interest_trend", "channel", "segment"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=64_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()

    rows, fit_seconds = {}, []
    timings: dict[str, list[float]] = {}
    for seed in range(args.repeats):
        campaign = generate_campaign(CampaignConfig(customers=args.customers, seed=seed))
        log = campaign.log
        for name, seconds in _time_steps(log, seed).items():
            timings.setdefault(name, []).append(seconds)
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
        "| step | median | runs |",
        "|---|---:|---|",
        *(
            f"| {name} | {statistics.median(values):.2f} s | "
            f"{', '.join(f'{v:.2f}' for v in values)} |"
            for name, values in timings.items()
        ),
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


def _time_steps(log: pd.DataFrame, seed: int) -> dict[str, float]:
    """Seconds for: analyse (from the CSV file), A/B only, plan, and plan for 1M customers."""
    times = {}
    outcomes = ["visit", "conversion", "spend"]
    features = FEATURES[:-1]
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", CampaignWarning)
        path = Path(folder) / "log.csv"
        log.to_csv(path, index=False)
        clock = time.perf_counter()
        data = prepare_campaign(
            read_campaign_log(path), arm_col="arm", control="control", outcomes=outcomes
        )
        analyze_campaign(data, features=features, seed=seed)
        times["analyse (read, A/B, uplift curves, off-policy x 3 outcomes)"] = (
            time.perf_counter() - clock
        )
        clock = time.perf_counter()
        analyze_campaign(data)
        times["A/B only (in memory)"] = time.perf_counter() - clock

    catalogue = override(default_actions(), budget=len(log) * 0.05, min_days_between_contacts=0)
    clock = time.perf_counter()
    effects = []
    for arm, actions in (("push", ["push", "email"]), ("coupon", ["coupon_5", "coupon_10"])):
        pair = log[log["arm"].isin(["control", arm])]
        model = XLearner(random_state=seed).fit(
            pair[features], (pair["arm"] == arm).to_numpy(), pair["conversion"].to_numpy()
        )
        uplift = model.predict(log[features])
        for action in actions:
            columns = {"user_id": log["user_id"], "action": action, "uplift": uplift}
            columns |= {"p_conversion": np.clip(0.1 + uplift, 0, 1), "order_value": 40.0}
            effects.append(pd.DataFrame(columns))
    candidates = build_candidates(pd.concat(effects, ignore_index=True), catalogue)
    plan_campaign(candidates, catalogue, method="greedy")
    times["plan (fit effects, price, greedy plan)"] = time.perf_counter() - clock

    rng = np.random.default_rng(seed)
    n = 1_000_000
    big = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(n), 4),
            "action": np.tile(["push", "email", "coupon_5", "coupon_10"], n),
            "value": rng.normal(0.01, 0.02, 4 * n),
            "cost": np.tile([0.01, 0.002, 2.0, 4.0], n) * rng.uniform(0.5, 1.5, 4 * n),
        }
    )
    clock = time.perf_counter()
    plan_campaign(big, override(catalogue, budget=50_000.0), method="greedy")
    times["plan 1M customers x 4 actions (planner alone)"] = time.perf_counter() - clock
    return times


if __name__ == "__main__":
    main()
