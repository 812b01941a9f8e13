"""The `ebbtide` command end to end, in process (CliRunner) and as a real program."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ebbtide.datasets import taobao_sample_path


def test_help_lists_every_command(cli) -> None:
    result = cli.ok("--help")
    for command in ("ingest", "stats", "quarantine", "forget", "synth", "demo", "report"):
        assert command in result.output
    assert "--user-col" in cli.ok("ingest", "--help").output


def test_ingest_stats_quarantine_forget(cli, tmp_path: Path) -> None:
    db = tmp_path / "shop.duckdb"
    log = tmp_path / "log.csv"
    log.write_text("7,1,1,pv,1511544070\n7,2,1,buy,1511544170\n8,1,1,pv,1511544270\n8,1,1,pv\n")
    summary_file = tmp_path / "summary.json"
    result = cli.ok("ingest", str(log), "--db", str(db), "--json", str(summary_file), "--quiet")
    assert "rows read" in result.stdout and "wrong_field_count" in result.stdout
    summary = json.loads(summary_file.read_text())
    assert (summary["rows_read"], summary["loaded"], summary["quarantined"]) == (4, 3, 1)

    stats_file = tmp_path / "stats.json"
    result = cli.ok("stats", "--db", str(db), "--json", str(stats_file))
    assert json.loads(stats_file.read_text())["events_by_behavior"]["buy"] == 1
    assert "events per user" in result.stdout

    bad_rows = tmp_path / "bad.csv"
    result = cli.ok("quarantine", "--db", str(db), "--out", str(bad_rows))
    assert "8,1,1,pv" in result.stdout
    assert "wrong_field_count" in bad_rows.read_text()

    result = cli.ok("forget", "7", "--db", str(db))
    assert "2 events" in result.stdout
    assert "nothing removed" in cli.ok("forget", "7", "--db", str(db)).stdout


def test_demo_and_report_refuse_bad_options_before_any_work(cli, tmp_path: Path) -> None:
    result = cli("demo", "--format", "generic", "--out-dir", str(tmp_path / "d"))
    assert result.exit_code == 1 and "ebbtide ingest --format generic" in result.output
    result = cli("demo", "--data", str(tmp_path / "missing.csv"), "--quiet")
    assert result.exit_code == 1 and "missing.csv" in result.output
    store = tmp_path / "s.duckdb"
    log = tmp_path / "log.csv"
    log.write_text("7,1,1,pv,1511544070\n7,2,1,buy,1511544170\n")
    cli.ok("ingest", str(log), "--db", str(store), "--quiet")
    not_json = tmp_path / "campaign.json"
    not_json.write_text("{truncated")
    result = cli("report", "--db", str(store), "--campaign", str(not_json))
    assert result.exit_code == 1 and "campaign analyze" in result.output
    result = cli("report", "--db", str(store), "--max-seconds", "0")
    assert result.exit_code == 1 and "--max-seconds" in result.output


def test_synth_then_ingest(cli, tmp_path: Path) -> None:
    out = tmp_path / "synthetic.csv.gz"
    result = cli.ok(
        "synth", "--users", "200", "--days", "5", "--seed", "3", "--out", str(out), "--quiet"
    )
    assert "ground truth" in result.stdout
    assert (tmp_path / "synthetic.truth" / "interests.parquet").exists()
    result = cli.ok("ingest", str(out), "--db", str(tmp_path / "s.duckdb"), "--quiet")
    assert "quarantined" in result.stdout


def test_synth_preset_and_new_options(cli, tmp_path: Path) -> None:
    out = tmp_path / "two.csv"
    result = cli.ok(
        "synth",
        "--preset",
        "two-scale",
        "--users",
        "60",
        "--days",
        "3",
        "--fading-share",
        "0.5",
        "--session-half-life",
        "0.5,1",
        "--out",
        str(out),
        "--quiet",
    )
    assert "over 3 days" in result.stdout
    truth = tmp_path / "two.truth"
    cycle = pq.read_table(truth / "cycle.parquet").to_pylist()[0]
    assert (cycle["daily_amplitude"], cycle["utc_offset_hours"]) == (0.6, 8.0)
    assert "fading" in pq.read_table(truth / "users.parquet").column_names
    hours = pq.read_table(truth / "categories.parquet").column("session_half_life_days")
    assert 0.5 - 1e-9 < min(hours.to_pylist()) * 24 < max(hours.to_pylist()) * 24 < 1.0 + 1e-9
    for option, value in (
        ("--daily-amplitude", "1.5"),
        ("--session-branching", "0.3"),
        ("--session-branching", "0.3,0.9"),
        ("--time-zone", "Mars/Olympus"),
    ):
        bad = cli("synth", "--out", str(tmp_path / "bad.csv"), option, value, "--quiet")
        assert bad.exit_code == 1, (option, value)
        assert f"{option}" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "bad.csv").exists()


def test_generic_needs_its_columns(cli, tmp_path: Path) -> None:
    log = tmp_path / "x.csv"
    log.write_text("a,b\n1,2\n")
    result = cli("ingest", str(log), "--format", "generic", "--db", str(tmp_path / "d"))
    assert result.exit_code != 0
    assert "--user-col" in result.output


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x01\x02garbage\xff" * 50, b"event_time,event_type\n2019,view\n"],
    ids=["empty", "binary", "wrong-columns"],
)
def test_wrong_file_is_one_clear_error(cli, tmp_path: Path, content: bytes) -> None:
    log = tmp_path / "x.csv"
    log.write_bytes(content)
    result = cli("ingest", str(log), "--db", str(tmp_path / "d.duckdb"))
    assert result.exit_code == 1
    assert "Error:" in result.output and "user_id,item_id,category_id" in result.output
    assert "Traceback" not in result.output


def test_stats_without_store_says_what_to_do(cli, tmp_path: Path) -> None:
    result = cli("stats", "--db", str(tmp_path / "none.duckdb"))
    assert result.exit_code == 1 and "ebbtide ingest" in result.output


def test_installed_command_runs_as_a_program(tmp_path: Path) -> None:
    exe = shutil.which("ebbtide", path=str(Path(sys.executable).parent))
    assert exe is not None, "the ebbtide console script is not installed in this environment"
    db = tmp_path / "p.duckdb"
    done = subprocess.run(
        [exe, "ingest", str(taobao_sample_path()), "--db", str(db), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "84,475" in done.stdout
    bad = subprocess.run(
        [exe, "ingest", str(tmp_path / "missing.csv"), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("Error:") and "Traceback" not in bad.stderr


def test_ingest_several_files_in_one_command(cli, tmp_path: Path) -> None:
    day1, day2 = tmp_path / "day1.csv", tmp_path / "day2.csv"
    day1.write_text("1,1,1,pv,1511544070\n2,1,1,pv,1511544071\n")
    day2.write_text("2,1,1,pv,1511544071\n3,1,1,buy,1511630470\n")
    out = tmp_path / "summary.json"
    db = tmp_path / "s.duckdb"
    cli.ok("ingest", str(day1), str(day2), "--db", str(db), "--json", str(out), "--quiet")
    summaries = json.loads(out.read_text())["files"]
    assert [(s["loaded"], s["duplicates"]) for s in summaries] == [(2, 0), (1, 1)]
