"""Each user's live interest, updated on every accepted event, and the reads made of it.

Why not re-score from the store: a read must cost a lookup, not a query. The fitted
`decay` model's intensity is a sum of exponentials, so a (user, category) pair needs only
its last occurrence time and one decayed sum (`LiveDecay`), updated in O(1) per event,
and a read evaluates the same formulas as batch `score` on that user's pairs.

`MemoryState` keeps the state in this process. `ebbtide.serve.redis_state.RedisState`
keeps it in Redis, so several service processes share it. Both also remember which events
they have seen (a 16-byte digest each), so a retried batch changes nothing.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ebbtide.activate.segments import SEGMENTS, SegmentRules, segment_of
from ebbtide.models.decay import DecayModel
from ebbtide.models.decay_live import LiveAnswer, LiveDecay
from ebbtide.serve.records import LiveEvent

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class UserScores:
    """What `GET /v1/users/{id}/scores` answers."""

    user_id: str
    at: float  # epoch seconds
    horizon_days: float
    p_return: float
    p_buy: float | None
    expected_return_days: float
    segment: str
    reason: str
    interest_vs_usual: float
    interest_change: float

    def to_dict(self) -> dict:
        return {
            "user_id": self.user_id,
            "at": self.at,
            "horizon_days": self.horizon_days,
            "p_return": self.p_return,
            "p_buy": self.p_buy,
            "expected_return_days": self.expected_return_days,
            "segment": self.segment,
            "reason": self.reason,
            "interest_vs_usual": _finite(self.interest_vs_usual),
            "interest_change": _finite(self.interest_change),
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class LiveState(Protocol):
    """What the service needs of a state store, in-process or shared."""

    def reserve(self, digests: Sequence[bytes]) -> list[bool]:
        """Mark events as taken; True for each one not seen before (it may be written)."""

    def release(self, digests: Sequence[bytes]) -> None:
        """Undo `reserve` for events whose write failed (a retry must not be a duplicate)."""

    def apply(self, events: Sequence[LiveEvent]) -> None:
        """Update the users' state with durable events."""

    def answer(self, user_id: str, at: float, horizon_days: float) -> LiveAnswer:
        """The model's answers for one user at `at` (epoch seconds); KeyError if unknown."""

    def forget(self, user_id: str, digests: Sequence[bytes] = ()) -> bool:
        """Drop the user's state, fitted rates (`LiveDecay.forget_fitted`) and the digests
        of their events; True when there was a state."""

    def user_ids(self) -> list[str]: ...

    def __len__(self) -> int: ...

    @property
    def latest(self) -> float:
        """Time (epoch seconds) of the latest event applied; 0 when none."""


class MemoryState:
    """The live state in this process (one service process)."""

    def __init__(self, model: DecayModel) -> None:
        self.model = model
        self._live = LiveDecay(model)
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()
        self._latest = 0.0

    def reserve(self, digests: Sequence[bytes]) -> list[bool]:
        fresh = []
        with self._lock:
            for digest in digests:
                new = digest not in self._seen
                if new:
                    self._seen.add(digest)
                fresh.append(new)
        return fresh

    def release(self, digests: Sequence[bytes]) -> None:
        with self._lock:
            self._seen.difference_update(digests)

    def apply(self, events: Sequence[LiveEvent]) -> None:
        with self._lock:
            for e in events:
                self._live.add(e.user_id, e.category_id, e.behavior, e.ts / SECONDS_PER_DAY)
                self._latest = max(self._latest, e.ts)

    def answer(self, user_id: str, at: float, horizon_days: float) -> LiveAnswer:
        with self._lock:
            return self._live.answer(user_id, at / SECONDS_PER_DAY, horizon_days)

    def forget(self, user_id: str, digests: Sequence[bytes] = ()) -> bool:
        with self._lock:
            self._seen.difference_update(digests)
            self._live.forget_fitted(user_id)
            return self._live.forget(user_id)

    def user_ids(self) -> list[str]:
        with self._lock:
            return self._live.user_ids()

    def __len__(self) -> int:
        return len(self._live)

    @property
    def latest(self) -> float:
        return self._latest


def scores_of(
    answer: LiveAnswer, user_id: str, at: float, horizon_days: float, rules: SegmentRules
) -> UserScores:
    """The segment rule applied to one user's live answer."""
    segment, reason = segment_of(answer.p_return, answer.interest_change, rules, horizon_days)
    return UserScores(
        user_id=user_id,
        at=at,
        horizon_days=horizon_days,
        p_return=answer.p_return,
        p_buy=answer.p_buy,
        expected_return_days=answer.expected_return_days,
        segment=segment,
        reason=reason,
        interest_vs_usual=answer.interest_vs_usual,
        interest_change=answer.interest_change,
    )


@dataclass(frozen=True, slots=True)
class Alert:
    """A user whose segment just worsened, with the reason."""

    user_id: str
    at: float
    previous: str
    segment: str
    reason: str
    p_return: float

    def to_dict(self) -> dict:
        return {
            "user_id": self.user_id,
            "at": self.at,
            "previous_segment": self.previous,
            "segment": self.segment,
            "reason": self.reason,
            "p_return": self.p_return,
        }


class SegmentWatch:
    """Segments now, and alerts when a user's segment worsens (the early-warning rule).

    A user fades by staying silent, so no event announces it: the service `observe`s
    every user in turn (`Service.watch_segments`, a few users per slice of the event
    loop), keeps each user's last segment, and gets an `Alert` for each move to a worse
    segment.
    """

    def __init__(self, rules: SegmentRules, horizon_days: float) -> None:
        self.rules = rules
        self.horizon_days = horizon_days
        self.segments: dict[str, str] = {}

    def observe(self, state: LiveState, user_id: str, at: float) -> Alert | None:
        try:
            answer = state.answer(user_id, at, self.horizon_days)
        except KeyError:  # forgotten meanwhile
            self.segments.pop(user_id, None)
            return None
        scores = scores_of(answer, user_id, at, self.horizon_days, self.rules)
        previous = self.segments.get(user_id)
        self.segments[user_id] = scores.segment
        if previous is None or SEGMENTS.index(scores.segment) <= SEGMENTS.index(previous):
            return None
        return Alert(user_id, at, previous, scores.segment, scores.reason, scores.p_return)

    def forget(self, user_id: str) -> None:
        self.segments.pop(user_id, None)

    def sizes(self) -> dict[str, int]:
        counts = dict.fromkeys(SEGMENTS, 0)
        for segment in self.segments.values():
            counts[segment] += 1
        return counts


def rebuild(state: LiveState, events: Iterable[LiveEvent], chunk: int = 10_000) -> int:
    """Feed every event of the store (and the log) into a fresh state; returns the count.

    A state with a `load_from` method (`RedisState`, shared by several processes) loads
    the events itself, idempotently: a second process starting does not count them twice.
    """
    load_from = getattr(state, "load_from", None)
    if load_from is not None:
        return load_from(events)
    batch: list[LiveEvent] = []
    count = 0
    for event in events:
        batch.append(event)
        if len(batch) >= chunk:
            state.reserve([e.identity() for e in batch])
            state.apply(batch)
            count += len(batch)
            batch = []
    if batch:
        state.reserve([e.identity() for e in batch])
        state.apply(batch)
        count += len(batch)
    return count
