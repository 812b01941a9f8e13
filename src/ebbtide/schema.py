"""The canonical event: the one shape every reader produces and every stage consumes.

An event is `user_id`, `item_id` (may be empty for a search, click or impression),
`category_id` (may be empty), `behavior` (one of `Behavior`), `ts` (UTC instant) and the
optional `price`, `quantity`, `brand`, `session_id`, `query` (a search's words), `value`
(a rating's score) and `placement` (where a click or impression happened: a slot or a
campaign id). External ids stay strings; the store adds dense integer `*_idx` ids.

Two kinds of behaviour: the four *item* behaviours (view, cart, fav, buy) are what the
models' event arrays carry; `search`, `click`, `impression` and `rate` arrive beside them.
Models see a click as a view of its item and a rating as a view of the rated item (one
more engagement with it); a search reaches interest through the query → category map
(`ebbtide.features.queries`); an impression is something the shop showed, not something
the user did, so it never counts as activity, a return or interest.
"""

from __future__ import annotations

from enum import StrEnum


class Behavior(StrEnum):
    """Canonical behaviours: the item behaviours from weakest to strongest signal of
    interest, then the ones that arrive beside them (codes are the order; never reorder)."""

    VIEW = "view"
    CART = "cart"
    FAV = "fav"
    BUY = "buy"
    SEARCH = "search"
    CLICK = "click"
    IMPRESSION = "impression"
    RATE = "rate"

    @property
    def code(self) -> int:
        """Small integer code the store and the models use (0 = view … 3 = buy, 4 = search …)."""
        return BEHAVIOR_CODES[self]


BEHAVIORS: tuple[Behavior, ...] = tuple(Behavior)
BEHAVIOR_CODES: dict[Behavior, int] = {b: i for i, b in enumerate(BEHAVIORS)}
#: The behaviours the models' event arrays carry, codes 0..3 (per-behaviour weights index them).
ITEM_BEHAVIORS: tuple[Behavior, ...] = (Behavior.VIEW, Behavior.CART, Behavior.FAV, Behavior.BUY)
#: Behaviours that may come without an item: a search's words, a message shown or clicked.
ITEM_OPTIONAL: tuple[Behavior, ...] = (Behavior.SEARCH, Behavior.CLICK, Behavior.IMPRESSION)
#: Behaviours that are not something the user did: never a visit, a return or interest.
NOT_ACTIVITY: tuple[Behavior, ...] = (Behavior.IMPRESSION,)
#: Behaviours the models count as a view of their item (one more engagement with it).
SEEN_AS_VIEW: tuple[Behavior, ...] = (Behavior.CLICK, Behavior.RATE)
#: Range a rating must fall in unless the format says otherwise (1–5 stars, 0–10 scores).
DEFAULT_RATING_RANGE: tuple[float, float] = (0.0, 10.0)

#: Columns every canonical event has, in order, with their meaning.
REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "category_id", "behavior", "ts")
#: Columns an event may carry when the source has them.
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "price",
    "quantity",
    "brand",
    "session_id",
    "query",
    "value",
    "placement",
)
EVENT_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
