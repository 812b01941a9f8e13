"""Read behaviour logs of any supported format into an `EventStore`, losing nothing.

Every row read ends up loaded, recognised as a duplicate, or quarantined with a reason,
and the returned `IngestSummary` reconciles the three. A file that is not in the stated
format is refused before anything is written.

Examples
--------
>>> from ebbtide.store import EventStore
>>> from ebbtide.datasets import taobao_sample_path
>>> with EventStore(":memory:") as store:
...     summary = ingest_file(store, taobao_sample_path(), "taobao")
>>> summary.loaded
84475
"""

from __future__ import annotations

import json
import tempfile
import uuid
import warnings
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import duckdb

from ebbtide.errors import ConfigError, DataQualityWarning, InputFormatError, StoreError
from ebbtide.ingest.formats import (
    NAMED_FORMATS,
    EventFormat,
    FormatName,
    check_time_format,
    parse_behavior_map,
)
from ebbtide.ingest.pseudonymise import Pseudonymiser
from ebbtide.ingest.reading import (
    Source,
    build_reader,
    inspect_source,
    normalise_line_endings,
    parquet_columns,
    resolve_format,
)
from ebbtide.ingest.validation import REASONS, ValidationRules, rejects_sql, staging_sql
from ebbtide.schema import DEFAULT_RATING_RANGE, Behavior
from ebbtide.sql import bind
from ebbtide.store import EventStore, IngestSummary, LoadRequest, Progress

__all__ = [
    "REASONS",
    "ColumnMapping",
    "EventFormat",
    "FormatName",
    "IngestSummary",
    "Pseudonymiser",
    "ValidationRules",
    "ingest_file",
]

