"""A snapshot of the log before one instant: what a model may know when it answers at `at`.

Why a value and not a store: a fitted model keeps no live database. The caller reads the
events before `at` once (`snapshot`), and every query at that instant (return, purchase,
interest, recommendations) takes the same `History`, as a scikit-learn estimator takes
``X``. Nothing in a `History` is at or after its instant, so no query can read the future: not
its item events, nor its searches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import pandas as pd

from ebbtide.errors import EbbtideError
from ebbtide.features.sequences import (
    EventArrays,
    SearchArrays,
    load_events,
    load_searches,
    to_days,
    user_event_ranges,
)
from ebbtide.store import EventStore

__all__ = [
    "FORGOTTEN",
    "UNCATEGORISED",
    "Catalogue",
    "History",
    "IdMaps",
    "Localised",
    "snapshot",
]

#: The category of events the log gives none: a log without categories is modelled at
#: user level, as one implicit category, rather than not at all.
UNCATEGORISED = "(uncategorised)"
#: What a model's catalogue holds in place of a forgotten user's id (`Model.forget`): the
#: code stays, so other users keep theirs, but it matches no id, as ingest and the live
#: service refuse empty ids; nothing of the old id is kept.
FORGOTTEN = ""


@dataclass(frozen=True)
class IdMaps:
    """External ids indexed by dense id (``None`` where `forget` left a hole)."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    category_ids: np.ndarray

    @classmethod
    def from_store(cls, store: EventStore) -> IdMaps:
        arrays = []
        for table, idx, key in (
            ("users", "user_idx", "user_id"),
            ("items", "item_idx", "item_id"),
            ("categories", "category_idx", "category_id"),
        ):
            rows = store.con.execute(f"SELECT {idx}, {key} FROM {table}").fetchnumpy()
            size = int(rows[idx].max()) + 1 if len(rows[idx]) else 0
            ids = np.full(size, None, dtype=object)
            ids[np.asarray(rows[idx], dtype=np.int64)] = np.asarray(rows[key], dtype=object)
            arrays.append(ids)
        return cls(*arrays)

    def user_index(self, users: Sequence[str]) -> np.ndarray:
        """Dense ids of `users`; unknown ids raise, naming a few of them."""
        index = pd.Index(self.user_ids).get_indexer(pd.Index(list(users), dtype=object))
        if (index < 0).any():
            unknown = [u for u, i in zip(users, index, strict=True) if i < 0][:5]
            raise EbbtideError(
                f"unknown user id(s) {unknown}: they have no events in this history;"
                " check the ids, or take the snapshot from the store that holds them"
            )
        return index.astype(np.int64)


@dataclass(frozen=True, eq=False)
class History:
    """Every event strictly before `at`, as user-sorted arrays, with the ids they index.

    Attributes
    ----------
    events : EventArrays
        Events with ``ts < at``, dense ids of the store they came from.
    ids : IdMaps
        External id of each dense id.
    at : datetime
        The instant the history ends at (exclusive); queries answer at this instant.
    searches : SearchArrays, optional
        Searches with ``ts < at`` (who, when, the words), in the same dense user ids;
        a family that reads searches (`decay`) places them through its query map,
        the others ignore them. None: the history says nothing about searches.
    """

    events: EventArrays
    ids: IdMaps
    at: datetime
    searches: SearchArrays | None = None

    def __post_init__(self) -> None:
        to_days(self.at)

    def __repr__(self) -> str:
        return (
            f"History(at={self.at.isoformat()}, events={self.events.n_events},"
            f" users={int(np.count_nonzero(self.events.lengths()))})"
        )

    def until(self, at: datetime) -> History:
        """The part of this history before an earlier instant `at` (no database read)."""
        if at > self.at:
            raise EbbtideError(
                f"this history ends at {self.at.isoformat()}; it holds nothing about"
                f" {at.isoformat()}: take a new snapshot there"
            )
        keep = self.events.t < to_days(at)
        events = self.events if keep.all() else self.events.select(keep)
        searches = self.searches
        if searches is not None:
            searches = _select_searches(searches, searches.t < to_days(at), at)
        return History(events=_with_before(events, at), ids=self.ids, at=at, searches=searches)

    def for_users(self, users: Sequence[str]) -> History:
        """Only the events of `users` (ids and sizes kept), for many queries on a few users."""
        index = np.unique(self.ids.user_index(users))
        idx, _ = user_event_ranges(self.events.offsets, index)
        mask = np.zeros(self.events.n_events, dtype=bool)
        mask[idx] = True
        searches = self.searches
        if searches is not None:
            searches = _select_searches(searches, np.isin(searches.user_idx, index), self.at)
        events = self.events.select(mask)
        return History(events=events, ids=self.ids, at=self.at, searches=searches)


