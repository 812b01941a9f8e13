"""Canonical events from a Parquet or CSV lake, every row used or counted.

A lake is a folder, a file or a glob of files holding the canonical columns (`user_id`,
`item_id`, `category_id`, `behavior`, `ts`; optional `price`, `quantity`, `brand`,
`session_id`), as the store keeps them: a store's events written out with
``pyarrow.parquet.write_table(store.events(), ...)`` is one. ``behavior`` is a canonical
word (view, cart, fav, buy) or its code (0-3, as a store's export writes it); ``ts`` a
timestamp, an ISO 8601 text (UTC unless it says otherwise) or epoch seconds.

Why the same rules as ``ebbtide ingest``: a model fitted on a lake must see the events a
store would have loaded from it. Each row is checked with the ingest's reason codes
(`ebbtide.ingest.validation.REASONS`) in the same order, exact copies are counted as
duplicates and dropped, and `LakeSummary` reconciles the counts: rows read = used + later
(at or after the instant asked) + duplicates + rejected.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ebbtide.errors import InputFormatError
from ebbtide.ingest.validation import REASONS, ValidationRules
from ebbtide.schema import ITEM_BEHAVIORS, REQUIRED_COLUMNS

#: Optional columns the lake reads: it holds item events (a search's words, a rating's value
#: and a placement are for `ebbtide ingest`; the columns are ignored here).
LAKE_OPTIONAL_COLUMNS = ("price", "quantity", "brand", "session_id")

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["LakeEvents", "LakeSummary", "micros_of", "read_lake"]

#: Spark's column for a CSV line it could not split into the header's fields.
_CORRUPT = "_corrupt_record"
#: Columns of the checked events, in this order.
EVENT_FIELDS = ("user_id", "item_id", "category_id", "behavior", "micros")


def micros_of(instant: datetime) -> int:
    """An aware instant as integer microseconds since the epoch (the lake's time unit)."""
    if instant.tzinfo is None:
        raise InputFormatError(f"{instant!r} has no time zone; pass an aware UTC datetime")
    delta = instant - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class LakeSummary:
    """What became of every row read: used, later, duplicate or rejected (by reason)."""

    source: str
    rows_read: int
    used: int
    later: int
    duplicates: int
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def balanced(self) -> bool:
        """Whether the counts reconcile: nothing read went unaccounted for."""
        parts = self.used + self.later + self.duplicates + self.rejected_total
        return self.rows_read == parts

    def rows(self) -> list[tuple[str, str]]:
        """(what, count) lines for a summary table."""
        out = [
            ("rows read", f"{self.rows_read:,}"),
            ("used (before the instant)", f"{self.used:,}"),
            ("at or after the instant", f"{self.later:,}"),
            ("exact duplicates", f"{self.duplicates:,}"),
        ]
        out += [(f"rejected: {reason}", f"{n:,}") for reason, n in sorted(self.rejected.items())]
        return out


@dataclass(frozen=True)
class LakeEvents:
    """A lake's rows, checked: `valid` (distinct events) and `checked` (every row, with its
    reason or NULL). Both are lazy Spark DataFrames; nothing is read until asked."""

    source: str
    checked: DataFrame
    valid: DataFrame

    def before(self, instant: datetime) -> DataFrame:
        """The distinct valid events strictly before `instant`."""
        from pyspark.sql import functions as F

        return self.valid.where(F.col("micros") < F.lit(micros_of(instant)))

    def last_micros(self) -> int | None:
        """Time of the latest valid event (µs since the epoch), None for an empty lake."""
        from pyspark.sql import functions as F

        return self.valid.agg(F.max("micros")).collect()[0][0]

    def rejected(self) -> DataFrame:
        """The rejected rows: reason, detail (the value that broke the rule) and raw text."""
        from pyspark.sql import functions as F

        return self.checked.where(F.col("reason").isNotNull()).select("reason", "detail", "raw")

    def summary(self, instant: datetime) -> LakeSummary:
        """Count what became of every row, for events used before `instant` (two passes)."""
        from pyspark.sql import functions as F

        by_reason = dict(
            (row[0], int(row[1])) for row in self.checked.groupBy("reason").count().collect()
        )
        valid_rows = by_reason.pop(None, 0)
        cut = micros_of(instant)
        distinct, later = self.valid.agg(
            F.count(F.lit(1)), F.count(F.when(F.col("micros") >= F.lit(cut), 1))
        ).collect()[0]
        return LakeSummary(
            source=self.source,
            rows_read=valid_rows + sum(by_reason.values()),
            used=int(distinct) - int(later),
            later=int(later),
            duplicates=valid_rows - int(distinct),
            rejected=by_reason,
        )


def read_lake(
    spark: SparkSession,
    paths: Sequence[str],
    *,
    rules: ValidationRules | None = None,
    now: datetime | None = None,
) -> LakeEvents:
    """Read and check the canonical events of `paths` (Parquet or CSV, by file name).

    Parameters
    ----------
    paths : sequence of str
        Files, folders or globs; local paths or any URL Spark reads (s3a://, hdfs://).
        A folder's format is that of its files; a remote folder is read as Parquet.
    rules : ValidationRules, optional
        Limits a valid event respects (the ingest's defaults).
    now : datetime, optional
        The instant ``rules.latest`` defaults from (default: the current time).

    Raises
    ------
    InputFormatError
        A path matches no file, mixes formats, or lacks a canonical column (the message
        names the expected columns and those found).
    """
    if not paths:
        raise InputFormatError("no lake path given: name Parquet or CSV files, folders or globs")
    rules = rules or ValidationRules()
    now = now or datetime.now(UTC)
    kinds = {_format_of(path) for path in paths}
    if len(kinds) > 1:
        raise InputFormatError(
            f"{', '.join(paths)} mix Parquet and CSV: read them as two lakes, or convert one"
        )
    kind = kinds.pop()
    source = ", ".join(paths)
    raw = _read_csv(spark, list(paths)) if kind == "csv" else _read_parquet(spark, list(paths))
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        found = ", ".join(c for c in raw.columns if c != _CORRUPT) or "(none)"
        raise InputFormatError(
            f"{source} lacks the canonical column(s) {', '.join(missing)}; expected"
            f" {', '.join(REQUIRED_COLUMNS)} (optional {', '.join(LAKE_OPTIONAL_COLUMNS)}),"
            f" found {found}"
        )
    checked = _checked(raw, rules, now)
    identity = [*EVENT_FIELDS, *(c for c in LAKE_OPTIONAL_COLUMNS if c in raw.columns)]
    valid = checked.where("reason IS NULL").select(*identity).dropDuplicates(identity)
    return LakeEvents(source=source, checked=checked, valid=valid.select(*EVENT_FIELDS))


# -- finding and reading the files ------------------------------------------------------
def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _suffix_kind(name: str) -> str | None:
    name = name.lower().rstrip("/")
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    return None


def _format_of(path: str) -> str:
    """ "csv" or "parquet", from the name (a local folder: from its files' names)."""
    matches = glob.glob(path.removeprefix("file://")) if _is_local(path) else [path]
    if not matches:
        raise InputFormatError(
            f"no file or folder at {path}: check the path (a glob must match at least one file)"
        )
    kind = _suffix_kind(path)
    if kind is not None:
        return kind
    if not _is_local(path):
        return "parquet"
    kinds = set()
    for match in matches:
        names = [match]
        if os.path.isdir(match):
            names = [n for _root, _dirs, files in os.walk(match) for n in files]
        kinds |= {_suffix_kind(n) for n in names if not os.path.basename(n).startswith(("_", "."))}
    kinds.discard(None)
    if len(kinds) != 1:
        raise InputFormatError(
            f"{path} holds {'no' if not kinds else 'both'} Parquet or CSV files;"
            " a lake is .parquet or .csv(.gz) files with the canonical columns"
        )
    return kinds.pop()


def _read_parquet(spark: SparkSession, paths: list[str]) -> DataFrame:
    return _reading(paths, lambda: spark.read.parquet(*paths))


def _read_csv(spark: SparkSession, paths: list[str]) -> DataFrame:
    """Every column as text, with Spark's raw line of each row it could not split."""
    from pyspark.sql.types import StringType, StructField, StructType

    header = _reading(paths, lambda: spark.read.option("header", True).csv(paths)).columns
    schema = StructType([StructField(c, StringType()) for c in [*header, _CORRUPT]])
    reader = (
        spark.read.schema(schema)
        .option("header", True)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", _CORRUPT)
    )
    return _reading(paths, lambda: reader.csv(paths))


def _reading(paths: list[str], read):
    from pyspark.errors import AnalysisException

    try:
        return read()
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" in str(exc) or "Path does not exist" in str(exc):
            raise InputFormatError(
                f"no file or folder at {', '.join(paths)}: check the path ({exc.getMessage()})"
            ) from None
        raise InputFormatError(f"cannot read {', '.join(paths)}: {exc.getMessage()}") from None


# -- the rules ------------------------------------------------------------------------------
def _text(raw: DataFrame, name: str) -> Column:
    """A column as trimmed text, NULL when absent or blank."""
    from pyspark.sql import functions as F

    if name not in raw.columns:
        return F.lit(None).cast("string")
    text = F.trim(F.col(name).cast("string"))
    return F.when(text != "", text)


def _micros(raw: DataFrame) -> Column:
    """``ts`` as µs since the epoch: timestamps as they are, text parsed as ISO 8601 in UTC
    (or its own offset), numbers as epoch seconds; NULL when it cannot be read."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import NumericType, TimestampNTZType, TimestampType

    kind = raw.schema["ts"].dataType
    if isinstance(kind, TimestampType | TimestampNTZType):
        return F.unix_micros(F.col("ts").cast("timestamp"))
    if isinstance(kind, NumericType):
        seconds = F.col("ts").cast("double")
        ok = ~F.isnan(seconds) & (F.abs(seconds) < F.lit(1e12))
        return F.when(ok, F.round(seconds * F.lit(1_000_000.0)).cast("long"))
    return F.unix_micros(F.try_to_timestamp(F.trim(F.col("ts").cast("string"))))


def _checked(raw: DataFrame, rules: ValidationRules, now: datetime) -> DataFrame:
    """Every row typed, with a reason from `REASONS` (NULL: valid) and, when rejected,
    a detail showing the value and the raw row."""
    from pyspark.sql import functions as F

    # The lake path models item behaviours only; a search or impression row is unknown here.
    words = {b.value: b.code for b in ITEM_BEHAVIORS}
    words |= {str(code): code for code in words.values()}
    behavior_word = F.lower(_text(raw, "behavior"))
    code = F.lit(None).cast("tinyint")
    for word, value in words.items():
        code = F.when(behavior_word == word, F.lit(value).cast("tinyint")).otherwise(code)
    has_price = "price" in raw.columns
    has_quantity = "quantity" in raw.columns
    price = _text(raw, "price")
    quantity = _text(raw, "quantity")
    typed = raw.select(
        (F.col(_CORRUPT) if _CORRUPT in raw.columns else F.lit(None).cast("string")).alias(
            "corrupt"
        ),
        _text(raw, "user_id").alias("user_id"),
        _text(raw, "item_id").alias("item_id"),
        _text(raw, "category_id").alias("category_id"),
        behavior_word.alias("behavior_word"),
        code.alias("behavior"),
        _text(raw, "ts").alias("ts_text"),
        _micros(raw).alias("micros"),
        price.alias("price_text"),
        price.try_cast("double").alias("price"),
        quantity.alias("quantity_text"),
        quantity.try_cast("double").alias("quantity_value"),
        _text(raw, "brand").alias("brand"),
        _text(raw, "session_id").alias("session_id"),
        F.concat_ws(",", *[F.col(c).cast("string") for c in raw.columns if c != _CORRUPT]).alias(
            "joined"
        ),
    )
    longest = F.greatest(
        F.octet_length("user_id"),
        F.octet_length("item_id"),
        F.coalesce(F.octet_length("category_id"), F.lit(0)),
    )
    earliest, latest = micros_of(rules.earliest), micros_of(rules.resolved_latest(now))
    fields = len([c for c in raw.columns if c != _CORRUPT])
    finite = ~F.isnan("price") & (F.abs("price") != F.lit(float("inf")))
    whole = F.col("quantity_value")
    reason = (
        F.when(F.col("corrupt").isNotNull(), _layout_reason(fields))
        .when(F.col("user_id").isNull(), "missing_user_id")
        .when(F.col("item_id").isNull(), "missing_item_id")
        .when(longest > F.lit(rules.max_id_length), "id_too_long")
        .when(F.col("behavior").isNull(), "unknown_behavior")
        .when(F.col("micros").isNull(), "bad_time")
        .when(
            (F.col("micros") < F.lit(earliest)) | (F.col("micros") > F.lit(latest)),
            "time_out_of_range",
        )
    )
    if has_price:
        reason = reason.when(
            F.col("price_text").isNotNull() & (F.col("price").isNull() | ~finite), "bad_price"
        ).when(F.col("price") < 0, "negative_price")
    if has_quantity:
        reason = reason.when(
            F.col("quantity_text").isNotNull()
            & (
                whole.isNull()
                | F.isnan(whole)
                | (whole != F.floor(whole))
                | (whole < 0)
                | (whole > F.lit(1e9))
            ),
            "bad_quantity",
        )
    shown = {
        "unknown_behavior": ("behaviour ", F.coalesce("behavior_word", F.lit("(empty)"))),
        "bad_time": ("time ", F.coalesce("ts_text", F.lit("(empty)"))),
        "time_out_of_range": ("time ", F.col("ts_text")),
        "bad_price": ("price ", F.col("price_text")),
        "negative_price": ("price ", F.col("price_text")),
        "bad_quantity": ("quantity ", F.col("quantity_text")),
        "id_too_long": ("id of ", F.concat(longest.cast("string"), F.lit(" bytes"))),
    }
    detail = F.lit(None).cast("string")
    for name, (prefix, value) in shown.items():
        detail = F.when(F.col("reason") == name, F.concat(F.lit(prefix), value)).otherwise(detail)
    assert set(_LAYOUT_REASONS) <= set(REASONS)
    return (
        typed.withColumn("reason", reason)
        .withColumn("detail", detail)
        .withColumn("raw", F.when(F.col("reason").isNotNull(), F.coalesce("corrupt", "joined")))
        .select(
            *EVENT_FIELDS,
            F.col("price"),
            F.col("quantity_value").cast("int").alias("quantity"),
            "brand",
            "session_id",
            "reason",
            "detail",
            "raw",
        )
    )


#: Reasons for rows Spark's CSV reader could not split, as `ingest` names them.
_LAYOUT_REASONS = ("wrong_field_count", "malformed_line")


def _layout_reason(fields: int) -> Column:
    """wrong_field_count when the raw line splits into another number of fields than the
    header, else malformed_line (an unclosed quote, say)."""
    from pyspark.sql import functions as F

    raw = F.col("corrupt")
    quoted = raw.contains('"')
    count = F.size(F.split(raw, ",", -1))
    return F.when(~quoted & (count != F.lit(fields)), "wrong_field_count").otherwise(
        "malformed_line"
    )
