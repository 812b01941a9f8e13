"""Replay a recorded log as a live stream, so anyone can watch the service work.

`prepare_replay` splits a log at an instant: the events before it become a store and a
fitted `decay` model (what a shop would have before going live), the events after it are
posted to the service as the replay clock passes their times, `speed` times faster than
real time. Posting goes through `Service.post`, the same path as HTTP clients.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from ebbtide.ingest import ColumnMapping, ingest_file
from ebbtide.models.decay import DecayModel
from ebbtide.serve.records import LiveEvent
from ebbtide.store import ITEM_ENGAGEMENT, MODEL_BEHAVIOR, EventStore

log = logging.getLogger("ebbtide.serve")

_EVENTS_SQL = f"""
    SELECT u.user_id, i.item_id, c.category_id, c.category_name, {MODEL_BEHAVIOR},
        epoch(e.ts), e.price, e.quantity, e.brand, e.session_id
    FROM (SELECT * FROM events WHERE {ITEM_ENGAGEMENT}) e
    JOIN users u USING (user_idx) JOIN items i USING (item_idx)
    LEFT JOIN categories c USING (category_idx)
    WHERE e.ts >= $start AND e.ts < $stop AND ($user IS NULL OR u.user_id = $user)
    ORDER BY e.ts, e.user_idx, e.item_idx"""


def read_events(
    store: EventStore,
    start: datetime | None = None,
    stop: datetime | None = None,
    *,
    user_id: str | None = None,
) -> Iterator[LiveEvent]:
    """The store's events in ``[start, stop)`` (of one user, if given), in time order, as
    the service's events."""
    cursor = store.con.cursor()
    cursor.execute("SET TimeZone = 'UTC'")
    cursor.execute(
        _EVENTS_SQL,
        {
            "start": start or datetime(1, 1, 2, tzinfo=UTC),
            "stop": stop or datetime(9999, 1, 1, tzinfo=UTC),
            "user": user_id,
        },
    )
    while rows := cursor.fetchmany(50_000):
        for u, i, c, name, b, seconds, price, quantity, brand, session in rows:
            yield LiveEvent(
                user_id=u,
                item_id=i,
                category_id=c,
                category_name=name,
                behavior=int(b),
                ts=seconds,
                price=price,
                quantity=quantity,
                brand=brand,
                session_id=session,
            )


@dataclass(frozen=True, slots=True)
class Replay:
    """A store and model fitted before `start`, and the events after it to post."""

    db: Path
    model_dir: Path
    start: float  # epoch seconds
    events: list[LiveEvent]


def prepare_replay(source: Path, fmt: str, folder: Path, *, live_days: float = 1.0) -> Replay:
    """Split `source` `live_days` before its last event; fit `decay` on the part before."""
    with EventStore(":memory:") as full:
        ingest_file(full, source, fmt)
        last = full.last_event()
        if last is None:
            raise ValueError(f"{source} holds no events to replay")
        cut = last - timedelta(days=live_days)
        before = list(read_events(full, stop=cut))
        after = list(read_events(full, start=cut))
    db = folder / "events.duckdb"
    with tempfile.TemporaryDirectory(prefix="ebbtide-replay-") as tmp:
        lines = Path(tmp) / "before.jsonl"
        lines.write_bytes(b"\n".join(post_json(e) for e in before) + b"\n")
        with EventStore(db) as store:
            ingest_file(store, lines, "generic", mapping=CANONICAL)
            model = DecayModel().fit(store, cutoff=cut)
    model_dir = model.save(folder / "model")
    return Replay(db, model_dir, cut.timestamp(), after)


async def replay(service, events: list[LiveEvent], *, batch: int = 500) -> int:
    """Post `events` as the service's clock passes their times; returns how many."""
    posted = 0
    while posted < len(events):
        now = service.clock.now()
        due = posted
        while due < len(events) and events[due].ts <= now and due - posted < batch:
            due += 1
        if due == posted:
            await asyncio.sleep(0.2)
            continue
        body = b"\n".join(post_json(e) for e in events[posted:due])
        await service.post(body, "application/x-ndjson")
        posted = due
    return posted


def post_json(event: LiveEvent) -> bytes:
    """An event as a client would post it (ISO time)."""
    data = {
        "user_id": event.user_id,
        "item_id": event.item_id,
        "category_id": event.category_id,
        "behavior": ("view", "cart", "fav", "buy")[event.behavior],
        "ts": datetime.fromtimestamp(event.ts, UTC).isoformat(),
    }
    for name in ("price", "quantity", "brand", "session_id"):
        value = getattr(event, name)
        if value is not None:
            data[name] = value
    return orjson.dumps(data)


#: The canonical columns as the generic reader maps them (time as ISO 8601).
CANONICAL = ColumnMapping(
    user_col="user_id",
    item_col="item_id",
    time_col="ts",
    category_col="category_id",
    behavior_col="behavior",
    price_col="price",
    quantity_col="quantity",
    brand_col="brand",
    session_col="session_id",
)
