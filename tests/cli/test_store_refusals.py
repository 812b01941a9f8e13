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


@pytest.mark.parametrize(
    "content",
    [b"\x00\x01\x02garbage\xff" * 50, b"order_id,user_id,product_id,ts\no1,u1,p1,2024-01-05\n"],
    ids=["binary", "not-taobao"],
)
def test_refused_ingest_leaves_no_new_store(cli, tmp_path: Path, content: bytes) -> None:
    log = tmp_path / "garbled.csv"
    log.write_bytes(content)
    db = tmp_path / "new" / "fresh.duckdb"
    db.parent.mkdir()
    line = _one_error_line(cli("ingest", str(log), "--db", str(db)))
    assert "garbled.csv" in line
    assert list(db.parent.iterdir()) == []  # no store, no .wal, no spill folder


def test_refused_generic_mapping_leaves_no_new_store(cli, tmp_path: Path) -> None:
    log = tmp_path / "orders.csv"
    log.write_text("order_id,user_id,product_id,ts\no1,u1,p1,2024-01-05T10:00:00\n")
    db = tmp_path / "new" / "fresh.duckdb"
    db.parent.mkdir()
    args = ["ingest", str(log), "--db", str(db), "--format", "generic", "--behavior", "buy"]
    args += ["--user-col", "user_id", "--item-col", "product_id", "--time-col", "when"]
    line = _one_error_line(cli(*args))
    assert "when" in line
    assert list(db.parent.iterdir()) == []


def test_refused_ingest_keeps_an_existing_store(cli, shop: Path, tmp_path: Path) -> None:
    before = cli.ok("stats", "--db", str(shop)).stdout
    garbled = tmp_path / "garbled.csv"
    garbled.write_bytes(b"\x00\x01\x02garbage\xff" * 50)
    _one_error_line(cli("ingest", str(garbled), "--db", str(shop)))
    assert shop.is_file()
    assert cli.ok("stats", "--db", str(shop)).stdout == before


def test_store_made_by_an_earlier_file_of_the_same_command_stays(cli, tmp_path: Path) -> None:
    good, garbled = tmp_path / "good.csv", tmp_path / "garbled.csv"
    good.write_text(TAOBAO_ROWS)
    garbled.write_bytes(b"\x00\x01\x02garbage\xff" * 50)
    db = tmp_path / "s.duckdb"
    result = cli("ingest", str(good), str(garbled), "--db", str(db), "--quiet")
    assert result.exit_code == 1 and "garbled.csv" in result.stderr
    assert "events" in cli.ok("stats", "--db", str(db)).stdout  # good.csv was committed


def test_generic_options_with_a_named_format_are_refused(
    cli, tmp_path: Path, datasets: Path
) -> None:
    """Silently ignoring --keep-repeats for CDNOW would lose purchases the user meant to keep."""
    db = tmp_path / "s.duckdb"
    cdnow = str(datasets / "cdnow" / "CDNOW_sample.txt")
    result = cli("ingest", cdnow, "--format", "cdnow", "--keep-repeats", "--db", str(db))
    assert result.exit_code == 1
    assert "--keep-repeats applies only to --format generic" in result.output
    assert not db.exists()
