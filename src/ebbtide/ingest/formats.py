"""The public log formats ebbtide reads, described as data rather than code.

Each `EventFormat` says how a file is laid out (delimited text, whitespace-separated
lines, JSON Lines or Parquet), which source column feeds which canonical field, how the
source's behaviour words map to `Behavior`, and how its timestamps are written. One
generic reader (`ingest.reading`) turns any of them into canonical fields, so adding a
format means adding a description here, not a parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

from ebbtide.errors import ConfigError
from ebbtide.schema import DEFAULT_RATING_RANGE, Behavior

Layout = Literal["csv", "whitespace", "jsonl", "parquet"]

#: Canonical fields a reader fills, in the order the store keeps them.
CANONICAL_FIELDS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "category_id",
    "behavior",
    "ts",
    "price",
    "quantity",
    "brand",
    "session_id",
    "category_name",
    "query",
    "value",
    "placement",
)
#: Time formats understood besides a strftime pattern (anything containing '%').
NAMED_TIME_FORMATS: tuple[str, ...] = ("epoch_s", "epoch_ms", "iso")

_CANONICAL_WORDS = MappingProxyType({b.value: b for b in Behavior})


class FormatName(StrEnum):
    """Formats `ebbtide ingest --format` accepts."""

    TAOBAO = "taobao"
    REES46 = "rees46"
    RETAILROCKET = "retailrocket"
    CDNOW = "cdnow"
    MOVIELENS = "movielens"
    GENERIC = "generic"


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFormat:
    """How one source format maps onto the canonical event.

    Parameters
    ----------
    name : str
        Short name shown in messages.
    layout : {"csv", "whitespace", "jsonl", "parquet"}
        Physical layout. "whitespace" splits each line on runs of blanks.
    columns : tuple of str, optional
        Source columns in file order. ``None`` means "as named by the file's header".
    header : bool
        Whether the first line names the columns (checked against `columns`).
    fields : mapping
        Canonical field -> source column. Required: user_id, item_id, behavior, ts
        (behavior may instead be a constant).
    constants : mapping
        Canonical field -> fixed value, for sources that lack the field.
    behavior_map : mapping
        Source word (compared lower-cased, trimmed) -> `Behavior`.
    excluded_behaviors : mapping
        Source words that are valid in the source but have no canonical meaning, with
        the reason; their rows are kept in quarantine, not loaded.
    time_format : str
        "epoch_s", "epoch_ms", "iso" or a strftime pattern such as "%Y%m%d".
    delimiter, quote : str
        CSV field separator and quote character ("" for formats that never quote, so a
        stray quote cannot swallow the lines after it).
    keep_repeats : bool
        Keep identical rows of one file as separate events. For sources whose time
        stamps are too coarse (whole days) to tell genuine repeats from copies.
    price_is_line_total : bool
        The price column holds the value of the whole line; the unit price is that
        value divided by the quantity.
    typed_header : bool
        Header names carry a type suffix, ``name:type`` (RecBole atomic files).
    rating_range : (float, float)
        Inclusive range of a `rate` event's value; outside it the row is quarantined
        (``value_out_of_range``), so a 50 in a 1–5 star log is caught, not averaged.
    """

    name: str
    layout: Layout
    columns: tuple[str, ...] | None
    header: bool
    fields: Mapping[str, str]
    constants: Mapping[str, str] = field(default_factory=dict)
    behavior_map: Mapping[str, Behavior] = field(default_factory=lambda: dict(_CANONICAL_WORDS))
    excluded_behaviors: Mapping[str, str] = field(default_factory=dict)
    time_format: str = "iso"
    delimiter: str = ","
    quote: str = '"'
    keep_repeats: bool = False
    price_is_line_total: bool = False
    typed_header: bool = False
    rating_range: tuple[float, float] = DEFAULT_RATING_RANGE

    def __post_init__(self) -> None:
        low, high = self.rating_range
        if not low <= high:
            raise ConfigError(f"rating range {low}..{high}: the low end must not exceed the high")
        unknown = set(self.fields) - set(CANONICAL_FIELDS)
        if unknown:
            raise ConfigError(
                f"unknown canonical field(s) {sorted(unknown)};"
                f" known: {', '.join(CANONICAL_FIELDS)}"
            )
        for required in ("user_id", "item_id", "behavior", "ts"):
            if required not in self.fields and required not in self.constants:
                raise ConfigError(
                    f"format {self.name!r} needs a source column for {required!r}"
                    f" (e.g. --{required.removesuffix('_id').replace('ts', 'time')}-col NAME)"
                )
        if self.columns is not None:
            missing = [c for c in self.fields.values() if c not in self.columns]
            if missing:
                raise ConfigError(
                    f"column(s) {missing} are mapped but the file has only:"
                    f" {', '.join(self.columns)}"
                )
        check_time_format(self.time_format)

    @property
    def expected_columns(self) -> str:
        """Human-readable list of the columns this format expects, for error messages."""
        if self.columns is not None:
            return ",".join(self.columns)
        return ",".join(sorted(set(self.fields.values())))


def check_time_format(time_format: str) -> str:
    """Accept a named time format or a strftime pattern, else raise `ConfigError`."""
    if time_format in NAMED_TIME_FORMATS or "%" in time_format:
        return time_format
    raise ConfigError(
        f"unknown time format {time_format!r}; use one of {', '.join(NAMED_TIME_FORMATS)}"
        " or a strftime pattern such as '%Y-%m-%d %H:%M:%S'"
    )


def parse_behavior_map(text: str) -> dict[str, Behavior]:
    """Parse ``"pv=view,addtocart=cart"`` into a behaviour map (canonical words kept).

    Raises
    ------
    ConfigError
        When an entry is not ``word=behaviour`` or names an unknown behaviour.
    """
    mapping: dict[str, Behavior] = dict(_CANONICAL_WORDS)
    for entry in filter(None, (part.strip() for part in text.split(","))):
        source, sep, target = entry.partition("=")
        if not sep or not source.strip():
            raise ConfigError(f"behaviour map entry {entry!r} is not of the form word=behaviour")
        try:
            mapping[source.strip().lower()] = Behavior(target.strip().lower())
        except ValueError:
            allowed = ", ".join(b.value for b in Behavior)
            raise ConfigError(
                f"behaviour map entry {entry!r}: {target.strip()!r} is not one of {allowed}"
            ) from None
    return mapping


TAOBAO = EventFormat(
    name="taobao",
    layout="csv",
    columns=("user_id", "item_id", "category_id", "behavior_type", "timestamp"),
    header=False,
    fields={
        "user_id": "user_id",
        "item_id": "item_id",
        "category_id": "category_id",
        "behavior": "behavior_type",
        "ts": "timestamp",
    },
    behavior_map={
        "pv": Behavior.VIEW,
        "cart": Behavior.CART,
        "fav": Behavior.FAV,
        "buy": Behavior.BUY,
    },
    time_format="epoch_s",
    quote="",
)

REES46 = EventFormat(
    name="rees46",
    layout="csv",
    columns=(
        "event_time",
        "event_type",
        "product_id",
        "category_id",
        "category_code",
        "brand",
        "price",
        "user_id",
        "user_session",
    ),
    header=True,
    fields={
        "user_id": "user_id",
        "item_id": "product_id",
        "category_id": "category_id",
        "behavior": "event_type",
        "ts": "event_time",
        "price": "price",
        "brand": "brand",
        "session_id": "user_session",
        "category_name": "category_code",
    },
    behavior_map={"view": Behavior.VIEW, "cart": Behavior.CART, "purchase": Behavior.BUY},
    # Taking an item out of the cart is not interest in it: loading it as `cart` would
    # count it as a positive signal, `view` would invent a page view. Kept in quarantine.
    excluded_behaviors={
        "remove_from_cart": "remove_from_cart has no canonical behaviour (it withdraws interest)"
    },
    time_format="%Y-%m-%d %H:%M:%S UTC",
    quote="",  # the export never quotes; a stray quote stays in its row
)

RETAILROCKET = EventFormat(
    name="retailrocket",
    layout="csv",
    columns=("timestamp", "visitorid", "event", "itemid", "transactionid"),
    header=True,
    fields={"user_id": "visitorid", "item_id": "itemid", "behavior": "event", "ts": "timestamp"},
    behavior_map={
        "view": Behavior.VIEW,
        "addtocart": Behavior.CART,
        "transaction": Behavior.BUY,
    },
    time_format="epoch_ms",
    quote="",
)

#: CDNOW has no items or categories: every transaction is a `buy` of one stand-in item,
#: with quantity = number of CDs and price = dollar value / quantity.
CDNOW_ITEM = "cd"
_CDNOW_COMMON = dict(
    layout="whitespace",
    header=False,
    constants={"behavior": "buy", "item_id": CDNOW_ITEM},
    behavior_map={"buy": Behavior.BUY},
    time_format="%Y%m%d",
    keep_repeats=True,  # day resolution: two identical rows are two real purchases
    price_is_line_total=True,
)
CDNOW_MASTER = EventFormat(
    name="cdnow",
    columns=("customer_id", "date", "number_of_cds", "dollar_value"),
    fields={
        "user_id": "customer_id",
        "ts": "date",
        "quantity": "number_of_cds",
        "price": "dollar_value",
    },
    **_CDNOW_COMMON,  # type: ignore[arg-type]
)
#: The 1/10 sample repeats the master id first, then a sample id; users keep master ids
#: so that the sample and the master file describe the same customers.
CDNOW_SAMPLE = replace(
    CDNOW_MASTER,
    columns=("customer_id", "sample_id", "date", "number_of_cds", "dollar_value"),
)

MOVIELENS = EventFormat(
    name="movielens",
    layout="csv",
    columns=None,  # RecBole atomic header: name:type, tab separated
    header=True,
    delimiter="\t",
    fields={"user_id": "user_id", "item_id": "item_id", "ts": "timestamp", "value": "rating"},
    constants={"behavior": "rate"},
    time_format="epoch_s",
    typed_header=True,
    rating_range=(1.0, 5.0),
)

NAMED_FORMATS: Mapping[FormatName, EventFormat] = MappingProxyType(
    {
        FormatName.TAOBAO: TAOBAO,
        FormatName.REES46: REES46,
        FormatName.RETAILROCKET: RETAILROCKET,
        FormatName.CDNOW: CDNOW_MASTER,
        FormatName.MOVIELENS: MOVIELENS,
    }
)
