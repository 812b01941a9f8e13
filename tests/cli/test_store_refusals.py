"""`ebbtide ingest`, `stats` and `report` refuse bad input with one line and leave no trace."""

from __future__ import annotations

from pathlib import Path

import pytest

TAOBAO_ROWS = "7,1,1,pv,1511544070\n7,2,1,buy,1511544170\n8,1,1,pv,1511544270\n"


def _one_error_line(result) -> str:
    """The single ``Error: ...`` line a refusal prints, checked to have no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture
def shop(cli, tmp_path: Path) -> Path:
    db = tmp_path / "shop.duckdb"
    log = tmp_path / "log.csv"
    log.write_text(TAOBAO_ROWS)
    cli.ok("ingest", str(log), "--db", str(db), "--quiet")
    return db


@pytest.mark.parametrize("tz", ["Mars/Olympus", "Europe/Berln", ""])
def test_stats_refuses_an_unknown_time_zone(cli, shop: Path, tz: str) -> None:
    line = _one_error_line(cli("stats", "--db", str(shop), "--tz", tz))
    assert f"--tz: unknown time zone {tz!r}" in line
    assert "IANA" in line and "Europe/Berlin" in line and "UTC" in line


def test_report_refuses_an_unknown_time_zone_before_writing(
    cli, shop: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    line = _one_error_line(
        cli("report", "--db", str(shop), "--tz", "Mars/Olympus", "--out", str(out))
    )
    assert "unknown time zone 'Mars/Olympus'" in line and "Europe/Berlin" in line
    assert not out.exists()


def test_stats_takes_a_known_time_zone(cli, shop: Path) -> None:
    result = cli.ok("stats", "--db", str(shop), "--tz", "Asia/Shanghai")
    assert "Asia/Shanghai" in result.stdout