def snapshot(store: EventStore, *, at: datetime) -> History:
    """Read the events of `store` strictly before `at`, once, for every query at `at`.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from ebbtide.store import EventStore
    >>> snapshot(EventStore(":memory:"), at=datetime(2024, 1, 1, tzinfo=UTC))
    History(at=2024-01-01T00:00:00+00:00, events=0, users=0)
    """
    return History(
        events=load_events(store, before=at),
        ids=IdMaps.from_store(store),
        at=at,
        searches=load_searches(store, before=at),
    )


def _with_before(events: EventArrays, at: datetime) -> EventArrays:
    return replace(events, before=at)


def _select_searches(searches: SearchArrays, keep: np.ndarray, at: datetime) -> SearchArrays:
    return SearchArrays(
        user_idx=searches.user_idx[keep], t=searches.t[keep], query=searches.query[keep], before=at
    )


@dataclass(frozen=True)
class Catalogue:
    """The users, items and categories a model was fitted on, as external ids in the
    model's own numbering (code ``i`` is ``user_ids[i]``, ...).

    Why: a model must not depend on a store's dense ids, which count entities first seen
    after its cut-off, nor on the store at all once fitted. `localise` turns any `History`
    into the model's numbering: fitted entities keep their codes, entities new to the model
    get codes after them, so a family knows an item is unseen when ``code >= n_items``.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    category_ids: np.ndarray

    def _index(self, name: str) -> pd.Index:
        """A hash index of one id array, built once per catalogue: a query at each of a
        thousand instants (leave-one-out) would otherwise rebuild it each time."""
        cache = self.__dict__.setdefault("_indexes", {})
        if name not in cache:
            cache[name] = _id_index(getattr(self, name))
        return cache[name]

    @classmethod
    def empty(cls) -> Catalogue:
        none = np.zeros(0, dtype=object)
        return cls(none, none, none)

    def localise(self, history: History) -> Localised:
        """`history`'s events renumbered into this catalogue, with the ids of every code."""
        ev = history.events
        lengths = ev.lengths()
        present_users = np.flatnonzero(lengths > 0)
        user_codes, user_ids = _codes(
            self.user_ids, self._index("user_ids"), history.ids.user_ids, present_users
        )
        item_codes, item_ids = _codes(
            self.item_ids, self._index("item_ids"), history.ids.item_ids, _present(ev.item_idx)
        )
        cats, dictionary = _implicit_category(ev.category_idx, history.ids.category_ids)
        cat_codes, category_ids = _codes(
            self.category_ids, self._index("category_ids"), dictionary, _present(cats)
        )
        n_users = user_ids.size
        dense_of_code = np.full(n_users, -1, dtype=np.int64)
        dense_of_code[user_codes[present_users]] = present_users
        has = dense_of_code >= 0
        run = np.zeros(n_users, dtype=np.int64)
        run[has] = lengths[dense_of_code[has]]
        idx, q = user_event_ranges(ev.offsets, dense_of_code[has])
        events = EventArrays(
            user_idx=np.flatnonzero(has)[q].astype(np.int32),
            item_idx=item_codes[ev.item_idx[idx]].astype(np.int32),
            category_idx=cat_codes[cats[idx]].astype(np.int32),
            behavior=ev.behavior[idx],
            t=ev.t[idx],
            offsets=np.concatenate([[0], np.cumsum(run)]).astype(np.int64),
            n_users=int(n_users),
            n_items=int(item_ids.size),
            n_categories=int(category_ids.size),
            before=ev.before,
        )
        return Localised(
            events=events,
            catalogue=Catalogue(user_ids, item_ids, category_ids),
            dictionary=history.ids,
        )


