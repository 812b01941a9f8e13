"""A store and a decay model fitted on the bundled sample before its last day, and the last
day's events to post, as a shop would have them when it goes live."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ebbtide.datasets import taobao_sample_path
from ebbtide.serve.replay import Replay, prepare_replay


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    """Built once: do not write to its store (take `live`)."""
    folder = tmp_path_factory.mktemp("serve")
    return prepare_replay(taobao_sample_path(), "taobao", folder, live_days=1.0)


@pytest.fixture
def live(prepared: Replay, tmp_path: Path) -> Replay:
    """Fresh copies of the prepared store and model (`forget` rewrites both)."""
    db = tmp_path / "events.duckdb"
    shutil.copyfile(prepared.db, db)
    model_dir = shutil.copytree(prepared.model_dir, tmp_path / "live-model")
    return Replay(db, model_dir, prepared.start, prepared.events)
