"""CTR, conversion and satisfaction in `campaign analyze`, `evaluate` and the report, on a
synthetic log whose impressions, clicks and buys per arm are known."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ebbtide.aggregates import ReleaseConfig
from ebbtide.datasets import taobao_sample_path
from ebbtide.report.html import render_report
from ebbtide.report.pipeline import build_report_data
from ebbtide.store import EventStore

GENERIC = [
    "--format", "generic", "--user-col", "user_id", "--item-col", "item_id",
    "--category-col", "category_id", "--behavior-col", "behavior", "--time-col", "timestamp",
    "--time-format", "epoch_s", "--query-col", "query", "--value-col", "value",
    "--placement-col", "placement",
]  # fmt: skip
#: Before the synthetic log starts: every impression counts.
START = "2017-11-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def shop(cli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`synth --behaviours all` in a store."""
    folder = tmp_path_factory.mktemp("clicks")
    log = folder / "log.csv"
    cli.ok("synth", "--out", str(log), "--users", "200", "--days", "5", "--behaviours", "all",
           "--seed", "3", "--quiet")  # fmt: skip
    db = folder / "shop.duckdb"
    cli.ok("ingest", str(log), "--db", str(db), *GENERIC, "--quiet")
    truth = folder / "log.truth"
    return {"db": db, "events": log, "arms": truth / "arms.parquet",
            "assignments": truth / "assignments.csv"}  # fmt: skip


def _arm_rows(payload: dict) -> dict[str, dict]:
    return {row["group"]: row for row in payload["engagement"]["funnel"] if row["by"] == "arm"}


def test_campaign_analyze_measures_each_arm_from_the_store(cli, shop, tmp_path: Path) -> None:
    report, markdown = tmp_path / "rates.json", tmp_path / "rates.md"
    args = [
        "campaign", "analyze", str(shop["assignments"]), "--arm-col", "arm",
        "--control", "control", "--db", str(shop["db"]), "--at", START,
        "--json", str(report), "--markdown", str(markdown),
    ]  # fmt: skip
    result = cli.ok(*args)
    assert "Clicks and conversion per arm after" in result.stdout
    assert "Each arm against the control arm control" in result.stdout
    assert "clustered by user" in result.stdout
    rows = _arm_rows(json.loads(report.read_text()))
    truth = pd.read_parquet(shop["arms"]).set_index("arm")
    for arm in ("control", "personalised"):
        assert rows[arm]["impressions"] == truth.at[arm, "impressions"]
        assert rows[arm]["clicks"] == truth.at[arm, "clicks"]
        assert abs(rows[arm]["conversions"] - truth.at[arm, "conversions"]) <= 2
        assert rows[arm]["unattributed_clicks"] == 0
    assert markdown.read_text().startswith("## Clicks, conversion and satisfaction")
    # the same text on a narrow terminal
    narrow = cli.runner.invoke(cli.app, args, env={"COLUMNS": "40"})
    assert narrow.exit_code == 0 and narrow.stdout == result.stdout


def test_ctr_and_conversion_by_arm_cover_the_true_rates(cli, shop, tmp_path: Path) -> None:
    """The bar: each arm's CTR and click conversion, measured from the store, hold the
    synthetic truth inside their 95% intervals, and the intervals are narrow enough to
    tell the arms apart (the true CTRs are 0.04 and 0.08)."""
    report = tmp_path / "rates.json"
    cli.ok(
        "campaign", "analyze", str(shop["assignments"]), "--arm-col", "arm",
        "--control", "control", "--db", str(shop["db"]), "--at", START, "--json", str(report),
    )  # fmt: skip
    rows = _arm_rows(json.loads(report.read_text()))
    truth = pd.read_parquet(shop["arms"]).set_index("arm")
    for arm in ("control", "personalised"):
        for rate in ("ctr", "conversion"):
            low, high = rows[arm][f"{rate}_low"], rows[arm][f"{rate}_high"]
            assert low <= truth.at[arm, rate] <= high, (arm, rate, low, high)
    assert rows["control"]["ctr_high"] < truth.at["personalised", "ctr"]
    assert rows["personalised"]["ctr_low"] > truth.at["control", "ctr"]


