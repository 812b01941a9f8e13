"""Fixtures shared by the whole suite: fresh stores and the real data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ebbtide.datasets import taobao_sample_path
from ebbtide.ingest import ingest_file
from ebbtide.store import EventStore

ROOT = Path(__file__).resolve().parents[1]


def _shared_datasets() -> Path:
    configured = os.environ.get("EBBTIDE_SHARED_DATASETS")
    return Path(configured) if configured else ROOT.parent / "shared" / "datasets"


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
