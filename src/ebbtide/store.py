"""The embedded event store: one DuckDB file holding events, id maps and quarantine.

Events are kept with dense integer ids (``user_idx``, ``item_idx``, ``category_idx``)
next to dictionaries back to the external ids. Every load runs in one transaction: a
crash or kill half-way leaves the store as it was, and loading the same rows again adds
nothing, because each event is compared exactly with what is already stored.

Examples
--------
>>> from ebbtide.store import EventStore
>>> with EventStore(":memory:") as store:
...     store.stats().events
0
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ebbtide.errors import ConfigError, InputFormatError, PrivacyError, StoreError
from ebbtide.schema import BEHAVIORS, ITEM_BEHAVIORS, NOT_ACTIVITY, SEEN_AS_VIEW, Behavior
from ebbtide.sql import bind

#: Bumped whenever the tables change shape; a store written by another version is refused.
#: (A table added beside the others, as ``saved_models``, is created on the next write and
#: read as empty before: no bump, old stores stay readable.)
STORE_FORMAT_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS users (user_idx INTEGER, user_id VARCHAR);
CREATE TABLE IF NOT EXISTS items (item_idx INTEGER, item_id VARCHAR);
CREATE TABLE IF NOT EXISTS categories (
    category_idx INTEGER, category_id VARCHAR, category_name VARCHAR);
CREATE TABLE IF NOT EXISTS events (
    user_idx INTEGER NOT NULL, item_idx INTEGER, category_idx INTEGER,
    behavior UTINYINT NOT NULL, ts TIMESTAMPTZ NOT NULL, price DOUBLE, quantity INTEGER,
    brand VARCHAR, session_id VARCHAR, occurrence INTEGER NOT NULL,
    ingest_id INTEGER NOT NULL, query VARCHAR, value DOUBLE, placement VARCHAR);
CREATE TABLE IF NOT EXISTS quarantine (
    ingest_id INTEGER, line BIGINT, reason VARCHAR, detail VARCHAR, raw VARCHAR,
    user_id VARCHAR, item_id VARCHAR, category_id VARCHAR, behavior VARCHAR,
    time VARCHAR, price VARCHAR);
CREATE TABLE IF NOT EXISTS ingests (
    ingest_id INTEGER, source VARCHAR, sha256 VARCHAR, options VARCHAR,
    started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, rows_read BIGINT, loaded BIGINT,
    duplicates BIGINT, quarantined BIGINT, reasons VARCHAR);
CREATE TABLE IF NOT EXISTS saved_models (
    path VARCHAR PRIMARY KEY, model VARCHAR, saved_at TIMESTAMPTZ);
"""
#: Canonical field -> the events column holding it.
_FIELD_COLUMNS = {
    "user_id": "user_idx",
    "item_id": "item_idx",
    "category_id": "category_idx",
    "behavior": "behavior",
    "ts": "ts",
    "price": "price",
    "quantity": "quantity",
    "brand": "brand",
    "session_id": "session_id",
    "query": "query",
    "value": "value",
    "placement": "placement",
}
#: Columns a store written before searches, clicks, impressions and ratings lacks; added
#: (NULL for every old row) the first time such a store is opened for writing.
_ADDED_COLUMNS = {"query": "VARCHAR", "value": "DOUBLE", "placement": "VARCHAR"}
#: What an identity column holds when the source lacks it (typed: hash() sees the type).
_ABSENT = {
    "user_idx": "NULL::INTEGER",
    "item_idx": "NULL::INTEGER",
    "category_idx": "NULL::INTEGER",
    "behavior": "NULL::UTINYINT",
    "ts": "NULL::TIMESTAMPTZ",
    "price": "NULL::DOUBLE",
    "quantity": "NULL::INTEGER",
    "brand": "NULL::VARCHAR",
    "session_id": "NULL::VARCHAR",
    "occurrence": "0",
    "query": "NULL::VARCHAR",
    "value": "NULL::DOUBLE",
    "placement": "NULL::VARCHAR",
}
_NOT_NULL = {"user_idx", "behavior", "ts", "occurrence"}
#: The columns that make an event what it is; two rows equal on all of them are one event.
_IDENTITY = (
    "user_idx, item_idx, category_idx, behavior, ts, price, quantity, brand, session_id,"
    " occurrence, query, value, placement"
)

Progress = Callable[[str], None]

#: SQL condition on ``events`` rows that are something the user did (not an impression):
#: visits, returns and engagement labels count these only.
USER_ACTIVITY = f"behavior NOT IN ({', '.join(str(b.code) for b in NOT_ACTIVITY)})"
#: SQL condition on ``events`` rows the models see: an item behaviour, or a click or rating
#: of an item (see `ebbtide.schema`); and the behaviour code they see it as.
ITEM_ENGAGEMENT = (
    f"behavior IN ({', '.join(str(b.code) for b in (*ITEM_BEHAVIORS, *SEEN_AS_VIEW))})"
    " AND item_idx IS NOT NULL"
)
MODEL_BEHAVIOR = (
    f"(CASE WHEN behavior IN ({', '.join(str(b.code) for b in SEEN_AS_VIEW)})"
    f" THEN {Behavior.VIEW.code} ELSE behavior END)"
)


