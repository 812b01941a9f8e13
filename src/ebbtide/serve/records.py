"""Posted events, checked by the rules of `ingest`, in plain Python.

`ingest` types and checks records in SQL (`ebbtide.ingest.validation.staging_sql`). A
live request of a hundred events cannot afford a DuckDB query, so this module writes the
same rules again, row by row: the same reasons from `REASONS`, in the same order, with
the same ``detail`` text, and for a valid row the same stored values. A posted body is
read as a JSON Lines file of the ``generic`` format would be, keyed by the canonical names
(``user_id``, ``item_id``, ``category_id``, ``category_name``, ``behavior``, ``ts``,
``price``, ``quantity``, ``brand``, ``session_id``); tests hold the two in agreement.

Where DuckDB's casts are baroque (times with zone names such as ``Europe/Berlin`` or
``PST``, numbers such as ``1_000`` or ``nan``) the Python rules do not imitate them: the
few strings outside the plain forms are handed, all at once, to DuckDB's own cast, so the
answer is the ingest's by construction. Typical rows never take that path.

Differences from the JSON Lines ingest, on purpose:

- ``ts`` may also be a JSON number: seconds since the epoch (the ingest's ``iso``
  format would call a number ``bad_time``).
- ``user_id`` and ``item_id`` must be a JSON string or number; a boolean, object or
  array there is `missing_user_id` / `missing_item_id` with a detail saying why (the
  ingest would store the JSON text, ``true`` or ``{"id":1}``, as the id).
- The body is strict JSON (RFC 8259): ``NaN``, ``Infinity``, trailing commas and numbers
  beyond the range of a double make a line `malformed_json` (DuckDB reads them). Of a
  key given twice, the last value counts (DuckDB: the first). Integers beyond 64 bits
  are read as doubles, so such an id reads ``18446744073709551616.0``, not the digits.
- A body that is not UTF-8 is refused whole (`BodyError`); the ingest would quarantine
  the lines concerned as `bad_encoding`.

Otherwise a value is read as the ingest reads it: a number as DuckDB's JSON reader
writes it (``1e5`` is ``100000.0``), ``true`` as ``true``, an object or array (in
``category_id``, ``brand``, ``session_id``, ``category_name``) as its compact JSON text;
``null`` and a missing key alike are absent.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from math import floor, isfinite
from typing import Any

import duckdb
import orjson

from ebbtide.errors import InputFormatError
from ebbtide.ingest.validation import REASONS, ValidationRules
from ebbtide.schema import ITEM_BEHAVIORS

__all__ = [
    "RAW_LIMIT",
    "REASONS",
    "BodyError",
    "LiveEvent",
    "RawRow",
    "RowCheck",
    "parse_body",
    "validate_rows",
]

#: Characters of a row's raw text kept for quarantine.
RAW_LIMIT = 1000

_NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
    }
)
_SEND_INSTEAD = (
    "send a JSON array of event objects (Content-Type: application/json) or one event"
    " object per line (Content-Type: application/x-ndjson)"
)


class BodyError(InputFormatError):
    """A request body that cannot be read as events at all (not one bad row: the whole)."""


@dataclass(slots=True)
class RawRow:
    """One record of a posted body, before any check.

    ``line`` is the 1-based line of the body (NDJSON) or position in the array; ``obj``
    the parsed object, or None when the record is not a JSON object (``error`` says
    why); ``text`` the record's text when the body had it (an NDJSON line). Not
    frozen, as `RowCheck`: that would cost a microsecond a row.
    """

    line: int
    obj: dict[str, Any] | None
    text: str | None = None
    error: str | None = None
    value: Any = None  # a non-object array element, kept for `raw`

    @property
    def raw(self) -> str:
        """The record's text, at most `RAW_LIMIT` characters, for quarantine."""
        if self.text is not None:
            return self.text[:RAW_LIMIT]
        value = self.obj if self.obj is not None else self.value
        return orjson.dumps(value).decode()[:RAW_LIMIT]


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_body(body: bytes, content_type: str | None) -> list[RawRow]:
    """Split a request body into records: a JSON array of objects, or NDJSON.

    With an NDJSON content type (``application/x-ndjson``, ``application/jsonl`` …)
    the body is one object per line, blank lines skipped, and a bad line is one
    `malformed_json` row. Otherwise (``application/json``, another type or none) the
    first non-blank character decides: ``[`` is an array, whose elements are the rows;
    ``{`` is one object (perhaps pretty-printed) or, failing that, NDJSON.

    Raises
    ------
    BodyError
        The body is empty, not UTF-8, a broken array, or a JSON value that is neither an
        array nor an object.

    Examples
    --------
    >>> [r.line for r in parse_body(b'{"a": 1}\\n\\n{"a": 2}\\n', None)]
    [1, 3]
    >>> parse_body(b'[{"a": 1}, 2]', "application/json")[1].obj is None
    True
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(
            f"the body is not UTF-8 text (byte {exc.start} is 0x{body[exc.start]:02x});"
            f" encode it as UTF-8 and {_SEND_INSTEAD}"
        ) from None
    text = text.removeprefix("\ufeff")
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        raise BodyError(f"the body is empty; {_SEND_INSTEAD}")
    if _media_type(content_type) in _NDJSON_TYPES:
        return _parse_ndjson(text)
    first = stripped[0]
    if first == "[":
        return _parse_array(text)
    if first == "{":
        try:  # one object, perhaps pretty-printed over several lines
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return _parse_ndjson(text)
        return [RawRow(1, value, text[:RAW_LIMIT])]
    raise BodyError(
        f"the body is a JSON {_json_kind_of_text(stripped)}, not events; {_SEND_INSTEAD}"
    )


def _json_kind_of_text(text: str) -> str:
    try:
        return _json_kind(orjson.loads(text))
    except orjson.JSONDecodeError:
        return "text that does not parse"


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _parse_array(text: str) -> list[RawRow]:
    try:
        values = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BodyError(
            f"the body is not a valid JSON array ({exc}); {_SEND_INSTEAD}. In NDJSON one bad"
            " line is rejected alone."
        ) from None
    rows = []
    for i, value in enumerate(values, 1):
        if type(value) is dict:
            rows.append(RawRow(i, value))
        else:
            error = f"element {i} is a JSON {_json_kind(value)}, not an object"
            rows.append(RawRow(i, None, error=error, value=value))
    return rows


def _parse_ndjson(text: str) -> list[RawRow]:
    rows = []
    loads = orjson.loads
    for i, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        try:
            value = loads(line)
        except orjson.JSONDecodeError as exc:
            # The ingest skips a line that is blank once DuckDB's trim (spaces) is done.
            if not line.strip(_SQL_SPACES):
                continue
            error = f"line {i}, column {exc.colno}: {exc.msg}"
            rows.append(RawRow(i, None, line[:RAW_LIMIT], error))
            continue
        if type(value) is dict:
            rows.append(RawRow(i, value, line[:RAW_LIMIT]))
        else:
            error = f"line {i} is a JSON {_json_kind(value)}, not an object"
            rows.append(RawRow(i, None, line[:RAW_LIMIT], error))
    return rows


# ---------------------------------------------------------------------------------------
# The canonical event


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """A checked event, typed as the store keeps it.

    ``behavior`` is the code of `Behavior` (0 = view … 3 = buy); ``ts`` the instant in
    seconds since the epoch (UTC) exactly as DuckDB's ``epoch()`` gives it for the stored
    TIMESTAMPTZ, so ``round(ts * 1e6)`` is the stored microsecond.
    """

    user_id: str
    item_id: str
    category_id: str | None
    category_name: str | None
    behavior: int
    ts: float
    price: float | None
    quantity: int | None
    brand: str | None
    session_id: str | None

    def identity(self) -> bytes:
        """16 bytes that two events share exactly when the store counts them as one.

        Every field but ``category_name`` (the store's identity columns, with
        ``occurrence`` 0); a price of -0.0 is 0.0, as DuckDB compares them. Two checked
        events have the same ts exactly when the store holds the same microsecond.
        """
        price = self.price + 0.0 if self.price is not None else None
        key = (
            self.user_id,
            self.item_id,
            self.category_id,
            self.behavior,
            self.ts + 0.0,
            price,
            self.quantity,
            self.brand,
            self.session_id,
            0,
        )
        return blake2b(orjson.dumps(key), digest_size=16).digest()

    def to_json(self) -> bytes:
        """One line of an append log (no newline); `from_json` gives the event back."""
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> LiveEvent:
        return cls(**orjson.loads(data))


@dataclass(slots=True)
class _EventUnderConstruction:
    """LiveEvent's fields, not frozen: building a frozen dataclass sets each field through
    ``object.__setattr__``, three times the cost. `_live_event` fills one of these and
    then makes it a LiveEvent (same slots, so Python allows the ``__class__`` change)."""

    user_id: str
    item_id: str
    category_id: str | None
    category_name: str | None
    behavior: int
    ts: float
    price: float | None
    quantity: int | None
    brand: str | None
    session_id: str | None


def _live_event(*fields: Any) -> LiveEvent:
    event = _EventUnderConstruction(*fields)
    event.__class__ = LiveEvent  # type: ignore[assignment]
    return event  # type: ignore[return-value]


@dataclass(slots=True)
class RowCheck:
    """The verdict on one row: an `event`, or a `reason` from `REASONS` and a `detail`.

    Not frozen: a frozen dataclass costs a microsecond more to build, per row.
    """

    line: int
    event: LiveEvent | None
    reason: str | None
    detail: str | None
    row: RawRow

    @property
    def ok(self) -> bool:
        return self.reason is None


# ---------------------------------------------------------------------------------------
# DuckDB's text rules, in Python

#: What DuckDB's trim() removes: the Unicode space separators (not tabs or line breaks).
_SQL_SPACES = (
    " \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u202f\u205f\u3000"
)


def _trimmed(text: str) -> str:
    """The ingest's `_trimmed`: trim only when an ASCII blank is at either end."""
    if text.startswith(" ") or text.endswith(" "):
        return text.strip(_SQL_SPACES)
    return text