#: Share of bad rows among a file's first rows above which it is "not this format".
WRONG_FORMAT_SHARE = 0.5
_FORMAT_REASONS_IGNORED = {"excluded_behavior"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ColumnMapping:
    """How the columns of a shop's own export map onto the canonical event.

    Parameters
    ----------
    user_col, item_col, time_col : str
        Required source columns.
    category_col, behavior_col, price_col, quantity_col, brand_col, session_col : str, optional
        Optional source columns.
    order_col : str, optional
        The order id column of an order log; another name for `session_col` (give one of
        the two). It keeps apart lines of different orders that share user, item and
        second, which otherwise count as one event and the rest as duplicates.
    behavior : str, optional
        Fixed behaviour for files without a behaviour column (e.g. ``"buy"`` for orders).
    behavior_map : str
        Extra words, ``"pv=view,addtocart=cart"``; canonical words always map to themselves.
    time_format : str
        ``epoch_s``, ``epoch_ms``, ``iso`` (no offset = UTC) or a strftime pattern.
    input_type : {"csv", "parquet", "jsonl"}, optional
        Default: from the file name (``.parquet``, ``.jsonl``/``.ndjson``, else CSV).
    delimiter, quote : str
        CSV field separator and quote character (``""``: fields are never quoted).
    keep_repeats : bool
        Keep identical rows of one file as separate events (coarse time stamps).
    query_col, value_col, placement_col : str, optional
        A search's words, a rating's value, and where a click or impression happened (a
        slot or campaign id, so what was shown can be joined to what followed).
    rating_range : (float, float)
        Inclusive range of ratings; a `rate` row outside it is quarantined.
    """

    user_col: str
    item_col: str
    time_col: str
    category_col: str | None = None
    behavior_col: str | None = None
    price_col: str | None = None
    quantity_col: str | None = None
    brand_col: str | None = None
    session_col: str | None = None
    order_col: str | None = None
    behavior: str | None = None
    behavior_map: str = ""
    time_format: str = "iso"
    input_type: Literal["csv", "parquet", "jsonl"] | None = None
    delimiter: str = ","
    quote: str = '"'
    keep_repeats: bool = False
    query_col: str | None = None
    value_col: str | None = None
    placement_col: str | None = None
    rating_range: tuple[float, float] = DEFAULT_RATING_RANGE

    def __post_init__(self) -> None:
        if (self.behavior_col is None) == (self.behavior is None):
            raise ConfigError(
                "give exactly one of --behavior-col (a column) or --behavior (one fixed"
                " behaviour for every row, e.g. 'buy')"
            )
        if self.session_col is not None and self.order_col is not None:
            raise ConfigError(
                f"give --order-col ({self.order_col!r}) or --session-col"
                f" ({self.session_col!r}), not both: both fill the session id"
            )
        check_time_format(self.time_format)
        if len(self.delimiter) != 1:
            raise ConfigError(f"--delimiter must be one character, not {self.delimiter!r}")
        if len(self.quote) > 1:
            raise ConfigError(f"--quote must be one character or empty, not {self.quote!r}")

    def to_format(self, path: Path) -> EventFormat:
        """The `EventFormat` this mapping describes for `path`."""
        behavior_map = parse_behavior_map(self.behavior_map)
        constants = {}
        if self.behavior is not None:
            word = self.behavior.strip().lower()
            if word not in behavior_map:
                raise ConfigError(
                    f"--behavior {self.behavior!r} is not a behaviour: use one of"
                    f" {', '.join(b.value for b in Behavior)}"
                )
            constants["behavior"] = word
        named = {
            "user_id": self.user_col,
            "item_id": self.item_col,
            "ts": self.time_col,
            "category_id": self.category_col,
            "behavior": self.behavior_col,
            "price": self.price_col,
            "quantity": self.quantity_col,
            "brand": self.brand_col,
            "session_id": self.session_col or self.order_col,
            "query": self.query_col,
            "value": self.value_col,
            "placement": self.placement_col,
        }
        return EventFormat(
            name="generic",
            layout=self.input_type or _layout_from_name(path),
            columns=None,
            header=True,
            fields={k: v for k, v in named.items() if v is not None},
            constants=constants,
            behavior_map=behavior_map,
            time_format=self.time_format,
            delimiter=self.delimiter,
            quote=self.quote,
            keep_repeats=self.keep_repeats,
            rating_range=self.rating_range,
        )


def _layout_from_name(path: Path) -> Literal["csv", "parquet", "jsonl"]:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    if last in (".parquet", ".pq"):
        return "parquet"
    if last in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "csv"


def resolve_event_format(
    fmt: FormatName | str | EventFormat, path: Path, mapping: ColumnMapping | None
) -> EventFormat:
    """Turn a format name (plus a mapping for ``generic``) into an `EventFormat`."""
    if isinstance(fmt, EventFormat):
        return fmt
    try:
        name = FormatName(fmt)
    except ValueError:
        allowed = ", ".join(f.value for f in FormatName)
        raise ConfigError(f"unknown format {fmt!r}; use one of {allowed}") from None
    if name is FormatName.GENERIC:
        if mapping is None:
            raise ConfigError(
                "the generic format needs a column mapping: --user-col, --item-col, --time-col"
                " and --behavior-col (or --behavior)"
            )
        return mapping.to_format(path)
    if mapping is not None:
        raise ConfigError(f"column options apply to --format generic, not {name.value}")
    return NAMED_FORMATS[name]


def ingest_file(
    store: EventStore,
    path: str | Path,
    fmt: FormatName | str | EventFormat = FormatName.TAOBAO,
    *,
    mapping: ColumnMapping | None = None,
    rules: ValidationRules | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> IngestSummary:
    """Load one file (plain or gzip) into `store`, in a single transaction.

    Parameters
    ----------
    store : EventStore
        Where the events go.
    path : str or Path
        The file; gzip is detected from its first bytes, not its name.
    fmt : FormatName, str or EventFormat
        ``taobao``, ``rees46``, ``retailrocket``, ``cdnow``, ``movielens`` or ``generic``.
    mapping : ColumnMapping, optional
        Required for ``generic``.
    rules : ValidationRules, optional
        Time range and id length limits.
    pseudonymiser : Pseudonymiser, optional
        Replace user ids by keyed pseudonyms before they are stored.
    progress : callable, optional
        Called with the name of each stage as it starts.
    now : datetime, optional
        The ingest instant (default: the clock), which bounds plausible times.

    Returns
    -------
    IngestSummary
        rows read = loaded + duplicates + quarantined, with counts per reason; `notes`
        (also issued as `DataQualityWarning`) when purchases were dropped as duplicates.

    Raises
    ------
    InputFormatError
        The file is empty, binary, or not in the stated format; nothing is written.
    """
    path = Path(path)
    rules = rules or ValidationRules()
    now = now or datetime.now(UTC)
    base = resolve_event_format(fmt, path, mapping)
    report = progress or (lambda stage: None)
    report("checking the file")
    source = inspect_source(path, base)
    columns = parquet_columns(store.con, path) if base.layout == "parquet" else ()
    event_format = resolve_format(base, source, columns)
    if event_format.layout != "parquet":
        _check_first_rows(event_format, source, rules, now)

    with tempfile.TemporaryDirectory(prefix="ebbtide-") as tmp:
        if source.mixed_line_endings:
            report("normalising line endings")
            source = normalise_line_endings(source, Path(tmp))
        request = _load_request(event_format, source, rules, now, pseudonymiser, origin=path)
        try:
            summary = store.load(request, progress)
        except StoreError as exc:
            if "state machine reached an invalid state" in str(exc.__cause__):
                raise InputFormatError(
                    f"{path}: DuckDB cannot split this file, most often because its lines end"
                    " in more than one way (LF and CRLF) past the first 64 KiB. Normalise it"
                    f" (e.g. `sed -i 's/\\r$//' {path.name}`) and ingest again. Nothing was stored."
                ) from None
            raise
    notes = _duplicate_notes(summary, event_format)
    for note in notes:
        warnings.warn(f"{path.name}: {note}", DataQualityWarning, stacklevel=2)
    return replace(summary, notes=notes) if notes else summary


def _duplicate_notes(summary: IngestSummary, fmt: EventFormat) -> tuple[str, ...]:
    """Say so when purchases were dropped as copies of another row of the same file.

    Views logged twice in one second are copies; purchases rarely are: an order log
    stamps every line of an order with the order's time, so two orders of one user with
    the same product in the same second look identical unless the order id is loaded.
    """
    n = summary.duplicate_buys_in_file
    if n == 0:
        return ()
    dropped = (
        "1 purchase row was dropped as a duplicate: it repeats"
        if n == 1
        else f"{n:,} purchase rows were dropped as duplicates: each repeats"
    )
    if "session_id" in fmt.fields:
        return (
            f"{dropped} another row of this file exactly, session/order id included (same"
            " user, item, second and order). If an order lists one product on several"
            " lines, ingest with --keep-repeats (ColumnMapping(keep_repeats=True)) to keep"
            " every line.",
        )
    if fmt.name == FormatName.GENERIC.value:
        return (
            f"{dropped} the user, item and second of another purchase row of this file."
            " Lines of different orders stamped with the same time look like that: map the"
            " order id column, e.g. --order-col order_id (or --session-col;"
            " ColumnMapping(order_col=...)), and ingest into a new store (the rows loaded"
            " now have no order id, so they would not match).",
        )
    return (
        f"{dropped} another purchase row of this file exactly (same user, item and"
        f" second); the {fmt.name} format has no order id to tell such rows apart, so"
        " they count as copies.",
    )


def _load_request(
    fmt: EventFormat,
    source: Source,
    rules: ValidationRules,
    now: datetime,
    pseudonymiser: Pseudonymiser | None,
    *,
    origin: Path,
) -> LoadRequest:
    """Describe the load of `source` (perhaps a normalised copy of `origin`) for the store."""
    tag = uuid.uuid4().hex[:12]
    reader = build_reader(fmt, source, tag)
    sql, params = staging_sql(reader, fmt, rules, now)
    temp_tables: tuple[str, ...] = ()
    rejects = None
    if reader.rejects_table is not None:
        rejects = rejects_sql(reader.rejects_table)
        temp_tables = (reader.rejects_table, f"{reader.rejects_table}_scan")
    return LoadRequest(
        source=str(origin),
        sha256=source.sha256,
        options=_options(fmt),
        staging_sql=sql,
        params=params,
        rejects_sql=rejects,
        temp_tables=temp_tables,
        keep_repeats=fmt.keep_repeats,
        present_fields=tuple(sorted({*fmt.fields, *fmt.constants})),
        fatal_reasons={"unterminated_quote": _UNTERMINATED_QUOTE},
        pseudonymise=pseudonymiser.many if pseudonymiser is not None else None,
        key_fingerprint=pseudonymiser.fingerprint if pseudonymiser is not None else None,
    )


_UNTERMINATED_QUOTE = (
    "a quote opened on this line is never closed, so the lines after it cannot be told"
    " apart. Fix that line, or, if fields are never quoted, ingest with --quote ''."
    " Nothing was stored."
)


def _options(fmt: EventFormat) -> dict[str, object]:
    """What, besides the bytes, decides how a file loads (part of its ingest identity)."""
    return json.loads(json.dumps(asdict(fmt), default=str))


def _check_first_rows(
    fmt: EventFormat, source: Source, rules: ValidationRules, now: datetime
) -> None:
    """Run the real reader on the file's first lines; refuse it if most of them are bad."""
    with tempfile.TemporaryDirectory(prefix="ebbtide-") as tmp:
        sample = Path(tmp) / "first_rows.txt"
        sample.write_text("\n".join(source.first_lines) + "\n", encoding="utf-8")
        reader = build_reader(fmt, replace(source, path=sample, compression="none"), "sample")
        sql, params = staging_sql(reader, fmt, rules, now)
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            try:
                con.execute(f"CREATE TEMP TABLE sample AS {sql}", bind(sql, params))
            except duckdb.Error as exc:
                raise InputFormatError(
                    f"{source.path}: not a {fmt.name} file with the columns"
                    f" {fmt.expected_columns}; its first lines cannot be read"
                    f" ({str(exc).splitlines()[0]}). Line 1: {source.first_line[:200]!r}"
                ) from None
            bad = con.execute(
                "SELECT reason, detail, raw FROM sample WHERE reason IS NOT NULL ORDER BY rowid"
            ).fetchall()
            total = con.execute("SELECT count(*) FROM sample").fetchone()[0]
            if reader.rejects_table is not None:
                rejects = rejects_sql(reader.rejects_table)
                rejected = con.execute(
                    f"SELECT reason, detail, raw FROM ({rejects}) ORDER BY line"
                ).fetchall()
                bad = rejected + bad
                total += len(rejected)
    if total == 0:
        raise InputFormatError(
            f"{source.path}: the file has no data rows, only {source.first_line[:200]!r};"
            f" a {fmt.name} file has the columns {fmt.expected_columns}"
        )
    counted = [row for row in bad if row[0] not in _FORMAT_REASONS_IGNORED]
    if len(counted) <= WRONG_FORMAT_SHARE * total:
        return
    reason, detail, raw = counted[0]
    shown = (raw or source.first_line)[:200]
    what = REASONS.get(reason, reason) + (f" ({detail})" if detail else "")
    raise InputFormatError(
        f"{source.path}: not a {fmt.name} file: {len(counted)} of the first {total} rows are"
        f" bad; expected the columns {fmt.expected_columns}. First offending line:"
        f" {shown!r}: {what}. Check --format (and the column options for generic)."
    )
