"""The HTML report: every section and figure, escaping, offline-ness and empty data.

Built from a hand-made `ReportData` (no model is trained), so the whole file runs in seconds.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebbtide.activate.engagement_rates import engagement_rates
from ebbtide.evaluate.comparison import Comparison
from ebbtide.report.data import ReportData, UserDrilldown
from ebbtide.report.html import render_report, write_html

from .expected import FIGURES, SECTIONS

HOSTILE = ["<script>alert(1)</script>", "$x$", "a&b", 'q"uote']

_FRACTION = [i / 10 for i in range(11)]
#: A trimmed `CampaignAnalysis.to_dict()` (two arms, curves every 10%).
CAMPAIGN = {
    "ab": {
        "control": "control",
        "alpha": 0.05,
        "table": [
            {
                "arm": "coupon",
                "outcome": "conversion",
                "metric": "conversion_rate",
                "n_control": 1319,
                "n_arm": 1399,
                "mean_control": 0.10538,
                "mean_arm": 0.15011,
                "diff": 0.04472,
                "diff_ci_low": 0.01973,
                "diff_ci_high": 0.06972,
                "rel_diff": 0.42440,
                "p_value": 0.000495,
                "p_value_holm": 0.000990,
            },
            {
                "arm": "push",
                "outcome": "conversion",
                "metric": "conversion_rate",
                "n_control": 1319,
                "n_arm": 1282,
                "mean_control": 0.10538,
                "mean_arm": 0.12402,
                "diff": 0.01864,
                "diff_ci_low": -0.00586,
                "diff_ci_high": 0.04314,
                "rel_diff": 0.17690,
                "p_value": 0.13560,
                "p_value_holm": 0.13560,
            },
        ],
        "srm": {
            "threshold": 0.001,
            "observed": {"control": 1319, "coupon": 1399, "push": 1282},
            "method": "chi-square against equal shares",
            "chi2": 5.3645,
            "df": 2,
            "p_value": 0.0684,
            "srm_detected": False,
        },
        "notes": [],
    },
    "uplift": [
        {
            "arm": arm,
            "outcome": "conversion",
            "score": "x-learner, 2-fold out-of-fold",
            "metrics": {"qini": 0.0042, "qini_normalised": 0.069, "auuc": 0.0084},
            "curves": {
                "fraction": _FRACTION,
                "qini": [0.0, 10.7, 25.3, 37.1, 44.0, 52.7, 56.3, 53.6, 55.8, 59.1, 62.6],
                "uplift": [0.0, 22.1, 48.8, 74.4, 86.1, 104.2, 110.1, 103.7, 108.4, 114.6, 121.6],
            },
        }
        for arm in ("coupon", "push")
    ],
    "notes": ["campaign note"],
}


def _drilldown(user_id: str, category: str) -> UserDrilldown:
    ts = pd.date_range("2017-11-25", "2017-12-03", periods=30, tz="UTC")
    curves = pd.DataFrame({"ts": ts, "category_id": category, "level": np.linspace(2.0, 0.2, 30)})
    events = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2017-11-26 10:00", "2017-11-28 12:00"], utc=True),
            "category_id": [category, category],
            "behavior": ["view", "buy"],
        }
    )
    return UserDrilldown(
        user_id=user_id,
        segment="at_risk",
        action="push",
        reason="p_return < 0.5 over 7 d",
        curves=curves,
        events=events,
        half_lives={category: 36.0},
    )


@pytest.fixture(scope="module")
def data() -> ReportData:
    """A small, complete report: every field filled with realistic columns."""
    days = ["2017-11-25", "2017-11-26", "2017-11-27"]
    hours = np.linspace(0.0, 72.0, 13)
    comparison = Comparison(
        table=pd.DataFrame(
            [
                {
                    "model": "neural",
                    "return_auc": 0.81,
                    "return_ece": 0.020,
                    "recall_at_k": 0.12,
                    "fit_seconds": 12.3,
                },
                {
                    "model": "decay",
                    "return_auc": 0.77,
                    "return_ece": 0.015,
                    "recall_at_k": np.nan,
                    "fit_seconds": 1.2,
                },
            ]
        ),
        split={"users": 815},
        k=20,
        notes=["btyd left out"],
    )
    return ReportData(
        title="ebbtide report",
        source="sample.csv (taobao)",
        generated_at="2026-01-01T00:00:00+00:00",
        model="neural",
        cutoff="2017-12-01T00:00:00+00:00",
        scored_at="2017-12-03T00:00:00+00:00",
        overview={
            "users": 815,
            "items": 12345,
            "categories": 321,
            "events": 98765,
            "first_event": "2017-11-25T00:00:00+00:00",
            "last_event": "2017-12-03T00:00:00+00:00",
        },
        events_by_day=pd.DataFrame(
            {
                "day": np.repeat(days, 2),
                "behavior": ["view", "buy"] * 3,
                "events": [900, 20, 950, 25, 870, 18],
            }
        ),
        decay_curves=pd.DataFrame(
            {
                "category_id": np.repeat(["c1", "c2"], 13),
                "hours": np.tile(hours, 2),
                "relative_interest": np.concatenate([np.exp2(-hours / 24), np.exp2(-hours / 48)]),
            }
        ),
        category_half_lives=pd.DataFrame(
            {
                "category_id": ["c1", "c2"],
                "half_life_days": [1.0, 2.0],
                "half_life_low": [0.8, 1.5],
                "half_life_high": [1.3, 2.6],
                "session_half_life_hours": [0.5, 0.8],
                "users": [400, 300],
            }
        ),
        half_lives_days=pd.Series([0.2, 0.5, 1.0, 1.5, 2.0, 8.0]),
        return_curves=pd.DataFrame(
            {
                "hours": hours,
                "observed": np.linspace(0, 0.4, 13),
                "predicted": np.linspace(0, 0.45, 13),
            }
        ),
        return_calibration=pd.DataFrame(
            {"p_mean": [0.1, 0.4, 0.8], "observed": [0.12, 0.35, 0.7], "users": [300, 200, 100]}
        ),
        return_horizon_hours=168.0,
        comparison=comparison,
        segments=pd.DataFrame(
            {
                "segment": ["lost", "at_risk", "active"],
                "users": [100, 215, 500],
                "share": [0.12, 0.26, 0.61],
            }
        ),
        segment_flows=pd.DataFrame(
            {
                "segment_before": ["active", "active", "new"],
                "segment_now": ["active", "lost", "at_risk"],
                "users": [480, 60, 7],
            }
        ),
        early_warning=pd.DataFrame(
            {
                "rank": [1, 2],
                "user_id": ["u1", "u2"],
                "p_return_before": [0.9, 0.8],
                "p_return_now": [0.2, 0.5],
                "p_return_change": [-0.7, -0.3],
                "interest_before": [3.0, 2.0],
                "interest_now": [1.0, 1.5],
                "interest_change": [-0.67, np.nan],
                "faded_categories": [["c1", "c2"], []],
                "faded_change": [[-0.5, -0.2], []],
                "interest_vs_usual_before": [2.5, np.nan],
                "interest_vs_usual": [0.23, np.nan],
                "reason": [
                    "interest at 23% of usual (was 250% at 2017-11-30T16:00+00:00);"
                    " fell most in c1 (-50%), c2 (-20%); P(return 7 d) 0.90 -> 0.20",
                    "usual interest level is 0 or unknown: ranked last, by the"
                    " P(return 7 d) 0.80 -> 0.50",
                ],
            }
        ),
        plan_summary={
            "users": 815,
            "contacts": 120,
            "budget": 1000.0,
            "currency": "EUR",
            "objective": "conversions",
            "spend": 950.5,
            "expected_conversions": 14.2,
            "value": 14.2,
            "method": "exact",
            "assumed_effects": True,
            "notes": ["effects are the prior response model's assumptions"],
        },
        plan_by_action=pd.DataFrame(
            {
                "action": ["push", "email", "none"],
                "segment": ["at_risk", "lost", "active"],
                "users": [80, 40, 695],
                "cost": [800.0, 150.5, 0.0],
                "expected_conversions": [10.0, 4.2, 0.0],
                "value": [10.0, 4.2, 0.0],
            }
        ),
        plan_contacts=pd.DataFrame(
            {
                "user_id": ["u1", "u2"],
                "segment": ["at_risk", "lost"],
                "action": ["push", "email"],
                "items": [["i1", "i2"], ["i3"]],
                "category_interest": [[0.5, 0.25], [0.1]],
                "expected_uplift": [0.12, 0.08],
                "cost": [10.0, 3.76],
                "assumption": [True, True],
            }
        ),
        drilldowns=[_drilldown("u1", "c1"), _drilldown("u2", "c2")],
        campaign=None,
        notes=["holdout of 2 days", "prices missing"],
    )


@pytest.fixture(scope="module")
def page(data: ReportData) -> str:
    """The page without a campaign, rendered once for the tests that only read it."""
    return render_report(data)


@pytest.fixture(scope="module")
def campaign_page(data: ReportData) -> str:
    return render_report(dataclasses.replace(data, campaign=CAMPAIGN))


def _section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.DOTALL)
    assert match, f"section {section_id} missing"
    return match.group(1)


def _figure_has_svg(page: str, name: str) -> bool:
    pattern = rf'<figure class="figure" data-figure="{name}">\s*<svg\b.*?</svg>\s*<figcaption>'
    return re.search(pattern, page, re.DOTALL) is not None


def test_every_section_and_figure_is_there_in_order(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    positions = [page.index(f'<section id="{s}">') for s in SECTIONS]
    assert positions == sorted(positions)
    for name in FIGURES:
        assert _figure_has_svg(page, name), name
    assert page.count('data-figure="user-interest"') == 2
    assert page.count('<article class="user"') == 2
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page


def test_no_campaign_section_without_a_campaign(page: str) -> None:
    assert 'id="campaign"' not in page
    assert "qini-curves" not in page


def test_campaign_section_with_a_campaign(campaign_page: str) -> None:
    page = campaign_page
    campaign = _section(page, "campaign")
    assert _figure_has_svg(page, "qini-curves")
    assert _figure_has_svg(page, "uplift-curves")
    assert "+0.0447 [+0.0197, +0.0697]" in campaign
    assert "1,399" in campaign and "no mismatch" in campaign
    assert page.index('id="campaign"') < page.index('<section id="notes"')


def _engagement() -> dict:
    """CTR and rating tables as the pipeline hands them over: 12 users shown an item on
    "home", 3 of them clicking and 1 buying, one user on a hostile placement, 2 ratings."""
    t0 = pd.Timestamp("2017-12-01", tz="UTC")
    rows = [(f"u{i}", "impression", 0, "home", np.nan) for i in range(12)]
    rows += [(f"u{i}", "click", 1, "home", np.nan) for i in range(3)]
    rows += [("u0", "buy", 30, None, np.nan), ("x", "impression", 0, HOSTILE[0], np.nan)]
    rows += [("u1", "rate", 40, None, 4.0), ("u2", "rate", 40, None, 2.0)]
    events = pd.DataFrame(rows, columns=["user_id", "behavior", "minutes", "placement", "value"])
    events = events.assign(item_id="i1", ts=t0 + pd.to_timedelta(events["minutes"], unit="min"))
    return engagement_rates(events).to_dict()


def test_the_engagement_section_shows_rates_with_intervals(data: ReportData, page: str) -> None:
    assert 'id="engagement"' not in page
    shown = render_report(dataclasses.replace(data, engagement=_engagement()))
    section = _section(shown, "engagement")
    assert '<td class="text">home</td>' in section
    assert "25.00% [" in section and "CTR [95%]" in section
    assert "3.00 [" in section and "clustered by user" in section
    assert HOSTILE[0] not in section and HOSTILE[0].replace("<", "&lt;")[:10] in section
    assert shown.index('id="engagement"') < shown.index('<section id="notes"')


def test_numbers_reach_the_page(data: ReportData, page: str) -> None:
    assert "12,345" in _section(page, "overview")
    changed = dataclasses.replace(data, overview={**data.overview, "users": 816})
    assert "816" in render_report(changed) and "816" not in _section(page, "overview")
    warning = _section(page, "segments")
    assert "23%" in warning and "250%" in warning
    assert "fell most in c1 (-50%), c2 (-20%); P(return 7 d) 0.90 -&gt; 0.20" in warning
    segments = data.segments.assign(users=[100, 216, 500])
    assert render_report(dataclasses.replace(data, segments=segments)) != page


def test_comparison_table_formats_and_marks_the_best(data: ReportData) -> None:
    table = _section(render_report(data), "return")
    assert "<strong>0.8100</strong>" in table  # auc: higher is better
    assert "<strong>0.0150</strong>" in table  # ece: lower is better
    assert "recall@20" in table and "12.3" in table and "–" in table
    assert "<strong>12.3</strong>" not in table  # timings are never highlighted
    assert "btyd left out" in table


def test_plan_warns_about_assumed_effects(data: ReportData, page: str) -> None:
    plan = _section(page, "plan")
    assert 'class="warning"' in plan and "1,000.00 EUR" in plan
    assert "i1, i2" in plan and "0.500, 0.250" in plan
    calm = dataclasses.replace(data, plan_summary={**data.plan_summary, "assumed_effects": False})
    assert 'class="warning"' not in _section(render_report(calm), "plan")


def test_hostile_ids_are_escaped(data: ReportData) -> None:
    """Ids from users' files reach tables, legends, titles and attributes only as text."""
    categories = {"c1": HOSTILE[0], "c2": HOSTILE[1]}
    hostile_data = dataclasses.replace(
        data,
        title=HOSTILE[2],
        decay_curves=data.decay_curves.replace(categories),
        category_half_lives=data.category_half_lives.replace(categories),
        early_warning=data.early_warning.assign(user_id=HOSTILE[:2]),
        drilldowns=[_drilldown(hostile, hostile) for hostile in HOSTILE],
        notes=HOSTILE,
    )
    page = render_report(hostile_data)
    assert "<script>" not in page and "alert(1)</script>" not in page
    decay, drilldown = _section(page, "decay"), _section(page, "drilldown")
    svgs = re.findall(r"<svg.*?</svg>", drilldown, re.DOTALL)
    assert len(svgs) == len(HOSTILE)
    for hostile, svg in zip(HOSTILE, svgs, strict=True):
        text = hostile.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert text in svg  # the figure's title names the user, $ not read as maths
        assert text.replace('"', "&#34;") in drilldown  # heading and data-user attribute
    for hostile in HOSTILE[:2]:
        assert hostile.replace("<", "&lt;").replace(">", "&gt;") in decay  # legend and table
    assert "$x$" in decay and "mathdefault" not in page


