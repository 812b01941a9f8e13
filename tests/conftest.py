"""Fixtures shared by the whole suite: fresh stores and the real data sets."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ebbtide.datasets import taobao_sample_path
from ebbtide.ingest import ingest_file
from ebbtide.store import EventStore

ROOT = Path(__file__).resolve().parents[1]


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