#: The service takes item behaviours only (its live state has no query map or funnel yet).
_BEHAVIOR_CODES = {b.value: b.code for b in ITEM_BEHAVIORS}


def _behavior_code(word: str) -> int | None:
    """``lower(trim(word))`` looked up among the canonical words, as the SQL does."""
    code = _BEHAVIOR_CODES.get(word)
    if code is not None:
        return code
    word = _trimmed(word)
    if not word.isascii():
        word = word.replace("\u0130", "i")  # DuckDB lowers İ to i, Python to i + dot
    return _BEHAVIOR_CODES.get(word.lower())


def _float_text(value: float) -> str:
    """A double as DuckDB's JSON reader (yyjson) writes it: ``1e5`` → ``100000.0``.

    Shortest round-trip digits; plain notation while the decimal point falls between
    6 places left of the first digit and 21 right of it, else ``d.ddde±x``.
    """
    if value != value or value in (float("inf"), float("-inf")):
        return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(value)]
    text = repr(value)
    sign = ""
    if text[0] == "-":
        sign, text = "-", text[1:]
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    stripped = digits.lstrip("0")
    if not stripped:
        return sign + "0.0"
    point = len(whole) + (int(exponent) if exponent else 0) - (len(digits) - len(stripped))
    digits = stripped.rstrip("0")
    if -6 < point <= 21:
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}"
        if point >= len(digits):
            return f"{sign}{digits}{'0' * (point - len(digits))}.0"
        return f"{sign}{digits[:point]}.{digits[point:]}"
    rest = "." + digits[1:] if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{rest}e{point - 1}"