@dataclass(frozen=True, eq=False)
class Localised:
    """A history in a model's numbering: the events, and the external id of every code."""

    events: EventArrays
    catalogue: Catalogue
    dictionary: IdMaps

    def user_codes(self, users: Sequence[str]) -> tuple[Localised, np.ndarray]:
        """Codes of `users`; users without events here get empty runs after the others.

        Raises for ids neither in the model's catalogue nor in the history's store.
        """
        ids = self.catalogue.user_ids
        wanted = pd.Index(list(users), dtype=object)
        codes = _id_index(ids).get_indexer(wanted)
        missing = codes < 0
        if not missing.any():
            return self, codes.astype(np.int64)
        extra = pd.Index(wanted[missing]).unique()
        self.dictionary.user_index(list(extra))  # raises, naming them, if unknown
        codes[missing] = ids.size + extra.get_indexer(wanted[missing])
        ev = self.events
        offsets = np.concatenate([ev.offsets, np.full(extra.size, ev.offsets[-1])])
        events = replace(ev, offsets=offsets, n_users=ev.n_users + int(extra.size))
        catalogue = replace(
            self.catalogue, user_ids=np.concatenate([ids, np.asarray(extra, dtype=object)])
        )
        return Localised(events, catalogue, self.dictionary), codes.astype(np.int64)


def _present(dense: np.ndarray) -> np.ndarray:
    """The distinct non-negative ids of `dense`, sorted (as `np.unique`, without a sort)."""
    if dense.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.bincount(dense.astype(np.int64, copy=False)))


def _id_index(ids: np.ndarray) -> pd.Index:
    """A hash index of `ids` in which `FORGOTTEN` entries match nothing.

    Why: a catalogue holds one tombstone per forgotten user, so the value repeats and a
    plain index could not look ids up; each tombstone becomes a distinct object instead,
    equal to no string, so no id (not even an empty one) finds a forgotten user's code.
    """
    ids = np.asarray(ids, dtype=object)
    holes = np.flatnonzero(ids == FORGOTTEN)
    if holes.size:
        ids = ids.copy()
        ids[holes] = [object() for _ in range(holes.size)]
    return pd.Index(ids, dtype=object)


def _codes(
    fitted_ids: np.ndarray, fitted: pd.Index, dense_ids: np.ndarray, present: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Code of each dense id (-1 where absent) and the external id of each code.

    Fitted ids keep their position (`fitted` is their `_id_index`); present ids new to
    them follow in dense order.
    """
    ids = dense_ids[present]
    if fitted.size:
        found = fitted.get_indexer(pd.Index(ids, dtype=object))
    else:
        found = np.full(ids.size, -1, dtype=np.int64)
    new = found < 0
    found[new] = fitted.size + np.arange(int(new.sum()))
    codes = np.full(dense_ids.size, -1, dtype=np.int64)
    codes[present] = found
    kept = np.asarray(fitted_ids, dtype=object)
    return codes, np.concatenate([kept, ids[new]]).astype(object)


def _implicit_category(
    categories: np.ndarray, category_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Dense categories with events that have none moved to `UNCATEGORISED`, added to the
    dictionary at the end (only when some event needs it)."""
    missing = categories < 0
    if not missing.any():
        return categories, category_ids
    implicit = category_ids.size
    return (
        np.where(missing, implicit, categories),
        np.append(category_ids, np.asarray([UNCATEGORISED], dtype=object)),
    )
