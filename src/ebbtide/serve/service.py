"""The live service without HTTP: take events, make them durable, update the state, answer.

`Service` owns the pieces (the append log, the sink into the store, the live state, the
segment watch) and the order they work in, so that the HTTP layer (`ebbtide.serve.app`)
only translates requests. The order is what makes the promises hold:

1. rows are checked by the ingest rules (`records`); each valid event's digest is
   *reserved* in the state, so a copy (in this request, a retry, or one racing in from
   another request) is a duplicate and written nowhere;
2. the new events and the refused rows are appended to the log and ``fsync``-ed
   (group commit); only then is the request answered;
3. the state applies the events, so the next read reflects them;
4. the sink loads the log into the store a moment later, exactly once.

On start, whatever the log holds beyond what the store has is loaded first, and the state
is rebuilt from the store: after a crash, the state equals a batch replay of the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ebbtide.activate.segments import SegmentRules
from ebbtide.errors import ConfigError, PrivacyError
from ebbtide.features.history import snapshot
from ebbtide.ingest.pseudonymise import Pseudonymiser
from ebbtide.ingest.validation import ValidationRules
from ebbtide.models.decay import DecayModel
from ebbtide.models.decay_live import LiveAnswer
from ebbtide.serve.metrics import ServiceMetrics
from ebbtide.serve.records import BodyError, LiveEvent, parse_body, validate_rows
from ebbtide.serve.replay import read_events
from ebbtide.serve.sink import StoreSink, event_line, rejected_line
from ebbtide.serve.state import (
    Alert,
    LiveState,
    MemoryState,
    SegmentWatch,
    UserScores,
    rebuild,
    scores_of,
)
from ebbtide.serve.wal import AppendLog
from ebbtide.store import EventStore

log = logging.getLogger("ebbtide.serve")

#: The longest recommendation list kept per user.
MAX_RECOMMENDATIONS = 50


class Clock:
    """The service's "now" in epoch seconds: the wall clock, or a replayed log's time."""

    def __init__(self, start: float | None = None, speed: float = 1.0) -> None:
        self._wall0 = time.time()
        self._start = start
        self.speed = speed

    def now(self) -> float:
        if self._start is None:
            return time.time()
        return self._start + (time.time() - self._wall0) * self.speed

    @property
    def replaying(self) -> bool:
        return self._start is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    """Settings of `Service` (the `ebbtide serve` options).

    db : the store; model_dir : a saved `decay` model; log_dir : the append log (default
    ``<db>.log/``); horizon_days : the default horizon of reads; sweep_seconds : pause
    between two sweeps of the segment watch; recommend_seconds : between two refreshes of
    the recommendation lists; flush_seconds : pause between loads into the
    store; fsync : off only for throw-away runs; key_file : the pseudonymisation key
    (else ``EBBTIDE_PSEUDONYM_KEY``) for a pseudonymised store; state_url : a Redis URL
    (``redis://HOST:PORT/DB``) to keep the live state in, shared by several processes
    (`ebbtide.serve.redis_state`), or None to keep it in this process.
    """

    db: Path
    model_dir: Path
    log_dir: Path | None = None
    horizon_days: float = 1.0
    rules: SegmentRules = field(default_factory=SegmentRules)
    validation: ValidationRules = field(default_factory=ValidationRules)
    sweep_seconds: float = 5.0
    recommend_seconds: float = 300.0
    flush_seconds: float = 1.0
    fsync: bool = True
    key_file: Path | None = None
    state_url: str | None = None

    @property
    def log_folder(self) -> Path:
        return self.log_dir if self.log_dir is not None else Path(f"{self.db}.log")


@dataclass(frozen=True, slots=True)
class PostResult:
    """How every posted row was accounted for: rows = accepted + duplicates + rejected."""

    rows: int
    accepted: int
    duplicates: list[int]
    rejected: list[dict]

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "accepted": self.accepted,
            "duplicates": len(self.duplicates),
            "rejected": len(self.rejected),
            "duplicate_lines": self.duplicates,
            "rejected_rows": self.rejected,
        }


class Meter:
    """Events accepted per second over the last `window` seconds."""

    def __init__(self, window: int = 10) -> None:
        self.window = window
        self._counts: deque[tuple[int, int]] = deque()
        self.total = 0

    def add(self, n: int) -> None:
        second = int(time.monotonic())
        if self._counts and self._counts[-1][0] == second:
            self._counts[-1] = (second, self._counts[-1][1] + n)
        else:
            self._counts.append((second, n))
        self.total += n

    def rate(self) -> float:
        now = int(time.monotonic())
        while self._counts and self._counts[0][0] <= now - self.window:
            self._counts.popleft()
        return sum(n for _, n in self._counts) / self.window


def load_decay(model_dir: Path) -> DecayModel:
    """The model the service serves; only `decay` has an O(1) live state so far.

    Only the decay family is imported (not torch and the others): a service process
    stays small."""
    family = _family(model_dir)
    if family != DecayModel.name:
        raise ConfigError(
            f"{model_dir} holds a {family} model; the live service keeps an O(1) state"
            " per event for decay models only. Train one (`ebbtide train --model decay"
            " --db STORE --out-dir DIR`); then serve it with --model-dir DIR"
        )
    return DecayModel.load(model_dir)


def _family(model_dir: Path) -> str:
    try:
        return str(json.loads((Path(model_dir) / "config.json").read_text())["model"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{model_dir} holds no readable ebbtide model ({exc})") from None


class Service:
    """Events in, durable, state updated, answers out (see the module docstring)."""

    def __init__(self, config: ServiceConfig, clock: Clock | None = None) -> None:
        if not config.db.is_file():
            raise ConfigError(
                f"no store at {config.db}; create one with `ebbtide ingest FILE --db {config.db}`"
            )
        self.config = config
        self.clock = clock or Clock()
        self.model = load_decay(config.model_dir)
        self.pseudonymiser = self._pseudonymiser()
        self.accepted = Meter()
        self.alerts: deque[Alert] = deque(maxlen=200)
        #: The user of the latest event (by time) accepted or rebuilt, for the monitor page;
        #: None in a pseudonymised store, whose users are known only by the ids posted.
        self.latest_user: str | None = None
        self._latest_user_ts = -math.inf
        self._subscribers: set[asyncio.Queue] = set()
        self.ready = False
        self._recommendations: tuple[float, dict[str, list[dict]]] = (0.0, {})
        self.metrics = ServiceMetrics()
        self.wal = AppendLog(
            config.log_folder, fsync=config.fsync, on_commit=self.metrics.on_commit
        )
        fingerprint = self.pseudonymiser.fingerprint if self.pseudonymiser else None
        self.sink = StoreSink(
            config.db,
            self.wal,
            key_fingerprint=fingerprint,
            interval=config.flush_seconds,
            on_flush=lambda result: self.metrics.loads.inc(result.lines),
        )
        self.state: LiveState = self._new_state(self.model)
        self.metrics.users.set_function(lambda: len(self.state))
        self.watch = SegmentWatch(config.rules, config.horizon_days)

    def _new_state(self, model: DecayModel) -> LiveState:
        if self.config.state_url is None:
            return MemoryState(model)
        from ebbtide.serve.redis_state import RedisState

        return RedisState(model, self.config.state_url)

    def _pseudonymiser(self) -> Pseudonymiser | None:
        with EventStore(self.config.db) as store:
            pseudonymised = store.pseudonymised
            fingerprint = store.meta_value("key_fingerprint")
        if not pseudonymised:
            return None
        pseudonymiser = Pseudonymiser.from_env_or_file(self.config.key_file)
        if pseudonymiser.fingerprint != fingerprint:
            raise PrivacyError(
                f"{self.config.db} was pseudonymised with another key (fingerprint"
                f" {fingerprint}); start the service with that key"
            )
        return pseudonymiser

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> int:
        """Load the log's tail into the store, rebuild the state from it, start the sink.

        Returns the number of events the state was built from."""
        while self.sink.flush() is not None:
            pass
        count = rebuild(self.state, self._noting_latest(self.stored_events()))
        self.sink.start()
        self.ready = True
        log.info("live state built from %d stored events for %d users", count, len(self.state))
        return count

    def stop(self) -> None:
        self.ready = False
        self.sink.stop()
        self.wal.close()
        close = getattr(self.state, "close", None)
        if close is not None:
            close()

    def _noting_latest(self, events: Iterator[LiveEvent]) -> Iterator[LiveEvent]:
        for event in events:
            self._note_latest(event)
            yield event

    def _note_latest(self, event: LiveEvent) -> None:
        if event.ts >= self._latest_user_ts and self.pseudonymiser is None:
            self.latest_user, self._latest_user_ts = event.user_id, event.ts

    def stored_events(self) -> Iterator[LiveEvent]:
        """Every stored event, in time order, as the service's events."""
        with EventStore(self.config.db) as store:
            yield from read_events(store)

    def reload(self, model_dir: Path | None = None) -> int:
        """Swap in a retrained model: a new state is built from the store beside the old
        one, which answers until the swap."""
        model = load_decay(model_dir or self.config.model_dir)
        while self.sink.flush() is not None:
            pass
        fresh = self._new_state(model)
        count = rebuild(fresh, self.stored_events())
        self.model, self.state = model, fresh
        self.refresh_recommendations()
        if model_dir is not None:
            self.config = replace(self.config, model_dir=model_dir)
        self.watch = SegmentWatch(self.config.rules, self.config.horizon_days)
        return count

    # -- events in -----------------------------------------------------------------------
    def stored_id(self, user_id: str) -> str:
        """The id a user is kept under (their pseudonym in a pseudonymised store)."""
        return self.pseudonymiser(user_id) if self.pseudonymiser else user_id

    async def post(self, body: bytes, content_type: str | None) -> PostResult:
        """Check, log durably, apply; raises `BodyError` for a body that is not events."""
        rows = parse_body(body, content_type)
        if not rows:
            raise BodyError(
                "the body holds no events: send a JSON array of event objects or one JSON"
                " object per line (NDJSON) with user_id, item_id, behavior and ts"
            )
        now = datetime.fromtimestamp(self.clock.now(), UTC)
        checks = validate_rows(rows, self.config.validation, now)
        events: list[LiveEvent] = []
        positions: list[int] = []
        rejected: list[dict] = []
        lines: list[bytes] = []
        for row, check in zip(rows, checks, strict=True):
            if check.event is None:
                rejected.append({"line": row.line, "reason": check.reason, "detail": check.detail})
                raw = None if self.pseudonymiser else row.raw  # no raw ids in a private store
                lines.append(rejected_line(row.line, check.reason, check.detail, raw))
                continue
            event = check.event
            if self.pseudonymiser is not None:
                event = replace(event, user_id=self.pseudonymiser(event.user_id))
            events.append(event)
            positions.append(row.line)
        digests = [e.identity() for e in events]
        fresh = self.state.reserve(digests)
        new = [e for e, ok in zip(events, fresh, strict=True) if ok]
        duplicates = [line for line, ok in zip(positions, fresh, strict=True) if not ok]
        lines.extend(event_line(e) for e in new)
        if lines:
            try:
                await asyncio.wrap_future(self.wal.append(lines))
            except BaseException:
                self.state.release([d for d, ok in zip(digests, fresh, strict=True) if ok])
                raise
        self.state.apply(new)
        if new:
            self._note_latest(max(reversed(new), key=lambda e: e.ts))
        self.accepted.add(len(new))
        self.metrics.events.labels("accepted").inc(len(new))
        self.metrics.events.labels("duplicate").inc(len(duplicates))
        self.metrics.events.labels("rejected").inc(len(rejected))
        for row in rejected:
            self.metrics.rejected.labels(row["reason"]).inc()
        return PostResult(len(rows), len(new), duplicates, rejected)

    # -- reads ---------------------------------------------------------------------------
    def instant(self, at: float | None) -> float:
        """The read instant: now by default; never before the latest event applied."""
        latest = self.state.latest
        if at is None:
            return max(self.clock.now(), latest)
        if not math.isfinite(at) or at < latest:
            when = datetime.fromtimestamp(latest, UTC).isoformat()
            raise ConfigError(
                f"at={at!r}: the live state holds events up to {when}; ask at or after it"
                " (older instants are for batch `ebbtide score --at`)"
            )
        return at

    def answer(self, user_id: str, at: float | None, horizon_days: float) -> LiveAnswer:
        """KeyError when the user has no events."""
        return self.state.answer(self.stored_id(user_id), self.instant(at), horizon_days)

    def scores(self, user_id: str, at: float | None, horizon_days: float) -> UserScores:
        instant = self.instant(at)
        answer = self.state.answer(self.stored_id(user_id), instant, horizon_days)
        return scores_of(answer, user_id, instant, horizon_days, self.config.rules)

    def forget(self, user_id: str) -> dict:
        """Remove a user from everything the service holds or wrote.

        The log is rotated and loaded into the store, then the user goes from the store
        (compacted: `EventStore.compact`), and the log segments that held their lines are
        deleted; the loaded model,
        its folder and every model folder the store recorded (`ebbtide train`) get the
        user's tombstone and an unseen user's parameters; the live state loses their
        state and their events' digests (a returning user's events are new); so do the
        recommendations, segments, alerts and the monitor's latest user. Other service
        processes sharing a Redis state keep the user in their own loaded model until
        they reload it (``POST /v1/admin/reload``).
        """
        from ebbtide.models.base import forget_in_models

        stored = self.stored_id(user_id)
        self.wal.rotate().result(timeout=60)
        while self.sink.flush() is not None:
            pass
        with self.sink.holding(), EventStore(self.config.db) as store:
            digests = [e.identity() for e in read_events(store, user_id=stored)]
            report = store.forget(stored)
            recorded = [saved.path for saved in store.saved_models()]
            store.compact()  # else the file's free blocks keep the user's bytes
        self.wal.drop_before(self.sink.position)
        in_model = self.model.forget([stored]) > 0
        models = forget_in_models([self.config.model_dir, *recorded], [stored])
        in_state = self.state.forget(stored, digests)
        self._recommendations[1].pop(stored, None)
        self.watch.forget(stored)
        if self.latest_user == stored:
            self.latest_user = None
        self.alerts = deque((a for a in self.alerts if a.user_id != stored), maxlen=200)
        for path, reason in models.failed:
            log.warning("forget: the model in %s could not be rewritten: %s", path, reason)
        return {
            "events": report.events,
            "quarantined_rows": report.quarantined_rows,
            "live_state": in_state,
            "model": in_model,
            "models_rewritten": models.updated,
            "models_failed": [path for path, _ in models.failed],
        }

    # -- recommendations ---------------------------------------------------------------
    def refresh_recommendations(self, k: int = MAX_RECOMMENDATIONS) -> None:
        """Every user's top-`k` items from the store as it is now.

        Why a table and not a per-event update: `decay` ranks items by the user's own
        recent events *and* every item's recent popularity, a sum over all users' events,
        so the lists are recomputed in one vectorised pass, in a thread, every
        `recommend_seconds`; reads look them up and say how old they are."""
        with EventStore(self.config.db) as store:
            last = store.last_event()
            if last is None:
                return
            at = max(last + timedelta(seconds=1), self.model.cutoff_)
            history = snapshot(store, at=at)
        frame = self.model.recommend(history, k=k)
        lists: dict[str, list[dict]] = {}
        for user, item, score in zip(
            frame["user_id"], frame["item_id"], frame["score"], strict=True
        ):
            lists.setdefault(user, []).append({"item_id": item, "score": float(score)})
        self._recommendations = (at.timestamp(), lists)

    def recommendations(self, user_id: str, k: int) -> dict:
        """KeyError when the user had no events at the last refresh."""
        at, lists = self._recommendations
        items = lists[self.stored_id(user_id)]
        return {"user_id": user_id, "as_of": at, "items": items[:k]}

    async def refresh_recommendations_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.recommend_seconds)
            await asyncio.to_thread(self.refresh_recommendations)

    # -- alerts --------------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1_000)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)

    async def watch_segments(self, slice_users: int = 2) -> None:
        """Sweep users' segments forever, in small slices so requests are not held up."""
        while True:
            users = self.state.user_ids()
            for lo in range(0, len(users), slice_users):
                at = self.instant(None)
                for user_id in users[lo : lo + slice_users]:
                    alert = self.watch.observe(self.state, user_id, at)
                    if alert is not None:
                        self._publish(alert)
                await asyncio.sleep(0)
            await asyncio.sleep(self.config.sweep_seconds)

    def _publish(self, alert: Alert) -> None:
        self.alerts.append(alert)
        self.metrics.alerts.inc()
        for queue in list(self._subscribers):
            if queue.full():  # a slow reader loses its oldest alert, not the service
                queue.get_nowait()
            queue.put_nowait(alert)
