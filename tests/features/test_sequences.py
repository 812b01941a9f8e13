"""Sequences and splits: sorted, complete, and blind to the future."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from ebbtide.datasets import taobao_sample_path
from ebbtide.errors import ConfigError
from ebbtide.features import leave_one_out, load_events, temporal_split
from ebbtide.ingest import ingest_file
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)  # 2017-12-02 00:00 China time


def test_arrays_are_user_sorted_and_complete(taobao: EventStore) -> None:
    events = load_events(taobao, before=datetime(2030, 1, 1, tzinfo=UTC))
    assert events.n_events == 84_475
    assert events.n_users == 815 and events.lengths().sum() == 84_475
    assert np.all(np.diff(events.user_idx) >= 0)
    for u in (0, 400, 814):
        run = events.t[events.offsets[u] : events.offsets[u + 1]]
        assert np.all(np.diff(run) >= 0)
    assert events.lengths().min() == 4 and events.lengths().max() == 539


def test_no_event_at_or_after_the_cut_leaks(taobao: EventStore, tmp_path: Path) -> None:
    """Features at T must not change when the future changes: add events after T."""
    before = load_events(taobao, before=CUT)
    assert before.t.max() < CUT.timestamp() / 86_400
    future = tmp_path / "future.csv"
    at_cut = int(CUT.timestamp())
    future.write_text(f"1,999,999,buy,{at_cut}\n1,998,999,pv,{at_cut + 10}\n")
    with EventStore(tmp_path / "copy.duckdb") as store:
        ingest_file(store, taobao_sample_path(), "taobao")
        ingest_file(store, future, "taobao")
        after = load_events(store, before=CUT)
    for name in ("user_idx", "item_idx", "category_idx", "behavior", "t"):
        assert np.array_equal(getattr(before, name), getattr(after, name)), name


def test_temporal_split_partitions_time(taobao: EventStore) -> None:
    split = temporal_split(taobao, cutoff=CUT, horizon=timedelta(days=1))
    cut_days = CUT.timestamp() / 86_400
    assert split.history.t.max() < cut_days <= split.target.t.min()
    assert split.target.t.max() < cut_days + 1
    assert split.target.n_events == 11_520  # 2017-12-02 China time, as PROVENANCE says
    with pytest.raises(ConfigError):
        temporal_split(taobao, cutoff=CUT, horizon=timedelta(0))


def test_leave_one_out_holds_out_the_last_two(taobao: EventStore) -> None:
    events = load_events(taobao, before=datetime(2030, 1, 1, tzinfo=UTC))
    split = leave_one_out(events)
    assert split.users.size == 815
    assert np.all(split.test == events.offsets[1:] - 1)
    assert np.all(events.t[split.valid] <= events.t[split.test])
    assert split.train_mask.sum() == 84_475 - 2 * 815
