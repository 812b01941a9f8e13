"""The app itself: version, one error line, --debug anywhere, output that never wraps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from ebbtide.datasets import taobao_sample_path


def _commands(app) -> dict[str, object]:
    """Every leaf command of the app, by its full name ("campaign uplift")."""
    found = {}
    stack = [("", typer.main.get_command(app))]
    while stack:
        prefix, command = stack.pop()
        children = getattr(command, "commands", None)
        if children is None:
            found[prefix.strip()] = command
        else:
            stack += [(f"{prefix} {name}", child) for name, child in children.items()]
    return found


def _options(command) -> dict[str, object]:
    return {opt: param for param in command.params for opt in getattr(param, "opts", [])}


def test_version(cli) -> None:
    from importlib.metadata import version

    result = cli.ok("--version")
    assert result.stdout == f"ebbtide {version('ebbtide')}\n"


@pytest.mark.parametrize("where", ["before", "after", "absent"])
def test_an_error_is_one_line_and_debug_adds_the_traceback(cli, tmp_path, where) -> None:
    args = ["stats", "--db", str(tmp_path / "none.duckdb")]
    args = {"before": ["--debug", *args], "after": [*args, "--debug"], "absent": args}[where]
    result = cli(*args)
    assert result.exit_code == 1 and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: no store at") and "ebbtide ingest FILE --db" in last
    assert ("Traceback" in result.stderr) == (where != "absent")


def test_every_command_takes_debug_and_each_db_says_whether_it_is_created(cli) -> None:
    commands = _commands(cli.app)
    assert {"ingest", "score", "campaign uplift", "demo", "report"} <= set(commands)
    for name, command in commands.items():
        options = _options(command)
        assert "--debug" in options, name
        if "--db" in options:
            text = options["--db"].help
            if name == "ingest":
                assert "created if missing" in text
            else:
                assert "created if missing" not in text and "must exist" in text, name


def test_a_missing_store_is_refused_by_every_command_that_reads_one(cli, tmp_path) -> None:
    missing = str(tmp_path / "none.duckdb")
    runs = [
        ["stats"], ["quarantine"], ["forget", "7"], ["train", "--model", "decay", "--out-dir",
        str(tmp_path / "m")], ["score", "--model-dir", str(tmp_path), "--at", "2017-12-02"],
        ["evaluate"], ["segments", "--model-dir", str(tmp_path), "--at", "2017-12-02"],
        ["plan", "--model-dir", str(tmp_path), "--at", "2017-12-02"], ["report"],
    ]  # fmt: skip
    for args in runs:
        result = cli(*args, "--db", missing)
        assert result.exit_code == 1 and "no store at" in result.stderr, args
    assert not Path(missing).exists()


def test_output_does_not_depend_on_the_terminal_width_or_the_path_length(cli, tmp_path) -> None:
    """COLUMNS=40 and a 200-character path: every message stays on one line, whole."""
    folder = tmp_path / ("d" * 60) / ("e" * 60) / ("f" * 60)
    folder.mkdir(parents=True)
    db = folder / "shop.duckdb"
    narrow = {"COLUMNS": "40"}
    log = folder / "log.csv"
    log.write_text("7,1,1,pv,1511544070\n7,2,1,buy,1511544170\n8,1,1,pv\n")
    args = ["ingest", str(log), "--db", str(db), "--quiet"]
    first = cli.runner.invoke(cli.app, args, env=narrow)
    assert first.exit_code == 0, first.output
    assert f"See the quarantined rows with: ebbtide quarantine --db {db}\n" in first.stdout
    again = cli.runner.invoke(cli.app, args, env=narrow)
    assert "This file was already ingested with the same options: nothing changed.\n" in (
        again.stdout
    )
    gone = cli.runner.invoke(cli.app, ["forget", "9", "--db", str(db)], env=narrow)
    assert gone.stdout == (
        f"No data for user '9' in {db}: nothing removed from the store.\n"
        "Score, segment, plan and report files written before now may still name the user:"
        " delete them or write them again.\n"
    )
    bad = cli.runner.invoke(cli.app, ["stats", "--db", str(db) + "x"], env=narrow)
    assert bad.stderr.count("\n") == 1 and f"no store at {db}x;" in bad.stderr
    table = cli.runner.invoke(cli.app, ["stats", "--db", str(db)], env=narrow)
    assert "events per user" in table.stdout and "pseudonymised ids" in table.stdout


def test_command_modules_import_alone_and_register_nothing_elsewhere() -> None:
    """Importing one command module loads neither the app nor the other command modules
    (only the shared helpers: options, and engagement's tables of rates)."""
    code = (
        "import sys, ebbtide.cli.campaign as c\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('ebbtide.cli.'))\n"
        "print(loaded, [cmd.name for cmd in c.app.registered_commands])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "['ebbtide.cli.campaign', 'ebbtide.cli.engagement', 'ebbtide.cli.options']"
        " ['synth', 'analyze', 'uplift']"
    )


def test_python_dash_m_runs_the_same_app(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ebbtide.cli", "ingest", str(taobao_sample_path()), "--db",
         str(tmp_path / "s.duckdb"), "--quiet", "--debug"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "84,475" in done.stdout
