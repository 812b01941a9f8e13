"""Carry the service's event log into the DuckDB store, in order and exactly once.

Why a separate step: the store takes one writer and a transaction per load, and batch
commands (`score`, `train`, `report`) must be able to open it while the service runs. So
the sink opens the store only to load what the log gained since the last load, in one
transaction that also records the log position reached (store meta
``service_log_position:<log folder>``), and closes it again. After a crash the next sink starts from
the recorded position: a line is loaded once, never twice, and never lost. When a batch
command holds the store, the load waits for the next round; the log keeps the events safe.

Log lines are ``E`` + an event (`LiveEvent.to_json`) or ``Q`` + a rejected row (JSON with
line, reason, detail, raw), so posted rows that were refused reach the store's quarantine
table with their reason, like rows of an ingested file.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa

from ebbtide.errors import EbbtideError
from ebbtide.serve.records import LiveEvent
from ebbtide.serve.wal import AppendLog, Position
from ebbtide.store import EventStore, IngestSummary, LoadRequest

log = logging.getLogger("ebbtide.serve")

#: Store meta key (then ``:`` and the log folder) holding the log position loaded so far;
#: one per folder, so several service processes, each with its own log, share a store.
POSITION_KEY = "service_log_position"
#: Most log lines loaded in one transaction.
MAX_LINES = 200_000
_SOURCE_TABLE = "ebbtide_service_batch"
_STAGING_SQL = f"SELECT * FROM {_SOURCE_TABLE}"
_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("category_id", pa.string()),
        ("category_name", pa.string()),
        ("behavior", pa.uint8()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("price", pa.float64()),
        ("quantity", pa.int32()),
        ("brand", pa.string()),
        ("session_id", pa.string()),
        ("query", pa.string()),
        ("value", pa.float64()),
        ("placement", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),
        ("raw_behavior", pa.string()),
        ("raw_time", pa.string()),
        ("raw_price", pa.string()),
    ]
)


def event_line(event: LiveEvent) -> bytes:
    """The log line of an accepted event."""
    return b"E" + event.to_json()


def rejected_line(line: int, reason: str, detail: str | None, raw: str | None) -> bytes:
    """The log line of a posted row that was refused (for the quarantine table)."""
    return b"Q" + orjson.dumps({"line": line, "reason": reason, "detail": detail, "raw": raw})


@dataclass(frozen=True, slots=True)
class FlushResult:
    """One load: the log lines it covered and the store's account of them."""

    lines: int
    position: Position
    summary: IngestSummary


class StoreSink:
    """Loads the log into the store, on demand (`flush`) or every `interval` seconds.

    Parameters
    ----------
    db : str or Path
        The store file (it must exist).
    wal : AppendLog
        The log the service appends to.
    key_fingerprint : str, optional
        For a pseudonymised store: the fingerprint of the key the ids in the log were
        pseudonymised with (the store refuses another).
    on_flush : callable, optional
        Called with each `FlushResult`, for metrics.
    """

    def __init__(
        self,
        db: str | Path,
        wal: AppendLog,
        *,
        key_fingerprint: str | None = None,
        interval: float = 1.0,
        on_flush: Callable[[FlushResult], None] | None = None,
    ) -> None:
        self.db = str(db)
        self.wal = wal
        self.key_fingerprint = key_fingerprint
        self.interval = interval
        self.on_flush = on_flush
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._key = f"{POSITION_KEY}:{self.wal.folder.resolve()}"
        self.position = self._recorded_position()

    def _recorded_position(self) -> Position:
        with EventStore(self.db) as store:
            text = store.meta_value(self._key)
        if text is None:
            first = self.wal.segments()
            return Position(first[0] if first else 1, 0)
        return Position.parse(text)

    @contextmanager
    def holding(self) -> Iterator[None]:
        """No load runs meanwhile: `Service.forget` replaces the store's file."""
        with self._lock:
            yield

    @property
    def pending(self) -> bool:
        """Whether the log holds lines the store does not have yet."""
        return self.position < self.wal.durable

    def flush(self) -> FlushResult | None:
        """Load what the log gained since the last load; None when there was nothing."""
        with self._lock:
            lines, end = self.wal.read(self.position, limit=MAX_LINES)
            if not lines:
                if end > self.position:
                    self.position = end
                return None
            table = _to_table(lines)
            request = LoadRequest(
                source=f"service log {self.position}..{end}",
                sha256=hashlib.sha256(
                    b"\n".join([str(self.position).encode(), *lines])
                ).hexdigest(),
                options={"source": "ebbtide serve"},
                staging_sql=_STAGING_SQL,
                params={},
                rejects_sql=None,
                present_fields=(),
                pseudonymise=_as_is if self.key_fingerprint is not None else None,
                key_fingerprint=self.key_fingerprint,
                meta={self._key: str(end)},
            )
            with EventStore(self.db) as store:
                store.con.execute("SELECT 1").fetchall()  # no pending result: register refuses
                store.con.register(_SOURCE_TABLE, table)
                try:
                    summary = store.load(request)
                finally:
                    store.con.unregister(_SOURCE_TABLE)
            self.position = end
            self.wal.drop_before(end)
        result = FlushResult(len(lines), end, summary)
        if self.on_flush is not None:
            self.on_flush(result)
        return result

    # -- background loads ----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ebbtide-sink", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop after a last load (best effort: what is left stays in the log)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            while self.flush() is not None:
                pass
        except EbbtideError as exc:
            log.warning("the last load into the store failed; the log keeps the events: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                while self.flush() is not None and not self._stop.is_set():
                    pass
                self.last_error = None
            except EbbtideError as exc:  # e.g. a batch command holds the store: next round
                self.last_error = str(exc)
                log.warning("loading the event log into the store failed, will retry: %s", exc)


def _as_is(ids: list[str]) -> list[str]:
    """Ids in the log are pseudonymised already, by the service, before they were logged."""
    return ids


def _to_table(lines: list[bytes]) -> pa.Table:
    """The staging rows of a load: events with NULL reason, refused rows with theirs."""
    columns: dict[str, list] = {name: [] for name in _SCHEMA.names}
    for line in lines:
        kind, body = line[:1], line[1:]
        if kind == b"E":
            e = LiveEvent.from_json(body)
            values = (
                e.user_id,
                e.item_id,
                e.category_id,
                e.category_name,
                e.behavior,
                round(e.ts * 1_000_000),
                e.price,
                e.quantity,
                e.brand,
                e.session_id,
                None,  # the live service takes item behaviours only: no query,
                None,  # value or placement yet
                None,
                None,
                None,
                None,
                None,
                None,
                None,
            )
        elif kind == b"Q":
            q = orjson.loads(body)
            values = (None,) * 13 + (q["reason"], q["detail"], q["raw"], None, None, None)
        else:
            raise EbbtideError(f"the event log holds a line it cannot read: {line[:80]!r}")
        for name, value in zip(_SCHEMA.names, values, strict=True):
            columns[name].append(value)
    return pa.table(columns, schema=_SCHEMA)
