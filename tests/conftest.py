"""Fixtures shared by the whole suite: fresh stores and the real data sets."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ebbtide.datasets import taobao_sample_path
from ebbtide.ingest import ingest_file
from ebbtide.store import EventStore

ROOT = Path(__file__).resolve().parents[1]

#: The environment of every in-process CLI run. ebbtide's own consoles do not depend on it
#: (off a terminal they have a fixed width and never wrap a message); Typer's help and usage
#: errors take the width from COLUMNS, and Rich turns colour on for FORCE_COLOR or
#: TTY_COMPATIBLE, so a developer's or CI's settings must not reach the output tests read.
CLI_ENV: dict[str, str | None] = {
    "COLUMNS": "200",
    "LINES": "50",
    "FORCE_COLOR": None,
    "TTY_COMPATIBLE": None,
    "TTY_INTERACTIVE": None,
    "NO_COLOR": "1",
}


class Cli:
    """The `ebbtide` command in process (Typer's CliRunner) under `CLI_ENV`.

    ``cli(*args)`` returns the result; ``cli.ok(*args)`` also asserts exit code 0.
    """

    def __init__(self) -> None:
        from ebbtide.cli import app

        self.app = app
        self.runner = CliRunner(env=CLI_ENV)

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(self.app, list(args))

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result


def _shared_datasets() -> Path:
    """EBBTIDE_SHARED_DATASETS, else ../shared/datasets beside this checkout or, for a
    throwaway clone of a local checkout (how CI is rehearsed), beside that one."""
    configured = os.environ.get("EBBTIDE_SHARED_DATASETS")
    if configured:
        return Path(configured)
    beside = ROOT.parent / "shared" / "datasets"
    origin = _local_origin()
    if not beside.is_dir() and origin is not None:
        return origin.parent / "shared" / "datasets"
    return beside


def _local_origin() -> Path | None:
    """The folder this checkout was cloned from, when `origin` is a local path."""
    url = subprocess.run(
        ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not url or "://" in url or ":" in url.split("/", 1)[0]:
        return None
    path = Path(url)
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The real public data sets laid beside the checkout (../shared/datasets)."""
    path = _shared_datasets()
    if not path.is_dir():
        message = f"real data sets not found at {path} (set EBBTIDE_SHARED_DATASETS)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has them: a skip there would hide a failure
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def taobao(tmp_path_factory: pytest.TempPathFactory):
    """The bundled Taobao slice in a store shared by the session: do not write to it."""
    with EventStore(tmp_path_factory.mktemp("taobao") / "s.duckdb") as store:
        ingest_file(store, taobao_sample_path(), "taobao")
        yield store


@pytest.fixture
def store(tmp_path: Path):
    """A new on-disk store, closed after the test."""
    with EventStore(tmp_path / "store.duckdb") as s:
        yield s


@pytest.fixture(scope="session")
def cli() -> Cli:
    """Run `ebbtide` in process: ``cli("stats", "--db", path)``, ``cli.ok(...)``."""
    return Cli()


#: Flags Chromium needs on a closed network as root (no sandbox, no background fetches).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium from the system (make test installs Debian's package); missing,
    it fails rather than skips: CI has it, and a skip would hide the browser tests."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("Chromium is not installed: run `make test` (it installs it) or apt install")
    # Chromium puts a Unix socket in TMPDIR and aborts when its path is over ~108 bytes:
    # a CI machine's TMPDIR may be that long, so it gets a short one of its own.
    short = tempfile.mkdtemp(prefix="chromium-", dir="/tmp" if os.path.isdir("/tmp") else None)
    env = {**os.environ, "TMPDIR": short}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS, env=env
            )
            yield browser
            browser.close()
    finally:
        shutil.rmtree(short, ignore_errors=True)
