"""`ebbtide stats` folds a long log's time table into weeks or months, and says so."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest


@pytest.fixture
def year_store(cli, tmp_path: Path) -> Path:
    """A store with one purchase a day for 364 days from Monday 2024-01-01 (52 weeks)."""
    start = datetime(2024, 1, 1, 12, tzinfo=UTC)
    stamps = (start + timedelta(days=d) for d in range(364))
    log = tmp_path / "year.csv"
    log.write_text("".join(f"{t.day},1,1,buy,{int(t.timestamp())}\n" for t in stamps))
    db = tmp_path / "year.duckdb"
    cli.ok("ingest", str(log), "--db", str(db), "--quiet")
    return db


def _table_rows(stdout: str) -> list[tuple[str, int]]:
    """(period, events) rows of the printed time table, whatever its width."""
    found = re.findall(r"│ (\d{4}-\d{2}(?:-\d{2})?) +│ +([\d,]+) │", stdout)
    return [(label, int(count.replace(",", ""))) for label, count in found]


def test_a_year_is_shown_per_week(cli, year_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "stats.json"
    result = cli.ok("stats", "--db", str(year_store), "--json", str(out))
    title = " ".join(result.stdout.split())
    assert "Events per week (UTC), folded from 364 days (--per day for daily counts)" in title
    rows = _table_rows(result.stdout)
    assert len(rows) == 52 and rows[0] == ("2024-01-01", 7) and rows[-1] == ("2024-12-23", 7)
    data = json.loads(out.read_text())
    assert (data["period"], data["period_chosen"]) == ("week", True)
    assert [tuple(row) for row in data["events_per_period"]] == rows  # the same rows


@pytest.mark.parametrize(("per", "count"), [("day", 364), ("week", 52), ("month", 12)])
def test_per_forces_the_period(cli, year_store: Path, tmp_path: Path, per: str, count: int) -> None:
    out = tmp_path / "stats.json"
    result = cli.ok("stats", "--db", str(year_store), "--per", per, "--json", str(out))
    assert f"Events per {per} (UTC)" in result.stdout and "folded" not in result.stdout
    assert len(_table_rows(result.stdout)) == count
    assert len(json.loads(out.read_text())["events_per_period"]) == count


def test_unknown_period_is_refused(cli, year_store: Path) -> None:
    result = cli("stats", "--db", str(year_store), "--per", "year")
    assert result.exit_code != 0 and "--per" in result.output