_LOWER_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-f]{4})")


def _container_text(value: object) -> str:
    """An object or array as DuckDB's json_extract_string gives it (compact yyjson)."""
    if isinstance(value, dict):
        inner = ",".join(f"{_string_json(k)}:{_container_text(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ",".join(_container_text(v) for v in value) + "]"
    if isinstance(value, str):
        return _string_json(value)
    if type(value) is float:
        return _float_text(value)
    return orjson.dumps(value).decode()  # int, bool, null


def _string_json(text: str) -> str:
    return _LOWER_ESCAPE.sub(lambda m: m[1] + "\\u" + m[2].upper(), orjson.dumps(text).decode())


def _text(value: object) -> str | None:
    """A JSON value as the ingest's ``json_extract_string`` reads it (None for null)."""
    kind = type(value)
    if kind is str:
        return value
    if value is None:
        return None
    if kind is int:
        return str(value)
    if kind is float:
        return _float_text(value)
    if kind is bool:
        return "true" if value else "false"
    return _container_text(value)


_WS = "[ \t\n\r\x0b\x0c]*"
#: Numbers TRY_CAST(... AS DOUBLE) reads as Python's float() does; anything else: DuckDB.
_PLAIN_NUMBER = re.compile(
    rf"{_WS}[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?{_WS}", re.ASCII
)
#: The ISO forms whose TRY_CAST(... AS TIMESTAMPTZ) Python's fromisoformat matches (tests
#: hold them to DuckDB); anything else, or what fromisoformat refuses, goes to DuckDB.
_PLAIN_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?",
    re.ASCII,
)
_UNRESOLVED = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)  # a time without an offset is UTC
_MICROSECOND = timedelta(microseconds=1)


