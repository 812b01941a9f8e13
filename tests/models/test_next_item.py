"""The next-item head: learns to repeat where users repeat, to explore where they do not."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from ebbtide.features.sequences import EventArrays
from ebbtide.models.next_item import (
    NextItemSettings,
    _windows,
    fit_next_item,
    score_next_items,
)

SETTINGS = NextItemSettings(
    hidden=32,
    max_len=20,
    epochs=40,
    patience=40,
    max_seconds=120.0,
    dropout=0.0,
    lr=5e-3,
    batch_size=32,
    item_chunk=256,
    seed=0,
)
CPU = torch.device("cpu")


def _arrays(histories: list[list[tuple[int, float, int]]], n_items: int) -> EventArrays:
    """EventArrays of (item, time in days, behaviour) per user, already in time order."""
    flat = [(u, *e) for u, events in enumerate(histories) for e in events]
    user, item, t, beh = (np.array(column) for column in zip(*flat, strict=True))
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
    return EventArrays(
        user_idx=user.astype(np.int32),
        item_idx=item.astype(np.int32),
        category_idx=np.full(item.size, -1, dtype=np.int32),
        behavior=beh.astype(np.int8),
        t=t.astype(np.float64),
        offsets=offsets,
        n_users=len(histories),
        n_items=n_items,
        n_categories=0,
        before=datetime(2030, 1, 1, tzinfo=UTC),
    )


def test_windows_predict_every_next_event_once_with_context() -> None:
    offsets = np.array([0, 1, 6, 56], dtype=np.int64)  # users of 1, 5 and 50 events
    start, end, first, user_end = _windows(offsets, 20)
    scored = np.concatenate(
        [np.arange(f, min(e, u - 1)) for f, e, u in zip(first, end, user_end, strict=True)]
    )
    expected = np.concatenate([np.arange(1, 5), np.arange(6, 55)])  # positions with a next
    np.testing.assert_array_equal(np.sort(scored), expected)
    later = start > offsets[2]
    assert (first[later] - start[later] >= 10).all()  # half a window of context at least


@pytest.mark.parametrize("negatives", [0, 64])
def test_learns_to_repeat_each_users_own_item(negatives: int) -> None:
    """Every user keeps returning to an item nobody else touches, between random views
    (with the full explore softmax, and with a sampled one as for big catalogues)."""
    rng = np.random.default_rng(0)
    n_users, noise = 200, 100
    histories = []
    for u in range(n_users):
        own, t, events = noise + u, 0.0, []
        for _ in range(8):
            t += rng.uniform(0.01, 0.5)
            events.append((int(rng.integers(noise)), t, 0))
            t += rng.uniform(0.01, 0.5)
            events.append((own, t, 0))
        histories.append(events)
    events = _arrays(histories, noise + n_users)
    settings = replace(SETTINGS, negatives=negatives)
    net, info = fit_next_item(events, events.n_items, settings, CPU)
    assert info["validation_users"] == n_users
    at = float(events.t.max()) + 0.1
    top, _ = score_next_items(net, events, np.arange(n_users), at, settings, k=1)
    hit = np.mean(top[:, 0] == noise + np.arange(n_users))
    assert hit > 0.8, f"own item first for {hit:.0%} of users"


def test_learns_transitions_and_leaves_seen_items_out_where_nobody_repeats() -> None:
    """Users walk a ring of items one step at a time from random places, never repeating."""
    rng = np.random.default_rng(1)
    n_users, n_items, length = 300, 60, 12
    histories = []
    for _ in range(n_users):
        first = int(rng.integers(n_items))
        histories.append([((first + i) % n_items, 0.1 * i, 0) for i in range(length)])
    events = _arrays(histories, n_items)
    net, info = fit_next_item(events, n_items, SETTINGS, CPU)
    assert info["validation_ndcg@10"] > 0.5
    users = np.arange(n_users)
    top, _ = score_next_items(net, events, users, length * 0.1, SETTINGS, k=10)
    wanted = np.array([(h[-1][0] + 1) % n_items for h in histories])
    hit = np.mean((top == wanted[:, None]).any(1))
    assert hit > 0.8, f"next ring item in the top 10 for {hit:.0%} of users"
    seen = [{e[0] for e in h[-SETTINGS.max_len :]} for h in histories]
    assert not any(set(row) & s for row, s in zip(top[:, :3].tolist(), seen, strict=True))


def test_exclusions_and_users_without_history() -> None:
    rng = np.random.default_rng(2)
    histories = [[(int(rng.integers(5)), 0.1 * i, 0) for i in range(6)] for _ in range(40)]
    histories.append([])  # a user with no events before the instant
    events = _arrays(histories, 5)
    settings = replace(SETTINGS, epochs=2)
    net, _ = fit_next_item(events, 5, settings, CPU)
    users = np.array([0, 40])
    full, p = score_next_items(net, events, users, 1.0, settings, k=5)
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1.0, atol=1e-5)
    banned = int(full[0, 0])
    top, _ = score_next_items(
        net, events, users, 1.0, settings, k=4, exclude=(np.array([0]), np.array([banned]))
    )
    assert banned not in top[0] and banned in top[1]
