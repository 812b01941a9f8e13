"""The report's numbers come from the data: the real pipeline on a small synthetic log."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from ebbtide.aggregates import ReleaseConfig
from ebbtide.errors import ConfigError
from ebbtide.ingest import ingest_file
from ebbtide.report.html import render_report
from ebbtide.report.pipeline import build_report_data, default_holdout
from ebbtide.store import EventStore
from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

#: Small enough for seconds: every model of the default list, neural for one epoch.
FAST = {
    "neural": {
        "epochs": 1,
        "item_epochs": 1,
        "hidden": 16,
        "max_train_seconds": 20.0,
        "item_max_seconds": 10.0,
    }
}


def synthetic_store(folder: Path, users: int, seed: int) -> Path:
    """A synthetic Taobao-format log of `users` users over 6 days, ingested into a store."""
    log = generate(
        SynthConfig(users=users, days=6.0, categories=12, items_per_category=15, seed=seed)
    )
    csv = folder / f"synth-{users}-{seed}.csv"
    write_taobao_csv(log, csv)
    path = folder / f"synth-{users}-{seed}.duckdb"
    with EventStore(path) as store:
        ingest_file(store, csv, "taobao")
    return path


@pytest.fixture(scope="module")
def report_data(tmp_path_factory: pytest.TempPathFactory):
    path = synthetic_store(tmp_path_factory.mktemp("report"), users=80, seed=1)
    with EventStore(path, read_only=True) as store:
        # k = 1: this file checks totals that add up, which suppression would break
        privacy = ReleaseConfig(min_group_users=1)
        return build_report_data(store, settings=FAST, drilldown_users=2, privacy=privacy)


def test_every_section_has_numbers_from_the_log(report_data) -> None:
    data = report_data
    assert data.overview["users"] == 80 and data.overview["events"] > 0
    by_day = data.events_by_day.groupby("day")["events"].sum()
    assert by_day.sum() == data.overview["events"]
    assert data.comparison.table["model"].tolist() == [
        "popular", "btyd", "gbdt", "decay", "neural"
    ]  # fmt: skip
    assert data.cutoff < data.scored_at
    assert data.segments["users"].sum() == data.overview["users"]
    assert data.segment_flows["users"].sum() == data.overview["users"]
    assert np.isclose(data.segments["share"].sum(), 1.0)
    assert len(data.plan_table) == data.overview["users"]
    assert data.plan_summary["users"] == data.overview["users"]
    assert not data.decay_curves.empty and (data.half_lives_days > 0).all()
    warning = data.early_warning
    assert list(warning["rank"]) == list(range(1, len(warning) + 1)) and len(warning) > 0
    assert warning.reason.str.len().min() > 0


def test_return_curves_are_shares_and_the_observed_one_never_falls(report_data) -> None:
    curves = report_data.return_curves
    assert curves["hours"].iloc[-1] == pytest.approx(report_data.return_horizon_hours)
    for column in ("observed", "predicted"):
        assert curves[column].between(0, 1).all()
        assert (np.diff(curves[column]) >= -1e-12).all()
    calibration = report_data.return_calibration
    assert calibration["users"].sum() == report_data.comparison.split["users"]


def test_decay_curves_start_at_one_and_fall_toward_the_baseline(report_data) -> None:
    for _, curve in report_data.decay_curves.groupby("category_id"):
        values = curve.sort_values("hours")["relative_interest"].to_numpy()
        assert values[0] == pytest.approx(1.0, rel=1e-6)
        assert (np.diff(values) <= 1e-12).all()


def test_drilldowns_show_the_users_own_events(report_data) -> None:
    assert len(report_data.drilldowns) == 2
    for user in report_data.drilldowns:
        assert not user.curves.empty and (user.curves["level"] >= 0).all()
        assert set(user.events["category_id"]) <= set(user.half_lives)
        assert user.segment in set(report_data.segments["segment"])


def test_another_log_gives_other_numbers(report_data, tmp_path: Path) -> None:
    path = synthetic_store(tmp_path, users=60, seed=2)
    with EventStore(path, read_only=True) as store:
        other = build_report_data(store, models=["decay"], drilldown_users=1)
    assert other.overview["users"] == 60
    assert other.overview["events"] != report_data.overview["events"]
    assert other.model == "decay"
    page, other_page = render_report(report_data), render_report(other)
    events = f"{other.overview['events']:,}"
    assert f">{events}<" in other_page and f">{events}<" not in page


def test_bad_options_fail_before_any_fit(tmp_path: Path) -> None:
    path = synthetic_store(tmp_path, users=20, seed=3)
    with EventStore(path, read_only=True) as store:
        with pytest.raises(ConfigError, match="main model"):
            build_report_data(store, models=["decay"], main="neural")
        with pytest.raises(ConfigError, match="holdout"):
            build_report_data(store, models=["decay"], holdout=timedelta(days=60))


def test_default_holdout_follows_the_length_of_the_log() -> None:
    assert default_holdout(timedelta(days=9)) == timedelta(days=1)
    assert default_holdout(timedelta(days=90)) == timedelta(days=7)


def test_a_log_without_categories_and_a_model_without_interest(tmp_path: Path) -> None:
    """CDNOW-like purchases only, drawn with btyd: no decay figure, no drill-down, no crash."""
    rng = np.random.default_rng(4)
    lines = []
    for customer in range(1, 61):
        days = np.sort(rng.choice(120, size=rng.integers(1, 6), replace=False))
        for day in days:
            date = (np.datetime64("1997-01-01") + int(day)).astype(str).replace("-", "")
            lines.append(f"{customer} {customer} {date} 1 {rng.uniform(5, 40):.2f}")
    log = tmp_path / "cdnow.txt"
    log.write_text("\n".join(lines) + "\n")
    with EventStore(tmp_path / "cdnow.duckdb") as store:
        ingest_file(store, log, "cdnow")
        data = build_report_data(store, models=["decay", "btyd"], drilldown_users=2)
    assert data.model == "btyd" and data.overview["categories"] == 0
    assert data.drilldowns == [] and data.decay_curves.empty
    assert data.return_horizon_hours == 7 * 24  # four months of log: a one-week holdout
    assert data.segments["users"].sum() == 60
    assert data.early_warning.interest_vs_usual.isna().all()
    assert data.early_warning.reason.str.startswith("no interest per category").all()
    html = render_report(data)
    assert 'data-figure="return-curve"' in html and 'data-figure="decay-curves"' not in html


def test_demo_runs_the_same_pipeline_on_a_users_own_file(cli, tmp_path: Path) -> None:
    log = generate(SynthConfig(users=50, days=5.0, categories=8, items_per_category=10, seed=5))
    csv = tmp_path / "mine.csv"
    write_taobao_csv(log, csv)
    out = tmp_path / "mine"
    args = ["demo", "--data", str(csv), "--out-dir", str(out), "--models", "decay,neural"]
    result = cli(*args, "--max-seconds", "5", "--quiet")
    assert result.exit_code == 0, result.output
    assert re.search(r"[\d,]+ of \d+ users", result.stdout)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert str(csv) in html and 'data-figure="user-interest"' in html
    again = cli(*args, "--max-seconds", "5", "--quiet")
    assert again.exit_code == 0 and "already in" in again.output
