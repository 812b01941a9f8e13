"""`ebbtide demo` end to end, and its report opened in a real browser (Debian's Chromium).

The demo runs on the bundled Taobao sample with a training budget of 4 s: what the page
must show does not depend on how well `neural` is trained. Chromium, driven by Playwright,
must see every section and figure and log no console error. Screenshots go to the test's
temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .expected import CAMPAIGN_FIGURES, FIGURES, SECTIONS


@pytest.fixture(scope="module")
def demo(cli, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo")
    result = cli.ok("demo", "--out-dir", str(out), "--max-seconds", "4", "--quiet")
    return out, result.stdout


def _open(browser, path: Path, screenshot: Path):
    """Load `path`, return the page and every console error or page error it raised."""
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else 0)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("requestfailed", lambda request: problems.append(f"request {request.url}"))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    page.screenshot(path=str(screenshot), full_page=True)
    return page, problems


def _visible_figures(page) -> dict[str, int]:
    """Per figure name, how many of its figures hold a drawn, visible SVG."""
    return page.evaluate(
        """() => {
          const counts = {};
          for (const figure of document.querySelectorAll('figure[data-figure]')) {
            const svg = figure.querySelector('svg');
            const box = svg ? svg.getBoundingClientRect() : null;
            const drawn = box && box.width > 100 && box.height > 100
              && svg.querySelectorAll('path, rect, line, polyline, use').length > 5;
            if (drawn) counts[figure.dataset.figure] = (counts[figure.dataset.figure] || 0) + 1;
          }
          return counts;
        }"""
    )


@pytest.mark.slow
def test_demo_writes_a_report_that_chromium_shows_whole(demo, chromium, tmp_path: Path) -> None:
    out, stdout = demo
    assert "report" in stdout and "contacts" in stdout
    for name in ("report.html", "plan.csv", "early_warning.csv", "evaluation.json"):
        assert (out / name).stat().st_size > 0, name
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert [m["model"] for m in evaluation["models"]][-1] == "neural"

    screenshot = tmp_path / "report.png"
    page, problems = _open(chromium, out / "report.html", screenshot)
    assert problems == []
    for section in SECTIONS:
        assert page.locator(f"section#{section}").is_visible(), section
    assert page.locator("section#campaign").count() == 0
    figures = _visible_figures(page)
    assert set(FIGURES) <= set(figures), figures
    assert figures["user-interest"] == page.locator("article.user").count() >= 1
    assert "84,475" in page.locator("section#overview").inner_text()
    assert screenshot.stat().st_size > 50_000


@pytest.fixture(scope="module")
def campaign_log(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    log = tmp_path_factory.mktemp("campaign") / "campaign.csv"
    cli.ok("campaign", "synth", "--out", str(log), "--customers", "3000")
    return log


@pytest.mark.slow
def test_report_with_a_campaign_log_shows_its_section(
    cli, demo, chromium, campaign_log: Path, tmp_path: Path
) -> None:
    out, _ = demo
    report = tmp_path / "with-campaign.html"
    cli.ok(
        "report", "--db", str(out / "events.duckdb"), "--out", str(report), "--models", "decay",
        "--campaign", str(campaign_log), "--features", "recency_days,frequency,monetary",
        "--quiet",
    )  # fmt: skip
    page, problems = _open(chromium, report, tmp_path / "with-campaign.png")
    assert problems == []
    assert page.locator("section#campaign").is_visible()
    figures = _visible_figures(page)
    assert set(CAMPAIGN_FIGURES) <= set(figures), figures
    assert "coupon" in page.locator("section#campaign").inner_text()


def test_a_campaign_log_and_its_saved_analysis_give_the_same_ab_table(
    cli, campaign_log: Path, tmp_path: Path
) -> None:
    from ebbtide.cli.report import _campaign

    analysis = tmp_path / "analysis.json"
    cli.ok(
        "campaign", "analyze", str(campaign_log), "--arm-col", "arm", "--control", "control",
        "--outcomes", "conversion", "--bootstrap", "20", "--json", str(analysis),
    )  # fmt: skip
    from_json = _campaign(analysis, "arm", "control", "conversion", None)
    from_log = _campaign(campaign_log, "arm", "control", "conversion", None)
    assert from_json["ab"]["table"] == from_log["ab"]["table"]


@pytest.mark.slow
def test_hostile_ids_are_shown_as_text_not_run(cli, chromium, tmp_path: Path) -> None:
    """Ids from a user's file reach tables, legends and headings: they must stay text."""
    hostile_user = "<img src=x onerror=alert(1)>"
    hostile_category = "</svg><script>alert(2)</script>"
    rows = []
    for user in range(40):
        name = hostile_user if user == 0 else f"u{user}"
        for event in range(12):
            category = hostile_category if event % 2 else f"c{event % 3}"
            ts = 1_511_500_000 + user * 977 + event * 13_000
            rows.append(f"{name},i{event % 5},{category},pv,{ts}")
    log = tmp_path / "hostile.csv"
    log.write_text("\n".join(rows) + "\n")
    db = tmp_path / "hostile.duckdb"
    cli.ok("ingest", str(log), "--db", str(db), "--quiet")
    report = tmp_path / "hostile.html"
    cli.ok("report", "--db", str(db), "--out", str(report), "--models", "decay", "--quiet")
    page, problems = _open(chromium, report, tmp_path / "hostile.png")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.reload()
    assert problems == [] and dialogs == []
    assert page.locator("script").count() == 0
    assert hostile_category in page.locator("section#decay").inner_text()
