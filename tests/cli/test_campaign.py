"""`ebbtide campaign synth`, `analyze` and `uplift` end to end, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def test_campaign_synth_writes_log_and_truth(cli, tmp_path: Path) -> None:
    log, truth = tmp_path / "log.csv", tmp_path / "truth.parquet"
    cli.ok("campaign", "synth", "--out", str(log), "--customers", "500", "--truth-out", str(truth))
    frame = pd.read_csv(log)
    assert len(frame) == 500 and set(frame.arm) == {"control", "push", "coupon"}
    assert len(pd.read_parquet(truth)) == 500
    bad = cli("campaign", "synth", "--out", str(log), "--customers", "0")
    assert bad.exit_code == 1 and "customers" in bad.output


def test_campaign_analyze_and_uplift(cli, tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    cli.ok("campaign", "synth", "--out", str(log), "--customers", "4000", "--seed", "3")
    report, markdown = tmp_path / "analysis.json", tmp_path / "analysis.md"
    features = "recency_days,frequency,monetary,interest_trend,channel"
    result = cli.ok(
        "campaign", "analyze", str(log), "--arm-col", "arm", "--control", "control",
        "--outcomes", "visit,conversion,spend", "--features", features, "--bootstrap", "50",
        "--json", str(report), "--markdown", str(markdown),
    )  # fmt: skip
    assert "sample ratio: ok" in result.output and "revenue/user" in result.output
    payload = json.loads(report.read_text())
    assert {row["arm"] for row in payload["ab"]["table"]} == {"push", "coupon"}
    assert [v["outcome"] for v in payload["off_policy"]] == ["visit", "conversion", "spend"]
    assert "| dr |" in markdown.read_text()

    scores, summary = tmp_path / "scores.parquet", tmp_path / "uplift.json"
    result = cli.ok(
        "campaign", "uplift", str(log), "--arm-col", "arm", "--control", "control",
        "--treatments", "coupon", "--outcomes", "conversion", "--features", features,
        "--test-size", "0.3", "--seed", "1", "--score-out", str(scores), "--json", str(summary),
    )  # fmt: skip
    assert "random" in result.output and "arm not in control/treatments" in result.output
    table = pd.read_parquet(scores)
    frame = pd.read_csv(log)
    assert len(table) == (frame.arm != "push").sum()
    assert set(table.split) == {"train", "test"}
    assert {"uplift_t", "uplift_x", "uplift_dr"} <= set(table.columns)
    learners = {row["learner"] for row in json.loads(summary.read_text())["learners"]}
    assert learners == {"t", "x", "dr", "random"}


def test_campaign_commands_fail_clearly_on_bad_logs(cli, tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("user_id,arm,conversion\na,push,1\nb,push,0\nc,coupon,1\n")
    args = ["campaign", "analyze", str(log), "--arm-col", "arm", "--control", "control"]
    bad = cli(*args, "--outcomes", "conversion")
    assert bad.exit_code == 1 and "control arm 'control' not found" in bad.output
    bad = cli(*args, "--outcomes", "spend")
    assert bad.exit_code == 1 and "lacks column(s) ['spend']" in bad.output
    (tmp_path / "empty.csv").write_text("")
    bad = cli("campaign", "analyze", str(tmp_path / "empty.csv"), "--arm-col", "arm",
              "--control", "control", "--outcomes", "conversion")  # fmt: skip
    assert bad.exit_code == 1 and "empty" in bad.output


def test_a_plural_option_that_takes_one_value_refuses_two(cli, tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    cli.ok("campaign", "synth", "--out", str(log), "--customers", "300")
    args = ["campaign", "uplift", str(log), "--arm-col", "arm", "--control", "control"]
    bad = cli(*args, "--treatments", "push,coupon", "--outcomes", "conversion")
    assert bad.exit_code == 1
    assert "--treatments 'push,coupon': give exactly one" in bad.stderr
    bad = cli(
        "campaign", "analyze", str(log), "--arm-col", "arm", "--control", "control",
        "--outcomes", "conversion", "--learners", "t,x",
    )  # fmt: skip
    assert bad.exit_code == 1 and "`campaign uplift` compares" in bad.stderr