def test_empty_frames_render_sentences(data: ReportData) -> None:
    empty = dataclasses.replace(
        data,
        events_by_day=data.events_by_day.iloc[:0],
        decay_curves=pd.DataFrame(columns=["category_id", "hours", "relative_interest"]),
        category_half_lives=pd.DataFrame(columns=["category_id", "half_life_days", "users"]),
        half_lives_days=pd.Series(dtype=float),
        return_curves=data.return_curves.iloc[:0],
        return_calibration=data.return_calibration.iloc[:0],
        comparison=Comparison(table=pd.DataFrame(columns=["model"]), split={}, k=20),
        segments=data.segments.iloc[:0],
        segment_flows=data.segment_flows.iloc[:0],
        early_warning=pd.DataFrame(),
        plan_summary={},
        plan_by_action=data.plan_by_action.iloc[:0],
        plan_contacts=pd.DataFrame(),
        drilldowns=[],
        notes=[],
    )
    page = render_report(empty)
    assert "<svg" not in page
    for sentence in [
        "No events to show per day.",
        "No category half-lives to show.",
        "No early warnings",
        "Nobody is contacted by this plan.",
        "No users to show in the drill-down.",
        "No notes.",
    ]:
        assert sentence in page, sentence
    for section in SECTIONS:
        assert f'<section id="{section}">' in page


def test_nothing_is_fetched_from_the_network(campaign_page: str) -> None:
    page = campaign_page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script" not in page and "@import" not in page and "url(http" not in page
    namespaces = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) <= namespaces


def test_output_is_deterministic_and_ids_are_unique(data: ReportData, page: str) -> None:
    assert render_report(data) == page
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_write_html_writes_utf8(data: ReportData, page: str, tmp_path: Path) -> None:
    target = write_html(data, tmp_path / "report.html")
    assert target == tmp_path / "report.html"
    assert target.read_bytes() == page.encode("utf-8")
