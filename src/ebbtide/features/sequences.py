"""Per-user event sequences as flat, user-sorted numpy arrays (CSR layout).

One DuckDB query sorts the events by user and time; numpy then finds where each user's
run starts. No Python loop touches an event, so tens of millions of events load in
seconds, and the arrays feed both the counting baselines and the neural model's batches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

from ebbtide.errors import ConfigError
from ebbtide.schema import Behavior
from ebbtide.store import ITEM_ENGAGEMENT, MODEL_BEHAVIOR, EventStore

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class EventArrays:
    """Events of every store user, sorted by (user, time), with per-user offsets.

    Attributes
    ----------
    user_idx, item_idx, category_idx : np.ndarray of int32
        Dense ids; ``category_idx`` is -1 for events without a category.
    behavior : np.ndarray of int8
        `Behavior` codes (0 view, 1 cart, 2 fav, 3 buy): the item behaviours. A click or
        a rating arrives as a view of its item; searches and impressions are not here.
    t : np.ndarray of float64
        Event time in days since the Unix epoch (UTC).
    offsets : np.ndarray of int64, shape (n_users + 1,)
        User u's events are ``[offsets[u], offsets[u + 1])``; users without events
        before the cut-off have an empty run.
    n_users, n_items, n_categories : int
        Sizes of the store's dictionaries (so ids index arrays directly).
    before : datetime
        Only events strictly before this instant are included.
    """

    user_idx: np.ndarray
    item_idx: np.ndarray
    category_idx: np.ndarray
    behavior: np.ndarray
    t: np.ndarray
    offsets: np.ndarray
    n_users: int
    n_items: int
    n_categories: int
    before: datetime

    @property
    def n_events(self) -> int:
        return int(self.t.size)

    def lengths(self) -> np.ndarray:
        """Events per user (0 for users with none before the cut-off)."""
        return np.diff(self.offsets)

    def select(self, mask: np.ndarray) -> EventArrays:
        """The events where `mask` holds (order kept), with offsets rebuilt."""
        user_idx = self.user_idx[mask]
        offsets = np.searchsorted(user_idx, np.arange(self.n_users + 1)).astype(np.int64)
        return replace(
            self,
            user_idx=user_idx,
            item_idx=self.item_idx[mask],
            category_idx=self.category_idx[mask],
            behavior=self.behavior[mask],
            t=self.t[mask],
            offsets=offsets,
        )

    def gap_features(self) -> np.ndarray:
        """(n_events, 2) float32: log1p(hours since the user's previous event) and a
        same-instant flag (0 and False at each user's first event): the time inputs of the
        sequence models."""
        t = self.t
        first = np.zeros(t.size, dtype=bool)
        first[self.offsets[:-1][self.lengths() > 0]] = True
        gap = np.zeros(t.size)
        if t.size:
            gap[1:] = np.where(first[1:], 0.0, np.maximum(t[1:] - t[:-1], 0.0))
        return np.stack([np.log1p(gap * 24.0), (gap <= 0) & ~first], axis=1).astype(np.float32)

    def last_index(self) -> np.ndarray:
        """Index of each user's last event, -1 where the user has none."""
        last = self.offsets[1:] - 1
        return np.where(self.lengths() > 0, last, -1)


def to_days(instant: datetime) -> float:
    """An aware instant as days since the Unix epoch, the time unit of `EventArrays`."""
    if instant.tzinfo is None:
        raise ConfigError(f"{instant!r} has no time zone; pass an aware UTC datetime")
    return instant.timestamp() / SECONDS_PER_DAY


def load_events(
    store: EventStore, *, before: datetime, since: datetime | None = None
) -> EventArrays:
    """Load the item events with ``since <= ts < before`` as `EventArrays`.

    What the models see: view, cart, fav and buy as they are, a click or a rating as a
    view of its item; searches (read with `load_searches`), impressions (shown, not done)
    and rows without an item are left out, so per-behaviour weights keep four entries.

    Parameters
    ----------
    store : EventStore
    before : datetime
        Exclusive upper bound: nothing at or after it is read.
    since : datetime, optional
        Inclusive lower bound (default: the first event).
    """
    to_days(before)
    params: list[object] = [before]
    where = "ts < ?"
    if since is not None:
        to_days(since)
        where += " AND ts >= ?"
        params.append(since)
    columns = store.con.execute(
        f"""SELECT user_idx, item_idx, coalesce(category_idx, -1) AS category_idx,
            {MODEL_BEHAVIOR}::TINYINT AS behavior, epoch(ts) / {SECONDS_PER_DAY} AS t
        FROM events WHERE {where} AND {ITEM_ENGAGEMENT}
        ORDER BY user_idx, ts, behavior, item_idx""",
        params,
    ).fetchnumpy()
    # max + 1, not count: `forget` leaves holes in the dense ids, never renumbers them.
    n_users, n_items, n_categories = (
        store.con.execute(f"SELECT coalesce(max({column}) + 1, 0) FROM {table}").fetchone()[0]
        for table, column in (
            ("users", "user_idx"),
            ("items", "item_idx"),
            ("categories", "category_idx"),
        )
    )
    user_idx = np.asarray(columns["user_idx"], dtype=np.int32)
    offsets = np.searchsorted(user_idx, np.arange(n_users + 1), side="left").astype(np.int64)
    return EventArrays(
        user_idx=user_idx,
        item_idx=np.asarray(columns["item_idx"], dtype=np.int32),
        category_idx=np.asarray(columns["category_idx"], dtype=np.int32),
        behavior=np.asarray(columns["behavior"], dtype=np.int8),
        t=np.asarray(columns["t"], dtype=np.float64),
        offsets=offsets,
        n_users=int(n_users),
        n_items=int(n_items),
        n_categories=int(n_categories),
        before=before,
    )


@dataclass(frozen=True)
class SearchArrays:
    """A store's searches, sorted by (user, time): who searched, when, and the words.

    Attributes
    ----------
    user_idx : np.ndarray of int32
    t : np.ndarray of float64
        Days since the Unix epoch (UTC), as `EventArrays.t`.
    query : np.ndarray of object (str)
        The query as stored (blanks collapsed, case kept).
    before : datetime
        Only searches strictly before this instant are included.
    """

    user_idx: np.ndarray
    t: np.ndarray
    query: np.ndarray
    before: datetime

    @property
    def n_searches(self) -> int:
        return int(self.t.size)


def load_searches(
    store: EventStore, *, before: datetime, since: datetime | None = None
) -> SearchArrays:
    """Load the searches with ``since <= ts < before`` (none from a store that has none)."""
    to_days(before)
    params: list[object] = [Behavior.SEARCH.code, before]
    where = "behavior = ? AND ts < ? AND query IS NOT NULL"
    if since is not None:
        to_days(since)
        where += " AND ts >= ?"
        params.append(since)
    if not store.has_feedback_columns:
        empty = np.zeros(0)
        return SearchArrays(empty.astype(np.int32), empty, empty.astype(object), before)
    columns = store.con.execute(
        f"""SELECT user_idx, epoch(ts) / {SECONDS_PER_DAY} AS t, query
        FROM events WHERE {where} ORDER BY user_idx, ts, query""",
        params,
    ).fetchnumpy()
    return SearchArrays(
        user_idx=np.asarray(columns["user_idx"], dtype=np.int32),
        t=np.asarray(columns["t"], dtype=np.float64),
        query=np.asarray(columns["query"], dtype=object),
        before=before,
    )


def user_event_ranges(offsets: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event indices of `users` (in the given order) and, per index, its user's position.

    `offsets` are `EventArrays.offsets`; no Python loop over users or events.
    """
    starts, ends = offsets[users], offsets[users + 1]
    lengths = ends - starts
    q = np.repeat(np.arange(users.size, dtype=np.int64), lengths)
    first = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return first + np.arange(q.size, dtype=np.int64), q
