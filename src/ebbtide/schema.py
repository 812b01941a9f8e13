"""The canonical event: the one shape every reader produces and every stage consumes.

An event is `user_id`, `item_id`, `category_id` (may be empty), `behavior` (one of
`Behavior`), `ts` (UTC instant) and the optional `price`, `quantity`, `brand`,
`session_id`. External ids stay strings; the store adds dense integer `*_idx` ids.
"""

from __future__ import annotations

from enum import StrEnum


class Behavior(StrEnum):
    """Canonical behaviours, ordered from weakest to strongest signal of interest."""

    VIEW = "view"
    CART = "cart"
    FAV = "fav"
    BUY = "buy"

    @property
    def code(self) -> int:
        """Small integer code the store and the models use (0 = view … 3 = buy)."""
        return BEHAVIOR_CODES[self]


BEHAVIORS: tuple[Behavior, ...] = tuple(Behavior)
BEHAVIOR_CODES: dict[Behavior, int] = {b: i for i, b in enumerate(BEHAVIORS)}

#: Columns every canonical event has, in order, with their meaning.
REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "category_id", "behavior", "ts")
#: Columns an event may carry when the source has them.
OPTIONAL_COLUMNS: tuple[str, ...] = ("price", "quantity", "brand", "session_id")
EVENT_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
