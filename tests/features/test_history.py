"""A History is the log before one instant, read once and cut down in memory."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ebbtide.errors import EbbtideError
from ebbtide.features.history import History, snapshot
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)


def _same(a: History, b: History) -> None:
    assert a.at == b.at
    for field in fields(a.events):
        left, right = getattr(a.events, field.name), getattr(b.events, field.name)
        if isinstance(left, np.ndarray):
            np.testing.assert_array_equal(left, right, err_msg=field.name)
        else:
            assert left == right, field.name


def test_a_snapshot_holds_only_events_before_its_instant(taobao: EventStore) -> None:
    history = snapshot(taobao, at=CUT)
    before = taobao.con.execute("SELECT count(*) FROM events WHERE ts < ?", [CUT]).fetchone()[0]
    assert history.events.n_events == before
    assert history.events.t.max() < CUT.timestamp() / 86_400


def test_until_equals_a_snapshot_at_the_earlier_instant(taobao: EventStore) -> None:
    history = snapshot(taobao, at=CUT)
    earlier = CUT - timedelta(days=2, hours=5)
    _same(history.until(earlier), snapshot(taobao, at=earlier))
    with pytest.raises(EbbtideError, match="take a new snapshot"):
        history.until(CUT + timedelta(seconds=1))


def test_for_users_keeps_their_events_and_the_id_space(taobao: EventStore) -> None:
    history = snapshot(taobao, at=CUT)
    few = history.for_users(["1", "100"])
    index = history.ids.user_index(["1", "100"])
    assert few.events.n_users == history.events.n_users
    np.testing.assert_array_equal(few.events.lengths()[index], history.events.lengths()[index])
    assert few.events.n_events == history.events.lengths()[index].sum()
    with pytest.raises(EbbtideError, match="unknown user"):
        history.for_users(["no-such-user"])