#: Plain times already read (text -> microseconds): live events come with the same few
#: seconds over and over. Emptied when full.
_TIME_CACHE: dict[str, int] = {}
_TIME_CACHE_SIZE = 1 << 14


def _plain_time_us(text: str) -> int | object:
    """Microseconds since the epoch of a plain ISO time; `_UNRESOLVED` for other text."""
    micros = _TIME_CACHE.get(text)
    if micros is not None:
        return micros
    if _PLAIN_TIME.fullmatch(text) is None:
        return _UNRESOLVED
    try:
        parsed = datetime.fromisoformat(text)  # checks the calendar and the clock
    except ValueError:  # 24:00, a 60th second, 29 February 2017, year 0: DuckDB decides
        return _UNRESOLVED
    micros = (parsed - (_EPOCH if parsed.tzinfo is not None else _NAIVE_EPOCH)) // _MICROSECOND
    if len(_TIME_CACHE) >= _TIME_CACHE_SIZE:
        _TIME_CACHE.clear()
    _TIME_CACHE[text] = micros
    return micros


def _epoch(micros: int) -> float:
    """``epoch()`` of a TIMESTAMPTZ as DuckDB computes it (ICU: milliseconds, then the
    rest), which is not always the double nearest ``micros / 1e6``."""
    millis, rest = divmod(micros, 1000)
    return millis / 1e3 + rest / 1e6


