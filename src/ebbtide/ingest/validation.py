"""Rules that decide whether a record is a valid event, written once as SQL.

`staging_sql` wraps a reader's query: it types every canonical field and gives each row
either a NULL ``reason`` (load it) or one reason code from `REASONS` (quarantine it,
with a ``detail`` that shows the offending value). Everything is set-based, so the rules
cost the same per row whether the file has a thousand rows or a hundred million.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from ebbtide.errors import ConfigError
from ebbtide.ingest.formats import EventFormat
from ebbtide.ingest.reading import ReaderQuery
from ebbtide.schema import ITEM_OPTIONAL, Behavior

#: Every reason a row can be quarantined for, with what it means.
REASONS = MappingProxyType(
    {
        "wrong_field_count": "the row has more or fewer fields than the format's columns",
        "bad_encoding": "the row is not valid UTF-8 text",
        "malformed_line": "the row cannot be split (e.g. an unclosed quote)",
        "unterminated_quote": "a quote opened on this line never closes: the file cannot be read",
        "line_too_long": "the row is longer than the maximum line size",
        "malformed_json": "the line is not a JSON object",
        "missing_user_id": "the user id is empty",
        "missing_item_id": "the item id is empty",
        "id_too_long": "an id is longer than the allowed length (in bytes of UTF-8)",
        "excluded_behavior": "a behaviour of the source with no canonical meaning",
        "unknown_behavior": "the behaviour word is not in the format's behaviour map",
        "bad_time": "the time cannot be parsed in the stated time format",
        "time_out_of_range": "the time is before the earliest or after the latest allowed instant",
        "bad_price": "the price is not a finite number",
        "negative_price": "the price is negative",
        "bad_quantity": "the quantity is not a whole number between 0 and 10^9",
        "missing_query": "a search without words (the query is empty)",
        "query_too_long": "the query is longer than the allowed length (in bytes of UTF-8)",
        "missing_value": "a rating without a value",
        "bad_value": "the value is not a finite number",
        "value_out_of_range": "the rating is outside the format's rating range",
    }
)

#: DuckDB's CSV reject kinds, mapped to our reasons.
REJECT_REASONS = MappingProxyType(
    {
        "MISSING COLUMNS": "wrong_field_count",
        "TOO MANY COLUMNS": "wrong_field_count",
        "INVALID ENCODING": "bad_encoding",
        "UNQUOTED VALUE": "malformed_line",
        "INVALID STATE": "malformed_line",
        "LINE SIZE OVER MAXIMUM": "line_too_long",
    }
)

_EPOCH_SCALE = {"epoch_s": 1.0, "epoch_ms": 1000.0}


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationRules:
    """Limits a valid event must respect.

    Parameters
    ----------
    earliest : datetime
        Times before this are `time_out_of_range` (catches 0 and mis-scaled epochs).
    latest : datetime, optional
        Times after this are out of range; default: one day after the ingest starts.
    max_id_length : int
        User, item, category or placement ids longer than this many bytes (UTF-8) are
        `id_too_long`: hostile or garbled input.
    max_query_length : int
        Search queries longer than this many bytes are `query_too_long` (a pasted page is
        not a search, and would bloat every query table downstream).
    """

    earliest: datetime = datetime(1990, 1, 1, tzinfo=UTC)
    latest: datetime | None = None
    max_id_length: int = 256
    max_query_length: int = 1024

    def __post_init__(self) -> None:
        for name in ("earliest", "latest"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ConfigError(f"ValidationRules.{name}={value!r} must be timezone-aware (UTC)")
        for name in ("max_id_length", "max_query_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ValidationRules.{name}={getattr(self, name)} must be >= 1")

    def resolved_latest(self, now: datetime) -> datetime:
        return self.latest if self.latest is not None else now + timedelta(days=1)


def staging_sql(
    reader: ReaderQuery, fmt: EventFormat, rules: ValidationRules, now: datetime
) -> tuple[str, dict[str, object]]:
    """SQL that types and checks every record of `reader`.

    Returns the query and its bound parameters. Output columns: typed ``user_id``,
    ``item_id``, ``category_id``, ``category_name``, ``behavior`` (code), ``ts``,
    ``price``, ``quantity``, ``brand``, ``session_id``, ``query`` (blanks collapsed),
    ``value``, ``placement``; ``reason`` (NULL = valid); and,
    for quarantined rows only, ``detail``, ``raw`` and the raw behaviour, time and price.
    """
    params = dict(reader.params)
    params.update(
        earliest=rules.earliest.timestamp(),
        latest=rules.resolved_latest(now).timestamp(),
        max_id=rules.max_id_length,
        max_query=rules.max_query_length,
        rating_low=float(fmt.rating_range[0]),
        rating_high=float(fmt.rating_range[1]),
    )
    item_optional = ", ".join(str(b.code) for b in ITEM_OPTIONAL)
    behavior_cases = []
    for i, (word, behavior) in enumerate(sorted(fmt.behavior_map.items())):
        params[f"word_{i}"] = word
        behavior_cases.append(f"WHEN $word_{i} THEN {behavior.code}")
    excluded = []
    for i, word in enumerate(sorted(fmt.excluded_behaviors)):
        params[f"excluded_{i}"] = word
        excluded.append(f"$excluded_{i}")
    excluded_test = f"behavior_word IN ({', '.join(excluded)})" if excluded else "false"

    if fmt.time_format in _EPOCH_SCALE:
        scale = _EPOCH_SCALE[fmt.time_format]
        parsed = f"TRY_CAST(f_ts AS DOUBLE) / {scale}"
        ts_expr = "to_timestamp(t_epoch)"
    else:
        if fmt.time_format == "iso":
            ts_parsed = "TRY_CAST(f_ts AS TIMESTAMPTZ)"
        else:
            params["time_format"] = fmt.time_format
            ts_parsed = "TRY_STRPTIME(f_ts, $time_format)::TIMESTAMPTZ"
        parsed = f"epoch({ts_parsed})"
        ts_expr = ts_parsed
    price_value = "TRY_CAST(f_price AS DOUBLE)"
    typed = f"""
        SELECT r.*,
            nullif({_trimmed("f_user_id")}, '') AS user_id,
            nullif({_trimmed("f_item_id")}, '') AS item_id,
            nullif({_trimmed("f_category_id")}, '') AS category_id,
            nullif({_trimmed("f_category_name")}, '') AS category_name,
            lower({_trimmed("f_behavior")}) AS behavior_word,
            {parsed} AS t_epoch,
            {price_value} AS price_value,
            TRY_CAST(f_quantity AS DOUBLE) AS quantity_value,
            nullif({_trimmed("f_brand")}, '') AS brand,
            nullif({_trimmed("f_session_id")}, '') AS session_id,
            nullif(trim(regexp_replace(f_query, '\\s+', ' ', 'g')), '') AS query,
            TRY_CAST(f_value AS DOUBLE) AS value_number,
            nullif({_trimmed("f_placement")}, '') AS placement
        FROM ({reader.sql}) r
    """
    reason = f"""
        CASE
            WHEN layout_error IS NOT NULL THEN layout_error
            WHEN user_id IS NULL THEN 'missing_user_id'
            WHEN item_id IS NULL AND coalesce(behavior NOT IN ({item_optional}), true)
                 THEN 'missing_item_id'
            WHEN greatest(strlen(user_id), strlen(coalesce(item_id, '')),
                          strlen(coalesce(category_id, '')), strlen(coalesce(placement, '')))
                 > $max_id THEN 'id_too_long'
            WHEN {excluded_test} THEN 'excluded_behavior'
            WHEN behavior IS NULL THEN 'unknown_behavior'
            WHEN t_epoch IS NULL OR NOT isfinite(t_epoch) THEN 'bad_time'
            WHEN t_epoch < $earliest OR t_epoch > $latest THEN 'time_out_of_range'
            WHEN nullif(trim(f_price), '') IS NOT NULL
                 AND (price_value IS NULL OR NOT isfinite(price_value)) THEN 'bad_price'
            WHEN price_value < 0 THEN 'negative_price'
            WHEN nullif(trim(f_quantity), '') IS NOT NULL
                 AND (quantity_value IS NULL OR NOT isfinite(quantity_value)
                      OR quantity_value <> floor(quantity_value)
                      OR quantity_value < 0 OR quantity_value > 1e9) THEN 'bad_quantity'
            WHEN behavior = {Behavior.SEARCH.code} AND query IS NULL THEN 'missing_query'
            WHEN strlen(coalesce(query, '')) > $max_query THEN 'query_too_long'
            WHEN nullif(trim(f_value), '') IS NOT NULL
                 AND (value_number IS NULL OR NOT isfinite(value_number)) THEN 'bad_value'
            WHEN behavior = {Behavior.RATE.code} AND value_number IS NULL THEN 'missing_value'
            WHEN behavior = {Behavior.RATE.code}
                 AND NOT value_number BETWEEN $rating_low AND $rating_high
                 THEN 'value_out_of_range'
        END
    """
    unit_price = (
        "CASE WHEN quantity_value > 0 THEN price_value / quantity_value ELSE price_value END"
        if fmt.price_is_line_total
        else "price_value"
    )
    coded = f"""
        SELECT t.*, CASE behavior_word {" ".join(behavior_cases)} END::UTINYINT AS behavior
        FROM ({typed}) t
    """
    quarantined = "CASE WHEN reason IS NOT NULL THEN {} END"
    sql = f"""
        SELECT user_id, item_id, category_id, category_name, behavior,
            CASE WHEN reason IS NULL THEN {ts_expr} END AS ts,
            CASE WHEN reason IS NULL THEN {unit_price} END AS price,
            CASE WHEN reason IS NULL THEN quantity_value::INTEGER END AS quantity,
            brand, session_id,
            CASE WHEN reason IS NULL THEN query END AS query,
            CASE WHEN reason IS NULL THEN value_number END AS value,
            placement, reason,
            {quarantined.format(_detail_sql())} AS detail,
            {quarantined.format(reader.raw_sql)} AS raw,
            {quarantined.format("f_behavior")} AS raw_behavior,
            {quarantined.format("f_ts")} AS raw_time,
            {quarantined.format("f_price")} AS raw_price
        FROM (SELECT k.*, {reason} AS reason FROM ({coded}) k) c
    """
    return sql, params


def _trimmed(column: str) -> str:
    """`trim` only where a blank is at either end: most ids have none, and trim copies."""
    return (
        f"(CASE WHEN prefix({column}, ' ') OR suffix({column}, ' ')"
        f" THEN trim({column}) ELSE {column} END)"
    )


def _detail_sql() -> str:
    """A short text showing the value that broke the rule."""
    return """CASE reason
        WHEN 'unknown_behavior' THEN 'behaviour ' || coalesce(f_behavior, '(empty)')
        WHEN 'excluded_behavior' THEN 'behaviour ' || f_behavior
        WHEN 'bad_time' THEN 'time ' || coalesce(f_ts, '(empty)')
        WHEN 'time_out_of_range' THEN 'time ' || f_ts
        WHEN 'bad_price' THEN 'price ' || f_price
        WHEN 'negative_price' THEN 'price ' || f_price
        WHEN 'bad_quantity' THEN 'quantity ' || f_quantity
        WHEN 'id_too_long' THEN 'id of ' || greatest(strlen(user_id), strlen(coalesce(item_id, '')),
            strlen(coalesce(category_id, '')), strlen(coalesce(placement, ''))) || ' bytes'
        WHEN 'query_too_long' THEN 'query of ' || strlen(query) || ' bytes'
        WHEN 'bad_value' THEN 'value ' || f_value
        WHEN 'value_out_of_range' THEN 'value ' || f_value || ' outside '
            || $rating_low || '..' || $rating_high
        END"""


def rejects_sql(rejects_table: str) -> str:
    """SQL giving one (line, reason, detail, raw) row per line DuckDB's reader rejected.

    DuckDB may prefix a rejected CRLF line with the previous line's LF, so line breaks at
    either end are trimmed; one left inside means the record ran over several lines.
    """
    cases = " ".join(f"WHEN '{kind}' THEN '{reason}'" for kind, reason in REJECT_REASONS.items())
    return f"""SELECT line, CASE WHEN contains(raw, chr(10)) THEN 'unterminated_quote'
            ELSE CASE error_type {cases} ELSE 'malformed_line' END END AS reason, detail, raw
        FROM (
            SELECT line::BIGINT AS line,
                arg_min(error_type, column_idx)::VARCHAR AS error_type,
                arg_min(error_message, column_idx) AS detail,
                trim(arg_min(csv_line, column_idx), chr(13) || chr(10)) AS raw
            FROM {rejects_table} GROUP BY line)"""