def check_time_zone(tz: str, con: duckdb.DuckDBPyConnection | None = None) -> str:
    """Return `tz` if DuckDB knows it as a time zone, else raise `ConfigError`.

    DuckDB (ICU) is the judge, not `zoneinfo`: it is DuckDB that converts the times, and
    the two do not know exactly the same names.

    Raises
    ------
    ConfigError
        Naming the value, a close known name if there is one, and the kind of name to use.

    Examples
    --------
    >>> check_time_zone("Europe/Berlin")
    'Europe/Berlin'
    """
    owned = con is None
    con = con if con is not None else duckdb.connect()
    try:
        con.execute("SELECT timezone(?, TIMESTAMPTZ '2000-01-01 00:00:00+00')", [tz]).fetchone()
        return tz
    except duckdb.Error:
        known = [r[0] for r in con.execute("SELECT name FROM pg_timezone_names()").fetchall()]
    finally:
        if owned:
            con.close()
    close = difflib.get_close_matches(tz, known, n=1, cutoff=0.8)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(
        f"unknown time zone {tz!r}{hint}; use an IANA time zone name such as Europe/Berlin,"
        " Asia/Shanghai or America/New_York, or UTC"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadRequest:
    """Everything `EventStore.load` needs to load one source, prepared by `ebbtide.ingest`.

    ``staging_sql`` yields typed rows with a ``reason`` column (NULL = valid);
    ``rejects_sql`` yields (line, reason, detail, raw) for rows the reader could not
    split, once the staging query has run; ``temp_tables`` are dropped afterwards;
    ``fatal_reasons`` maps reject reasons that make the whole file unreadable to the
    message that refuses it; ``present_fields`` names the canonical fields the source can
    fill (the others are NULL for every row, so de-duplication can skip them);
    ``pseudonymise`` maps distinct raw user ids to pseudonyms (None keeps ids as they
    are) and ``key_fingerprint`` identifies its key. ``meta`` entries are written in the
    same transaction (the live service records how far its event log has been loaded).
    """

    source: str
    sha256: str
    options: dict[str, Any]
    staging_sql: str
    params: dict[str, object]
    rejects_sql: str | None
    temp_tables: tuple[str, ...] = ()
    keep_repeats: bool = False
    present_fields: tuple[str, ...] = ()
    fatal_reasons: dict[str, str] = field(default_factory=dict)
    pseudonymise: Callable[[list[str]], list[str]] | None = None
    key_fingerprint: str | None = None
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IngestSummary:
    """How every row read was accounted for: ``rows_read = loaded + duplicates + quarantined``.

    ``duplicates`` counts valid rows not loaded because an identical event is already
    stored or came earlier in the same file; ``duplicates_in_file`` is the second kind and
    ``duplicate_buys_in_file`` the purchases among them (both 0 when the file was already
    ingested). Identical means equal on every field the source fills: purchase lines of
    *different* orders with the same user, item and second collapse unless the order id
    is loaded as ``session_id``; ``notes`` then says so and how to keep them.
    """

    source: str
    rows_read: int
    loaded: int
    duplicates: int
    quarantined: int
    reasons: dict[str, int]
    new_users: int
    new_items: int
    new_categories: int
    already_ingested: bool = False
    seconds: float = 0.0
    duplicates_in_file: int = 0
    duplicate_buys_in_file: int = 0
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (
            self.rows_read != self.loaded + self.duplicates + self.quarantined
            or not 0 <= self.duplicate_buys_in_file <= self.duplicates_in_file <= self.duplicates
        ):
            raise StoreError(f"ingest accounting broke: {self}; please report this bug")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _InsertCounts:
    """Valid staged rows, distinct ones among them (of all, of purchases) and rows loaded."""

    valid: int
    valid_buys: int
    distinct: int
    distinct_buys: int
    loaded: int


class Period(StrEnum):
    """How finely `EventStore.event_counts` and `stats` count events over time."""

    DAY = "day"
    WEEK = "week"  # weeks start on Monday (ISO 8601)
    MONTH = "month"


#: Most rows of a time table counted per day, then per week, when the period is chosen
#: from the log: about two months of days, a year of weeks, then months.
DAYS_UP_TO = 62
WEEKS_UP_TO = 56
#: How a period's first day is labelled: the date (a week by its Monday), or year-month.
_PERIOD_LABEL = {Period.DAY: "%Y-%m-%d", Period.WEEK: "%Y-%m-%d", Period.MONTH: "%Y-%m"}


def period_for(days: int, weeks: int) -> Period:
    """The finest period that keeps a time table short, from the days and weeks with events.

    Counting the days and weeks that hold events, not the span from first to last event,
    keeps a few stray early events from folding a nine-day log into weeks.

    Examples
    --------
    >>> period_for(9, 2), period_for(364, 52), period_for(546, 79)
    (<Period.DAY: 'day'>, <Period.WEEK: 'week'>, <Period.MONTH: 'month'>)
    """
    if days <= DAYS_UP_TO:
        return Period.DAY
    return Period.WEEK if weeks <= WEEKS_UP_TO else Period.MONTH


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What a store holds, for `ebbtide stats` and the report.

    ``events_per_period`` counts events per ``period`` (``day``, ``week`` from Monday or
    ``month``, labelled by its first day, or year-month) in time zone ``timezone``; the
    first and last periods may be partial. ``period_chosen`` is True when the period was
    chosen (`period_for`) rather than asked for; ``days_with_events`` counts the days
    (in ``timezone``) that hold an event.
    """

    users: int
    items: int
    categories: int
    events: int
    events_by_behavior: dict[str, int]
    first_event: datetime | None
    last_event: datetime | None
    events_per_user: dict[str, float]
    events_per_period: list[tuple[str, int]]
    quarantined: dict[str, int]
    ingests: int
    pseudonymised: bool | None
    timezone: str = "UTC"
    period: str = "day"
    period_chosen: bool = False
    days_with_events: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("first_event", "last_event"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


@dataclass(frozen=True, slots=True)
class ForgetReport:
    """What `EventStore.forget` removed for one user."""

    user_id: str
    events: int
    quarantined_rows: int
    user_entry: bool


@dataclass(frozen=True, slots=True)
class RetainReport:
    """What `EventStore.retain` removed (or, with ``dry_run``, would remove).

    ``oldest_remaining`` is the first event kept (None when none is left).
    """

    before: datetime
    events: int
    quarantined_rows: int
    users: int
    events_left: int
    oldest_remaining: datetime | None
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("before", "oldest_remaining"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


@dataclass(frozen=True, slots=True)
class SavedModel:
    """A model folder `ebbtide train` saved from this store (`EventStore.saved_models`)."""

    path: str
    model: str
    saved_at: datetime


class EventStore:
    """A DuckDB-backed store of canonical events.

    Parameters
    ----------
    path : str or Path
        Database file, created if missing; ``":memory:"`` for a throw-away store.
    read_only : bool
        Open without taking the write lock (several readers may share the file).
    memory_limit : str
        DuckDB's memory cap; past it DuckDB spills to a temp directory beside the file.
    threads : int, optional
        Worker threads (default: DuckDB's choice, one per core).
    """

    def __init__(
        self,
        path: str | Path = "ebbtide.duckdb",
        *,
        read_only: bool = False,
        memory_limit: str = "3GB",
        threads: int | None = None,
    ) -> None:
        self.path = str(path)
        config: dict[str, str | int] = {"memory_limit": memory_limit}
        if threads is not None:
            config["threads"] = threads
        self._config = config
        try:
            self.con = duckdb.connect(self.path, read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if "not a valid DuckDB database" in str(exc):
                raise StoreError(
                    f"{self.path} is not an ebbtide store (not a DuckDB file)"
                ) from None
            if "lock" in str(exc).lower():
                raise StoreError(
                    f"{self.path} is in use by another ebbtide or DuckDB process that is"
                    " writing to it; wait for it to finish and try again"
                ) from None
            raise StoreError(f"cannot open the store {self.path}: {exc}") from None
        except duckdb.Error as exc:
            raise StoreError(f"{self.path} is not an ebbtide store (DuckDB says: {exc})") from None
        self.con.execute("SET TimeZone = 'UTC'")
        if not read_only:
            self.con.execute(_SCHEMA)
        self._check_version(read_only)
        if not read_only:
            self._add_missing_columns()

    # -- life cycle ---------------------------------------------------------------
    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventStore({self.path!r})"

    def _meta(self, key: str) -> str | None:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def meta_value(self, key: str) -> str | None:
        """A value the store keeps about itself, e.g. how far the service's log is loaded."""
        return self._meta(key)

    def _set_meta(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    def _check_version(self, read_only: bool) -> None:
        try:
            version = self._meta("store_format_version")
        except duckdb.CatalogException:
            raise StoreError(f"{self.path} is a DuckDB file but not an ebbtide store") from None
        if version is None and not read_only:
            self._set_meta("store_format_version", str(STORE_FORMAT_VERSION))
        elif version is not None and int(version) != STORE_FORMAT_VERSION:
            raise StoreError(
                f"{self.path} was written in store format {version}; this ebbtide reads format"
                f" {STORE_FORMAT_VERSION}. Re-ingest the source files into a new store."
            )

    def _add_missing_columns(self) -> None:
        """Bring a store written before the search/click/impression/rate columns up to date.

        The old rows keep NULL there, which is what they mean; no format bump, so a store
        stays readable by every version that knows its tables.
        """
        present = self._event_columns()
        for column, sql_type in _ADDED_COLUMNS.items():
            if column not in present:
                self.con.execute(f"ALTER TABLE events ADD COLUMN {column} {sql_type}")
        item_required = self.con.execute(
            "SELECT NOT is_nullable FROM duckdb_columns()"
            " WHERE table_name = 'events' AND column_name = 'item_idx'"
            " AND database_name = current_database()"
        ).fetchall()
        if item_required and item_required[0][0]:
            self.con.execute("ALTER TABLE events ALTER COLUMN item_idx DROP NOT NULL")

    def _event_columns(self) -> set[str]:
        return {
            row[0]
            for row in self.con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = 'events'"
                " AND database_name = current_database()"
            ).fetchall()
        }

    @property
    def has_feedback_columns(self) -> bool:
        """True when the events table has ``query``, ``value`` and ``placement`` (an old
        store opened read-only may not: it has no searches, clicks or ratings either)."""
        return set(_ADDED_COLUMNS) <= self._event_columns()

    @property
    def pseudonymised(self) -> bool | None:
        """True/False once the first load fixed it, None for a store that never loaded."""
        value = self._meta("pseudonymised")
        return None if value is None else value == "true"

    # -- loading ------------------------------------------------------------------
    def load(self, request: LoadRequest, progress: Progress | None = None) -> IngestSummary:
        """Load one staged source in a single transaction and account for every row.

        Raises
        ------
        PrivacyError
            When the request's pseudonymisation does not match the store's.
        StoreError
            When DuckDB fails; the store is left exactly as before.
        """
        report = progress or (lambda stage: None)
        started = datetime.now(UTC)
        self._check_privacy(request)
        options = json.dumps(request.options, sort_keys=True)
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            previous = con.execute(
                "SELECT rows_read, loaded + duplicates, quarantined, reasons FROM ingests"
                " WHERE sha256 = ? AND options = ?",
                [request.sha256, options],
            ).fetchone()
            if previous is not None:
                con.execute("ROLLBACK")
                rows, dup, bad, reasons = previous
                return IngestSummary(
                    request.source,
                    rows,
                    0,
                    dup,
                    bad,
                    json.loads(reasons),
                    0,
                    0,
                    0,
                    already_ingested=True,
                    seconds=_elapsed(started),
                )
            summary = self._load_in_transaction(request, options, started, report)
            report("committing")
            con.execute("COMMIT")
        except BaseException as exc:
            con.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                raise StoreError(
                    f"loading {request.source} failed, nothing was stored: {exc}"
                ) from exc
            raise
        finally:
            self._drop_temp(request)
        return summary

    def _check_privacy(self, request: LoadRequest) -> None:
        wants = request.pseudonymise is not None
        mode = self.pseudonymised
        if mode is None:
            return
        if mode and not wants:
            raise PrivacyError(
                f"{self.path} holds pseudonymised user ids; it refuses raw ids. Ingest with"
                " --pseudonymise and the same key (EBBTIDE_PSEUDONYM_KEY or --key-file)."
            )
        if not mode and wants:
            raise PrivacyError(
                f"{self.path} holds raw user ids; pseudonymised ids would not match them."
                " Use a new store for pseudonymised data."
            )
        if mode and self._meta("key_fingerprint") != request.key_fingerprint:
            raise PrivacyError(
                f"{self.path} was pseudonymised with another key (fingerprint"
                f" {self._meta('key_fingerprint')}); use that key or a new store."
            )

    def _load_in_transaction(
        self, request: LoadRequest, options: str, started: datetime, report: Progress
    ) -> IngestSummary:
        con = self.con
        ingest_id = con.execute("SELECT coalesce(max(ingest_id), 0) + 1 FROM ingests").fetchone()[0]
        report("reading and checking rows")
        stage = f"CREATE OR REPLACE TEMP TABLE ebbtide_stage AS {request.staging_sql}"
        con.execute(stage, bind(stage, request.params))
        rejects = self._rejects(request)
        if request.fatal_reasons:
            fatal = con.execute(
                "SELECT reason, line FROM ebbtide_rejected WHERE list_contains(?, reason)"
                " ORDER BY line LIMIT 1",
                [list(request.fatal_reasons)],
            ).fetchone()
            if fatal is not None:
                raise InputFormatError(
                    f"{request.source}, line {fatal[1]}: {request.fatal_reasons[fatal[0]]}"
                )
        if request.pseudonymise is not None:
            report("pseudonymising user ids")
            self._pseudonymise_stage(request)
            self._set_meta("pseudonymised", "true")
            self._set_meta("key_fingerprint", request.key_fingerprint or "")
        elif self.pseudonymised is None:
            self._set_meta("pseudonymised", "false")

        report("indexing users, items and categories")
        new_ids = self._extend_dictionaries()
        report("removing duplicates and writing events")
        counts = self._insert_events(request, ingest_id)

        for key, value in request.meta.items():
            self._set_meta(key, value)
        report("quarantining rejected rows")
        # Raw text would carry raw user ids past the pseudonymiser: withheld in that mode.
        raw = "NULL" if request.pseudonymise is not None else "raw"
        con.execute(
            f"""INSERT INTO quarantine SELECT {ingest_id}, NULL, reason, detail, {raw},
                user_id, item_id, category_id, raw_behavior, raw_time, raw_price
            FROM ebbtide_stage WHERE reason IS NOT NULL"""
        )
        if rejects:
            con.execute(
                f"""INSERT INTO quarantine SELECT {ingest_id}, line, reason, detail,
                    {"NULL" if request.pseudonymise is not None else "raw"},
                    NULL, NULL, NULL, NULL, NULL, NULL FROM ebbtide_rejected"""
            )
        reasons = dict(
            con.execute(
                "SELECT reason, count(*) FROM quarantine WHERE ingest_id = ?"
                " GROUP BY reason ORDER BY reason",
                [ingest_id],
            ).fetchall()
        )
        quarantined = sum(reasons.values())
        summary = IngestSummary(
            request.source,
            counts.valid + quarantined,
            counts.loaded,
            counts.valid - counts.loaded,
            quarantined,
            reasons,
            *new_ids,
            seconds=_elapsed(started),
            duplicates_in_file=counts.valid - counts.distinct,
            duplicate_buys_in_file=counts.valid_buys - counts.distinct_buys,
        )
        con.execute(
            "INSERT INTO ingests VALUES (?, ?, ?, ?, ?, now(), ?, ?, ?, ?, ?)",
            [
                ingest_id,
                request.source,
                request.sha256,
                options,
                started,
                summary.rows_read,
                summary.loaded,
                summary.duplicates,
                summary.quarantined,
                json.dumps(reasons),
            ],
        )
        return summary

    def _rejects(self, request: LoadRequest) -> int:
        """Collect rows the reader could not split into ``ebbtide_rejected``."""
        if request.rejects_sql is None:
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE ebbtide_rejected"
                " (line BIGINT, reason VARCHAR, detail VARCHAR, raw VARCHAR)"
            )
            return 0
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE ebbtide_rejected AS {request.rejects_sql}")
        return self.con.execute("SELECT count(*) FROM ebbtide_rejected").fetchone()[0]

    def _pseudonymise_stage(self, request: LoadRequest) -> None:
        assert request.pseudonymise is not None
        raw_ids = [
            r[0]
            for r in self.con.execute(
                "SELECT DISTINCT user_id FROM ebbtide_stage WHERE user_id IS NOT NULL"
            ).fetchall()
        ]
        mapping = pa.table({"raw_id": raw_ids, "pseudonym": request.pseudonymise(raw_ids)})
        self.con.register("ebbtide_pseudonyms", mapping)
        try:
            self.con.execute(
                """UPDATE ebbtide_stage SET user_id = p.pseudonym FROM ebbtide_pseudonyms p
                WHERE ebbtide_stage.user_id = p.raw_id"""
            )
        finally:
            self.con.unregister("ebbtide_pseudonyms")

    def _extend_dictionaries(self) -> tuple[int, int, int]:
        """Give new ids the next dense integers, in id order so loads are reproducible."""
        added = []
        for table, id_col, idx_col in (
            ("users", "user_id", "user_idx"),
            ("items", "item_id", "item_idx"),
        ):
            added.append(
                self.con.execute(
                    f"""INSERT INTO {table}
                SELECT (SELECT coalesce(max({idx_col}) + 1, 0) FROM {table})
                       + row_number() OVER (ORDER BY {id_col}) - 1, {id_col}
                FROM (SELECT DISTINCT {id_col} FROM ebbtide_stage
                      WHERE reason IS NULL AND {id_col} IS NOT NULL
                      EXCEPT SELECT {id_col} FROM {table})"""
                ).fetchone()[0]
            )
        added.append(
            self.con.execute(
                """INSERT INTO categories
            SELECT (SELECT coalesce(max(category_idx) + 1, 0) FROM categories)
                   + row_number() OVER (ORDER BY category_id) - 1, category_id, category_name
            FROM (SELECT category_id, max(category_name) AS category_name FROM ebbtide_stage
                  WHERE reason IS NULL AND category_id IS NOT NULL GROUP BY category_id) s
            WHERE category_id NOT IN (SELECT category_id FROM categories)"""
            ).fetchone()[0]
        )
        return added[0], added[1], added[2]

    def _insert_events(self, request: LoadRequest, ingest_id: int) -> _InsertCounts:
        """Insert the valid staged rows that are not already stored, and count them."""
        occurrence = (
            "(row_number() OVER (PARTITION BY s.user_id, s.item_id, s.category_id, s.behavior,"
            " s.ts, s.price, s.quantity, s.brand, s.session_id, s.query, s.value, s.placement)"
            " - 1)::INTEGER"
            if request.keep_repeats
            else "0"
        )
        # Columns the source leaves NULL on every row cannot tell two rows apart.
        varying = [
            column
            for field, column in _FIELD_COLUMNS.items()
            if not request.present_fields or field in request.present_fields
        ]
        if request.keep_repeats:
            varying.append("occurrence")
        con = self.con
        buy = Behavior.BUY.code
        valid, valid_buys = con.execute(
            "SELECT count(*), count(*) FILTER (behavior = ?) FROM ebbtide_stage"
            " WHERE reason IS NULL",
            [buy],
        ).fetchone()
        # DISTINCT drops exact copies (over the columns this source fills; the rest are
        # NULL on every row) into ebbtide_distinct, so copies within the file can be
        # counted; NOT EXISTS drops rows already stored, comparing
        # every identity column (NULLs equal) within the file's time span, which DuckDB's
        # min/max zone maps narrow to the few row groups of that period.
        staged = {
            "user_idx": "u.user_idx",
            "item_idx": "i.item_idx",
            "category_idx": "c.category_idx",
            "occurrence": f"{occurrence}",
        }
        inner = ", ".join(f"{staged.get(c, 's.' + c)} AS {c}" for c in varying)
        columns = _IDENTITY.split(", ")
        row = ", ".join(c if c in varying else f"{_ABSENT[c]} AS {c}" for c in columns)
        same = " AND ".join(
            f"e.{c} = x.{c}" if c in _NOT_NULL else f"e.{c} IS NOT DISTINCT FROM x.{c}"
            for c in columns
        )
        first, last = con.execute(
            "SELECT min(ts), max(ts) FROM ebbtide_stage WHERE reason IS NULL"
        ).fetchone()
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE ebbtide_distinct AS
            SELECT {row} FROM (
                SELECT DISTINCT {inner}
                FROM ebbtide_stage s
                JOIN users u ON u.user_id = s.user_id
                LEFT JOIN items i ON i.item_id = s.item_id
                LEFT JOIN categories c ON c.category_id = s.category_id
                WHERE s.reason IS NULL)"""
        )
        distinct, distinct_buys = con.execute(
            "SELECT count(*), count(*) FILTER (behavior = ?) FROM ebbtide_distinct", [buy]
        ).fetchone()
        loaded = con.execute(
            f"""INSERT INTO events ({_IDENTITY}, ingest_id)
            SELECT *, {ingest_id} FROM ebbtide_distinct x
            WHERE NOT EXISTS (
                SELECT 1 FROM events e WHERE e.ts BETWEEN $first AND $last AND {same})""",
            {"first": first, "last": last},
        ).fetchone()[0]
        return _InsertCounts(valid, valid_buys, distinct, distinct_buys, loaded)

    def _drop_temp(self, request: LoadRequest) -> None:
        for table in (
            "ebbtide_stage",
            "ebbtide_rejected",
            "ebbtide_distinct",
            *request.temp_tables,
        ):
            self.con.execute(f"DROP TABLE IF EXISTS {table}")

    # -- reading ------------------------------------------------------------------
    def _reader(self) -> duckdb.DuckDBPyConnection:
        """A cursor for relation-style reads, unaffected by results pending on `con`."""
        cursor = self.con.cursor()
        cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    def event_counts(
        self, per: Period | str = Period.DAY, tz: str = "UTC"
    ) -> list[tuple[str, int]]:
        """Events per day, week (from Monday) or month of local time in `tz`, in time order.

        Each period is labelled by its first day (``2024-01-01``), a month by year-month
        (``2024-01``); periods without events are left out.

        Raises
        ------
        ConfigError
            When `per` is not day, week or month, or `tz` is not a time zone DuckDB knows.
        """
        period = _period(per)
        check_time_zone(tz, self.con)
        rows = self.con.execute(
            """SELECT strftime(date_trunc($period, timezone($tz, ts)), $label) AS p, count(*)
            FROM events GROUP BY p ORDER BY p""",
            {"period": period.value, "tz": tz, "label": _PERIOD_LABEL[period]},
        ).fetchall()
        return [(label, int(n)) for label, n in rows]

    def stats(self, tz: str = "UTC", per: Period | str | None = None) -> StoreStats:
        """Counts, time span, events per user (quantiles) and per period (in time zone `tz`).

        Parameters
        ----------
        tz : str
            IANA time zone in which days, weeks and months begin.
        per : {"day", "week", "month"}, optional
            Period of the time table; default: the finest that keeps it short
            (`period_for`), so a year-long log gives 52 weeks rather than 365 days.

        Raises
        ------
        ConfigError
            When `tz` is not a time zone DuckDB knows, or `per` is not a period.
        """
        con = self.con
        check_time_zone(tz, con)
        asked = None if per is None else _period(per)
        users, items, categories = (
            con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("users", "items", "categories")
        )
        by_code = dict(con.execute("SELECT behavior, count(*) FROM events GROUP BY 1").fetchall())
        # The four item behaviours always (0 says something), the others where present.
        by_behavior = {
            b.value: int(by_code.get(b.code, 0))
            for b in BEHAVIORS
            if b in ITEM_BEHAVIORS or b.code in by_code
        }
        first, last = con.execute("SELECT min(ts), max(ts) FROM events").fetchone()
        per_user = con.execute(
            """SELECT min(n), quantile_cont(n, 0.25), median(n), quantile_cont(n, 0.75),
                quantile_cont(n, 0.9), max(n), avg(n)
            FROM (SELECT count(*) AS n FROM events GROUP BY user_idx)"""
        ).fetchone()
        labels = ("min", "p25", "median", "p75", "p90", "max", "mean")
        days, weeks = con.execute(
            """SELECT count(DISTINCT local::DATE), count(DISTINCT date_trunc('week', local))
            FROM (SELECT timezone(?, ts) AS local FROM events)""",
            [tz],
        ).fetchone()
        period = asked or period_for(days, weeks)
        quarantined = dict(
            con.execute(
                "SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY reason"
            ).fetchall()
        )
        ingests = con.execute("SELECT count(*) FROM ingests").fetchone()[0]
        return StoreStats(
            users=users,
            items=items,
            categories=categories,
            events=sum(by_behavior.values()),
            events_by_behavior=by_behavior,
            first_event=first,
            last_event=last,
            events_per_user={
                k: float(v) for k, v in zip(labels, per_user, strict=True) if v is not None
            },
            events_per_period=self.event_counts(period, tz),
            quarantined=quarantined,
            ingests=ingests,
            pseudonymised=self.pseudonymised,
            timezone=tz,
            period=period.value,
            period_chosen=asked is None,
            days_with_events=days,
        )

    def last_event(self) -> datetime | None:
        """Time of the latest stored event (None for an empty store)."""
        return self.con.execute("SELECT max(ts) FROM events").fetchone()[0]

    def events(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All events with external ids, as Arrow (for small stores and tests)."""
        wanted = ", ".join(columns) if columns else "*"
        feedback = (
            "e.query, e.value, e.placement"
            if self.has_feedback_columns
            else "NULL::VARCHAR AS query, NULL::DOUBLE AS value, NULL::VARCHAR AS placement"
        )
        return (
            self._reader()
            .sql(
                f"""SELECT {wanted} FROM (
                SELECT u.user_id, i.item_id, c.category_id, e.behavior, e.ts, e.price,
                    e.quantity, e.brand, e.session_id, {feedback}
                FROM events e JOIN users u USING (user_idx) LEFT JOIN items i USING (item_idx)
                LEFT JOIN categories c USING (category_idx)
                ORDER BY u.user_id, e.ts, i.item_id NULLS FIRST, e.behavior, query)"""
            )
            .to_arrow_table()
        )

    def quarantine(self) -> pa.Table:
        """Rejected rows with their reason, detail and raw text, in load order."""
        return (
            self._reader()
            .sql("SELECT * FROM quarantine ORDER BY ingest_id, line NULLS LAST, raw")
            .to_arrow_table()
        )

    # -- privacy ------------------------------------------------------------------
    def forget(self, user_id: str) -> ForgetReport:
        """Delete a user's events, quarantined rows and id entry, in one transaction.

        `user_id` is the id as stored: in a pseudonymised store, its pseudonym. Items and
        categories stay (they describe the catalogue, not the person).
        """
        con = self.con
        pattern = r"(^|[^0-9A-Za-z_-])" + re.escape(user_id) + r"($|[^0-9A-Za-z_-])"
        con.execute("BEGIN TRANSACTION")
        try:
            idx = con.execute("SELECT user_idx FROM users WHERE user_id = ?", [user_id]).fetchone()
            events = 0
            if idx is not None:
                events = con.execute("DELETE FROM events WHERE user_idx = ?", [idx[0]]).fetchone()[
                    0
                ]
                con.execute("DELETE FROM users WHERE user_idx = ?", [idx[0]])
            quarantined = con.execute(
                "DELETE FROM quarantine WHERE user_id = ?"
                " OR (user_id IS NULL AND raw IS NOT NULL AND regexp_matches(raw, ?))",
                [user_id, pattern],
            ).fetchone()[0]
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("CHECKPOINT").fetchall()
        return ForgetReport(user_id, int(events), int(quarantined), idx is not None)

    def compact(self) -> int:
        """Copy the store into a fresh file and put it in place of this one; returns bytes.

        Why: DuckDB deletes by marking rows, and neither CHECKPOINT, VACUUM nor rewriting
        the tables clears the blocks they lived in: after `forget` the raw file still
        held the user's id three times (users and quarantine), readable with ``strings``.
        A fresh copy (``COPY FROM DATABASE``) holds only live rows. It costs a copy of the
        store (time, and its size in free disk space), which `ebbtide forget` pays by
        default and `ebbtide retain` on ``--compact``. Another process holding the store
        open keeps reading the old file until it reopens.
        """
        if self.path == ":memory:":
            return 0
        target = Path(self.path)
        fresh = target.with_name(target.name + ".compact")
        for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
            leftover.unlink(missing_ok=True)
        con = self.con
        con.execute("CHECKPOINT").fetchall()
        name = con.execute("SELECT current_database()").fetchone()[0]
        quoted = str(fresh).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS ebbtide_compact")
        try:
            con.execute(
                f'COPY FROM DATABASE "{name.replace(chr(34), chr(34) * 2)}" TO ebbtide_compact'
            )
            con.execute("CHECKPOINT ebbtide_compact").fetchall()
        finally:
            con.execute("DETACH ebbtide_compact")
        con.close()
        fresh.replace(target)
        target.with_name(target.name + ".wal").unlink(missing_ok=True)
        self.con = duckdb.connect(self.path, config=self._config)
        self.con.execute("SET TimeZone = 'UTC'")
        return target.stat().st_size

    # -- retention ----------------------------------------------------------------
    def retain(
        self, before: datetime, *, dry_run: bool = False, progress: Progress | None = None
    ) -> RetainReport:
        """Delete events with ``ts < before``, in one transaction, and what goes with them.

        What goes with them: quarantined rows whose load finished before `before` (a
        quarantined row has no trusted event time: its time may be the very thing that
        could not be read, so the time it was loaded stands for it), and the id entry of
        each user left with no event. Items and categories stay (they describe the
        catalogue, not people). `dry_run` counts without deleting. `progress` is told each
        step; if anything fails, nothing is deleted.
        """
        if before.tzinfo is None:
            raise ConfigError(
                f"retain(before={before.isoformat()}) needs a time zone: pass an aware datetime"
            )
        report = progress or (lambda stage: None)
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            report("deleting old events")
            events = con.execute("SELECT count(*) FROM events WHERE ts < ?", [before]).fetchone()[0]
            if not dry_run:
                con.execute("DELETE FROM events WHERE ts < ?", [before])
            report("deleting old quarantined rows")
            old_loads = "SELECT ingest_id FROM ingests WHERE coalesce(finished_at, started_at) < ?"
            quarantined = con.execute(
                f"SELECT count(*) FROM quarantine WHERE ingest_id IN ({old_loads})", [before]
            ).fetchone()[0]
            if not dry_run:
                con.execute(f"DELETE FROM quarantine WHERE ingest_id IN ({old_loads})", [before])
            report("removing users with no events left")
            keeps = "ts >= ?" if dry_run else "TRUE"
            left = (
                "SELECT count(*) FROM users WHERE user_idx NOT IN"
                f" (SELECT DISTINCT user_idx FROM events WHERE {keeps})"
            )
            users = con.execute(left, [before] if dry_run else []).fetchone()[0]
            if not dry_run:
                con.execute(
                    "DELETE FROM users WHERE user_idx NOT IN (SELECT DISTINCT user_idx FROM events)"
                )
            remaining, oldest = con.execute(
                f"SELECT count(*), min(ts) FROM events WHERE {'ts >= ?' if dry_run else 'TRUE'}",
                [before] if dry_run else [],
            ).fetchone()
            con.execute("ROLLBACK" if dry_run else "COMMIT")
        except BaseException as exc:
            con.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                raise StoreError(f"retain failed, nothing was deleted: {exc}") from exc
            raise
        if not dry_run:
            con.execute("CHECKPOINT").fetchall()
        return RetainReport(
            before, int(events), int(quarantined), int(users), int(remaining), oldest, dry_run
        )

    # -- saved models ---------------------------------------------------------------
    def record_model(self, path: str | Path, model: str) -> None:
        """Remember that a model learnt from this store was saved in `path` (absolute),
        so that `ebbtide forget` can reach it later."""
        self.con.execute(
            "INSERT OR REPLACE INTO saved_models VALUES (?, ?, now())",
            [str(Path(path).resolve()), model],
        )

    def saved_models(self) -> list[SavedModel]:
        """Model folders recorded by `record_model`, oldest first (empty for a store
        written before the table existed)."""
        try:
            rows = self.con.execute(
                "SELECT path, model, saved_at FROM saved_models ORDER BY saved_at, path"
            ).fetchall()
        except duckdb.CatalogException:
            return []
        return [SavedModel(path, model, at) for path, model, at in rows]

    def require_pseudonym(self, raw_user_id: str, pseudonymise: Callable[[str], str] | None) -> str:
        """The id under which `raw_user_id` is stored, refusing to guess in pseudonymised stores."""
        if not self.pseudonymised:
            return raw_user_id
        if pseudonymise is None:
            raise PrivacyError(
                f"{self.path} holds pseudonymised ids: pass the key (EBBTIDE_PSEUDONYM_KEY or"
                " --key-file) so the raw id can be matched, or --pseudonym with the stored id"
            )
        return pseudonymise(raw_user_id)


def _period(per: Period | str) -> Period:
    try:
        return Period(per)
    except ValueError:
        allowed = ", ".join(p.value for p in Period)
        raise ConfigError(f"unknown period {per!r}; use one of {allowed}") from None


def _elapsed(started: datetime) -> float:
    return (datetime.now(UTC) - started).total_seconds()