class _DuckCasts:
    """DuckDB's own casts, for the rare strings the plain rules leave open.

    One in-memory connection per thread (UTC, one worker thread); every open string of
    a batch goes in one query.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def _con(self) -> duckdb.DuckDBPyConnection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = duckdb.connect(config={"threads": 1})
            con.execute("SET TimeZone = 'UTC'")
            self._local.con = con
        return con

    def times(self, texts: Iterable[str]) -> dict[str, tuple[float | None, int | None]]:
        """text -> (epoch(TRY_CAST(text AS TIMESTAMPTZ)), its microseconds)."""
        sql = (
            "SELECT x, epoch(t), epoch_us(t) FROM"
            " (SELECT x, TRY_CAST(x AS TIMESTAMPTZ) AS t FROM unnest($1::VARCHAR[]) u(x))"
        )
        return {x: (epoch, us) for x, epoch, us in self._cast(sql, texts, (None, None))}

    def doubles(self, texts: Iterable[str]) -> dict[str, float | None]:
        """text -> TRY_CAST(text AS DOUBLE)."""
        sql = "SELECT x, TRY_CAST(x AS DOUBLE) FROM unnest($1::VARCHAR[]) u(x)"
        return dict(self._cast(sql, texts, (None,)))

    def _cast(self, sql: str, texts: Iterable[str], failed: tuple) -> list[tuple]:
        """Rows of `sql` over `texts`; a text DuckDB cannot take at all casts to NULL."""
        texts = list(texts)
        con = self._con()
        try:
            return con.execute(sql, [texts]).fetchall()
        except duckdb.Error:  # e.g. a lone surrogate, which UTF-8 cannot hold: one by one
            rows = []
            for text in texts:
                try:
                    rows += con.execute(sql, [[text]]).fetchall()
                except duckdb.Error:
                    rows.append((text, *failed))
            return rows


_DUCK = _DuckCasts()


class _Casts:
    """Text -> typed value by DuckDB's rules: the plain forms here, the rest from DuckDB.

    A first pass records the strings it cannot settle (`open_times`, `open_numbers`);
    `resolve` asks DuckDB for all of them at once before the rows are checked again.
    """

    __slots__ = ("numbers", "open_numbers", "open_times", "times")

    def __init__(self) -> None:
        self.times: dict[str, tuple[float | None, int | None]] = {}
        self.numbers: dict[str, float | None] = {}
        self.open_times: set[str] = set()
        self.open_numbers: set[str] = set()

    def time(self, text: str) -> tuple[float | None, int | None] | object:
        known = self.times.get(text, _UNRESOLVED)
        if known is _UNRESOLVED:
            self.open_times.add(text)
        return known

    def number(self, text: str) -> float | object | None:
        if _PLAIN_NUMBER.fullmatch(text):
            return float(text)
        known = self.numbers.get(text, _UNRESOLVED)
        if known is _UNRESOLVED:
            self.open_numbers.add(text)
        return known

    def resolve(self) -> None:
        if self.open_times:
            self.times.update(_DUCK.times(self.open_times))
            self.open_times.clear()
        if self.open_numbers:
            self.numbers.update(_DUCK.doubles(self.open_numbers))
            self.open_numbers.clear()


# ---------------------------------------------------------------------------------------
# The checks


def validate_rows(rows: Sequence[RawRow], rules: ValidationRules, now: datetime) -> list[RowCheck]:
    """Check every row by the ingest's rules: a `LiveEvent`, or a reason and a detail.

    The checks run in the order of the ingest's SQL, so a row with several faults gets
    the same reason; ``detail`` is the ingest's text (``time 2017-13-01``, ``id of 300
    bytes``) and, for the few reasons the ingest gives none, a sentence saying why.
    """
    earliest = rules.earliest.timestamp()
    latest = rules.resolved_latest(now).timestamp()
    limits = (earliest, latest, rules.max_id_length)
    casts = _Casts()
    results: list[RowCheck | None] = []
    deferred = []
    for i, row in enumerate(rows):
        check = _check(row, limits, casts)
        if check is None:
            deferred.append(i)
        results.append(check)
    while deferred:  # once, in practice: a deferred row queues all its open strings
        casts.resolve()
        waiting = []
        for i in deferred:
            results[i] = check = _check(rows[i], limits, casts)
            if check is None:
                waiting.append(i)
        if len(waiting) == len(deferred):
            raise AssertionError("DuckDB's casts settled none of the open values")
        deferred = waiting
    return results


def _reject(row: RawRow, reason: str, detail: str | None) -> RowCheck:
    return RowCheck(row.line, None, reason, detail, row)


def _not_an_id(row: RawRow, field: str, value: object) -> RowCheck:
    reason = "missing_user_id" if field == "user_id" else "missing_item_id"
    kind = type(value)
    if kind is bool or kind is dict or kind is list:
        return _reject(
            row, reason, f"{field} is a JSON {_json_kind(value)}; send a string or a number"
        )
    return _reject(row, reason, None)


def _field(value: object) -> str | None:
    """The ingest's ``nullif(_trimmed(json_extract_string(...)), '')`` of any JSON value."""
    if value is None:
        return None
    text = _trimmed(value if type(value) is str else _text(value))
    return text or None


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _check(row: RawRow, limits: tuple[float, float, int], casts: _Casts) -> RowCheck | None:
    """One row's verdict, or None when it needs a cast DuckDB must answer first.

    The common case (a string without blanks at either end, a float, a plain time) is
    written out in line; every other value goes through the helpers that mirror SQL.
    """
    obj = row.obj
    if obj is None:
        return _reject(row, "malformed_json", row.error)
    get = obj.get

    v = get("user_id")
    kind = type(v)
    if kind is str and v and v[0] != " " and v[-1] != " ":
        user_id = v
    else:
        user_id = _field(v) if kind is str or kind is int or kind is float else None
        if user_id is None:
            return _not_an_id(row, "user_id", v)
    v = get("item_id")
    kind = type(v)
    if kind is str and v and v[0] != " " and v[-1] != " ":
        item_id = v
    else:
        item_id = _field(v) if kind is str or kind is int or kind is float else None
        if item_id is None:
            return _not_an_id(row, "item_id", v)
    v = get("category_id")
    category_id = v if type(v) is str and v and v[0] != " " and v[-1] != " " else _field(v)
    earliest, latest, max_id = limits
    longest = max(len(user_id), len(item_id), len(category_id) if category_id else 0)
    if longest * 4 > max_id:  # a character is at most 4 bytes of UTF-8
        longest = max(
            _utf8_len(user_id), _utf8_len(item_id), _utf8_len(category_id) if category_id else 0
        )
        if longest > max_id:
            return _reject(row, "id_too_long", f"id of {longest} bytes")

    v = get("behavior")
    behavior = _BEHAVIOR_CODES.get(v) if type(v) is str else None
    if behavior is None:
        word = _text(v)
        behavior = _behavior_code(word) if word is not None else None
        if behavior is None:
            return _reject(row, "unknown_behavior", f"behaviour {_shown(word)}")

    # Times: a string by TRY_CAST(... AS TIMESTAMPTZ); a number: epoch seconds.
    v = get("ts")
    kind = type(v)
    if kind is str:
        micros = _plain_time_us(v)
        if micros is _UNRESOLVED:
            known = casts.time(v)
            if known is _UNRESOLVED:
                _note_open_numbers(obj, casts)
                return None
            epoch, micros = known
        else:
            epoch = _epoch(micros)
    elif kind is int or kind is float:
        epoch = float(v)
        micros = None
    else:
        epoch = None
    if epoch is None or not isfinite(epoch):
        return _reject(row, "bad_time", f"time {_shown(_text(v))}")
    if epoch < earliest or epoch > latest:
        return _reject(row, "time_out_of_range", f"time {_text(v)}")
    if micros is None:  # an epoch number: the store keeps whole microseconds
        epoch = _epoch(round(epoch * 1_000_000))

    v = get("price")
    kind = type(v)
    if kind is float or kind is int:
        price = float(v)
        if price < 0:  # orjson reads no NaN or infinity
            return _reject(row, "negative_price", f"price {_text(v)}")
    elif v is None or (kind is str and not v.strip(_SQL_SPACES)):
        price = None  # blank: no price
    else:
        price = casts.number(v) if kind is str else None
        if price is _UNRESOLVED:
            _note_open_numbers(obj, casts)
            return None
        text = _text(v)
        if price is None or not isfinite(price):
            return _reject(row, "bad_price", f"price {text}")
        if price is not None and price < 0:
            return _reject(row, "negative_price", f"price {text}")

    v = get("quantity")
    kind = type(v)
    if kind is int and 0 <= v <= 1_000_000_000:
        quantity = v
    elif v is None or (kind is str and not v.strip(_SQL_SPACES)):
        quantity = None  # blank: no quantity
    else:
        value = casts.number(v) if kind is str else float(v) if kind in (int, float) else None
        if value is _UNRESOLVED:
            return None
        text = _text(v)
        if value is None or not isfinite(value) or value != floor(value) or not 0 <= value <= 1e9:
            return _reject(row, "bad_quantity", f"quantity {text}")
        else:
            quantity = int(value)

    v = get("brand")
    brand = v if type(v) is str and v and v[0] != " " and v[-1] != " " else _field(v)
    v = get("session_id")
    session_id = v if type(v) is str and v and v[0] != " " and v[-1] != " " else _field(v)
    v = get("category_name")
    category_name = v if type(v) is str and v and v[0] != " " and v[-1] != " " else _field(v)
    event = _live_event(
        user_id,
        item_id,
        category_id,
        category_name,
        behavior,
        epoch,
        price,
        quantity,
        brand,
        session_id,
    )
    return RowCheck(row.line, event, None, None, row)


def _shown(text: str | None) -> str:
    return text if text is not None else "(empty)"


def _note_open_numbers(obj: dict[str, Any], casts: _Casts) -> None:
    """Queue the row's price and quantity text too, so one DuckDB query settles all."""
    for key in ("price", "quantity"):
        value = obj.get(key)
        if type(value) is str:
            casts.number(value)