def test_campaign_analyze_adds_the_rates_to_the_ab_tables(cli, shop, tmp_path: Path) -> None:
    report, markdown = tmp_path / "both.json", tmp_path / "both.md"
    cli.ok(
        "campaign", "analyze", str(shop["assignments"]), "--arm-col", "arm",
        "--control", "control", "--outcomes", "clicked,converted", "--db", str(shop["db"]),
        "--at", START, "--json", str(report), "--markdown", str(markdown),
    )  # fmt: skip
    payload = json.loads(report.read_text())
    assert {row["arm"] for row in payload["ab"]["table"]} == {"personalised"}
    assert set(_arm_rows(payload)) == {"control", "personalised"}
    effects = payload["engagement"]["arm_effects"]
    assert {row["metric"] for row in effects} >= {"ctr", "conversion", "mean_rating"}
    text = markdown.read_text()
    assert text.index("Sample ratio") < text.index("## Clicks, conversion and satisfaction")


def test_campaign_analyze_without_outcomes_needs_clicks_in_the_store(cli, shop, tmp_path) -> None:
    log = str(shop["assignments"])
    bad = cli("campaign", "analyze", log, "--arm-col", "arm", "--control", "control")
    assert bad.exit_code == 1 and "--outcomes: name the log's outcome columns" in bad.stderr
    db = tmp_path / "taobao.duckdb"
    cli.ok("ingest", str(taobao_sample_path()), "--db", str(db), "--quiet")
    bad = cli("campaign", "analyze", log, "--arm-col", "arm", "--control", "control",
              "--db", str(db), "--at", START)  # fmt: skip
    assert bad.exit_code == 1
    assert f"no impressions, clicks or ratings after {START}" in bad.stderr
    bad = cli("campaign", "analyze", log, "--arm-col", "arm", "--control", "holdout",
              "--db", str(shop["db"]), "--at", START)  # fmt: skip
    assert bad.exit_code == 1 and "control arm 'holdout'" in bad.stderr


def test_evaluate_measures_the_test_window(cli, shop, tmp_path: Path) -> None:
    report, markdown = tmp_path / "eval.json", tmp_path / "eval.md"
    cutoff = "2017-11-27T00:00:00+00:00"
    result = cli.ok(
        "evaluate", "--db", str(shop["db"]), "--models", "popular", "--cutoff", cutoff,
        "--horizon", "1d", "--json", str(report), "--markdown", str(markdown), "--quiet",
    )  # fmt: skip
    assert "Clicks and conversion in the test window" in result.stdout
    events = pd.read_csv(shop["events"])
    ts = pd.to_datetime(events["timestamp"], unit="s", utc=True)
    start = pd.Timestamp(cutoff)
    shown = (
        (events["behavior"] == "impression") & (ts >= start) & (ts < start + pd.Timedelta(days=1))
    )
    funnel = json.loads(report.read_text())["engagement"]["funnel"]
    placements = {row["group"]: row for row in funnel if row["by"] == "placement"}
    assert placements["home_recs"]["impressions"] == int(shown.sum())
    assert "## Clicks, conversion and satisfaction" in markdown.read_text()


def test_the_report_shows_the_rates_and_leaves_them_out_when_private(shop) -> None:
    with EventStore(shop["db"], read_only=True) as store:
        plain = build_report_data(store, models=["decay"], drilldown_users=1)
        private = build_report_data(
            store,
            models=["decay"],
            drilldown_users=1,
            privacy=ReleaseConfig(epsilon=1.0, seed=0),
        )
    funnel = pd.DataFrame(plain.engagement["funnel"])
    assert set(funnel["by"]) == {"overall", "placement", "segment at cut-off"}
    assert (funnel["users"] >= 10).all()
    page = render_report(plain)
    assert '<section id="engagement">' in page and "CTR [95%]" in page
    assert private.engagement is None
    assert any("clicks, conversion and satisfaction are left out" in n for n in private.notes)
    assert '<section id="engagement">' not in render_report(private)
