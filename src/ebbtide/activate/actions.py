"""The action catalogue: what a re-activation campaign may do, what it costs, and its budget.

Why a file and not code: which actions a shop can send, at what price, and how much it will
spend are business decisions that change between campaigns; the planner only reads them.

The catalogue is a small typed TOML file (read with the standard library's `tomllib`)::

    [budget]                      # required
    total = 5000.0                # currency units for the whole plan, >= 0
    currency = "EUR"              # optional, default "EUR"
    objective = "conversions"     # optional: "conversions" (default) or "margin"

    [caps]                        # optional
    min_days_between_contacts = 7 # >= 0: users contacted fewer days ago are skipped (default 0)
    max_contacts = 100000         # optional integer >= 0: contacts in the whole plan

    [[action]]
    name = "none"                 # the no-contact action; added if absent, takes no other key
    [[action]]
    name = "push"
    kind = "recommendation"       # recommendation | coupon
    channel = "push"              # push | email | sms | in_app
    cost = 0.01                   # fixed cost per contacted user, >= 0
    [[action]]
    name = "coupon_10"
    kind = "coupon"
    channel = "email"
    cost = 0.05
    discount = 0.10               # coupons only: share of order value given away, in [0, 1)
    margin = 0.30                 # gross margin share of order value, in [0, 1]

Every action but ``none`` needs ``name``, ``kind``, ``channel`` and ``cost``; ``margin`` is
required for all of them when ``objective = "margin"``. The redemption cost of a coupon
(discount × order value × P(conversion)) is not in ``cost``: `planner.build_candidates` adds it
per user when an order value is known. Unknown keys, duplicate names and out-of-range values
raise `ConfigError` naming the file, the key, the value and what is allowed.

Examples
--------
>>> catalogue = default_actions()
>>> catalogue.names[0]
'none'
>>> override(catalogue, budget=1000.0).budget.total
1000.0
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from ebbtide.errors import ConfigError

__all__ = [
    "CHANNELS",
    "KINDS",
    "NONE",
    "NONE_ACTION",
    "OBJECTIVES",
    "Action",
    "ActionCatalogue",
    "Budget",
    "Caps",
    "default_actions",
    "load_actions",
    "override",
]

#: Name (and kind, and channel) of the implicit no-contact action.
NONE = "none"
#: Kinds of contact an action may be (``none`` is reserved for the no-contact action).
KINDS = ("recommendation", "coupon")
#: Channels an action may use.
CHANNELS = ("push", "email", "sms", "in_app")
#: What the plan maximises: expected incremental conversions, or expected incremental margin.
OBJECTIVES = ("conversions", "margin")

_ACTION_KEYS = ("name", "kind", "channel", "cost", "discount", "margin")
_BUDGET_KEYS = ("total", "currency", "objective")
_CAPS_KEYS = ("min_days_between_contacts", "max_contacts")
_TOP_KEYS = ("budget", "caps", "action")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(
    owner: str,
    key: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    high_open: bool = False,
    allowed: str,
) -> float:
    """`value` as a float inside [low, high] (or [low, high)); else a `ConfigError`."""
    if not _is_number(value) or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise ConfigError(f"{owner}: {key} = {value!r} is not a finite number; use {allowed}")
    number = float(value)  # type: ignore[arg-type]
    if number < low or number > high or (high_open and number >= high):
        raise ConfigError(f"{owner}: {key} = {value!r} is out of range; use {allowed}")
    return number


def _choice(owner: str, key: str, value: object, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(
            f"{owner}: {key} = {value!r} is unknown; allowed: {', '.join(map(repr, choices))}"
        )
    return value  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Action:
    """One thing the campaign may do to a user.

    Parameters
    ----------
    name : str
        Unique name, used in candidate tables and plans. ``"none"`` is the no-contact action.
    kind : str
        ``"recommendation"`` or ``"coupon"`` (``"none"`` only for the no-contact action).
    channel : str
        ``"push"``, ``"email"``, ``"sms"`` or ``"in_app"`` (``"none"`` for no contact).
    cost : float
        Fixed cost per contacted user, in the budget's currency, >= 0.
    discount : float
        Coupons only: the share of order value given away, in [0, 1).
    margin : float or None
        Gross margin share of order value, in [0, 1]; needed when the objective is margin.
    """

    name: str
    kind: str
    channel: str
    cost: float
    discount: float = 0.0
    margin: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"action name {self.name!r} must be a non-empty string")
        owner = f"action {self.name!r}"
        if self.name == NONE:
            if (self.kind, self.channel, self.cost, self.discount, self.margin) != (
                NONE,
                NONE,
                0.0,
                0.0,
                None,
            ):
                raise ConfigError(
                    f"{owner}: 'none' is the no-contact action (cost 0, no effect); give it no"
                    " kind, channel, cost, discount or margin, or rename your action"
                )
            return
        _choice(owner, "kind", self.kind, KINDS)
        _choice(owner, "channel", self.channel, CHANNELS)
        cost = _number(owner, "cost", self.cost, low=0.0, allowed="a cost >= 0")
        discount = _number(
            owner,
            "discount",
            self.discount,
            low=0.0,
            high=1.0,
            high_open=True,
            allowed="a share in [0, 1)",
        )
        if discount > 0 and self.kind != "coupon":
            raise ConfigError(
                f"{owner}: discount = {self.discount!r} applies to kind = 'coupon' only;"
                f" remove it or set kind = 'coupon'"
            )
        object.__setattr__(self, "cost", cost)
        object.__setattr__(self, "discount", discount)
        if self.margin is not None:
            margin = _number(
                owner, "margin", self.margin, low=0.0, high=1.0, allowed="a share in [0, 1]"
            )
            object.__setattr__(self, "margin", margin)

    @property
    def is_contact(self) -> bool:
        """Whether choosing this action contacts the user (every action but ``none``)."""
        return self.name != NONE


#: The implicit no-contact action: cost 0, effect 0 by definition of "incremental".
NONE_ACTION = Action(NONE, NONE, NONE, 0.0)


@dataclass(frozen=True, slots=True)
class Budget:
    """How much the whole plan may spend, and what it maximises.

    Parameters
    ----------
    total : float
        Spend limit for the plan, in `currency`, >= 0.
    currency : str
        Currency label of every cost (shown in reasons and reports; never converted).
    objective : str
        ``"conversions"`` (expected incremental conversions) or ``"margin"`` (expected
        incremental gross margin, in `currency`).
    """

    total: float
    currency: str = "EUR"
    objective: str = "conversions"

    def __post_init__(self) -> None:
        total = _number("budget", "total", self.total, low=0.0, allowed="a total >= 0")
        object.__setattr__(self, "total", total)
        if (
            not isinstance(self.currency, str)
            or not self.currency
            or self.currency != self.currency.strip()
            or " " in self.currency
        ):
            raise ConfigError(
                f"budget: currency = {self.currency!r} must be a label without spaces, e.g. 'EUR'"
            )
        _choice("budget", "objective", self.objective, OBJECTIVES)


@dataclass(frozen=True, slots=True)
class Caps:
    """Contact limits that hold whatever the budget allows.

    Parameters
    ----------
    min_days_between_contacts : float
        A user contacted fewer than this many days before the plan is not contacted again
        (0: no frequency cap). The planner enforces it from each user's last contact.
    max_contacts : int or None
        Most users the plan may contact (None: no limit).
    """

    min_days_between_contacts: float = 0.0
    max_contacts: int | None = None

    def __post_init__(self) -> None:
        days = _number(
            "caps",
            "min_days_between_contacts",
            self.min_days_between_contacts,
            low=0.0,
            allowed="a number of days >= 0",
        )
        object.__setattr__(self, "min_days_between_contacts", days)
        if self.max_contacts is not None and (
            not isinstance(self.max_contacts, int)
            or isinstance(self.max_contacts, bool)
            or self.max_contacts < 0
        ):
            raise ConfigError(
                f"caps: max_contacts = {self.max_contacts!r} must be an integer >= 0"
                " (or left out for no limit)"
            )


@dataclass(frozen=True, slots=True)
class ActionCatalogue:
    """The actions a plan may choose from, its budget and its contact caps.

    Parameters
    ----------
    actions : tuple of Action
        Unique names; ``none`` is put first if missing.
    budget : Budget
    caps : Caps
    """

    actions: tuple[Action, ...]
    budget: Budget
    caps: Caps = field(default_factory=Caps)

    def __post_init__(self) -> None:
        actions = tuple(self.actions)
        if not all(isinstance(a, Action) for a in actions):
            raise ConfigError("ActionCatalogue.actions must hold Action objects")
        names = [a.name for a in actions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                f"action names must be unique; {', '.join(map(repr, duplicates))} appears more"
                " than once: rename or remove the copies"
            )
        if NONE not in names:
            actions = (NONE_ACTION, *actions)
        if len(actions) < 2:
            raise ConfigError("the catalogue has no action besides 'none': add an [[action]]")
        if not isinstance(self.budget, Budget) or not isinstance(self.caps, Caps):
            raise ConfigError("ActionCatalogue needs a Budget and a Caps object")
        if self.budget.objective == "margin":
            missing = [a.name for a in actions if a.is_contact and a.margin is None]
            if missing:
                raise ConfigError(
                    f"objective = 'margin' needs a margin on every action; missing for"
                    f" {', '.join(map(repr, missing))}: add margin = 0.3 (say) to each"
                )
        object.__setattr__(self, "actions", actions)

    @property
    def names(self) -> tuple[str, ...]:
        """Action names in catalogue order (``none`` included)."""
        return tuple(a.name for a in self.actions)

    def __getitem__(self, name: str) -> Action:
        for action in self.actions:
            if action.name == name:
                return action
        raise KeyError(f"no action {name!r}; the catalogue has {', '.join(self.names)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> ActionCatalogue:
        """Build a catalogue from the parsed TOML structure (see the module docstring).

        Parameters
        ----------
        data : mapping
            ``{"budget": {...}, "caps": {...}, "action": [{...}, ...]}``.
        source : str
            Where `data` came from, named in every error message.

        Raises
        ------
        ConfigError
            On an unknown key, a missing required key, or a value out of its range.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: the catalogue must be a table, got {type(data).__name__}")
        _check_keys(source, "top level", data, _TOP_KEYS)
        if "budget" not in data:
            raise ConfigError(
                f"{source}: [budget] is missing; add [budget] with total = 5000.0 (say)"
            )
        budget_table = _table(source, "[budget]", data["budget"])
        _check_keys(source, "[budget]", budget_table, _BUDGET_KEYS)
        if "total" not in budget_table:
            raise ConfigError(f"{source}: [budget] needs total = <spend limit>, e.g. 5000.0")
        budget = _wrap(source, lambda: Budget(**budget_table))
        caps_table = _table(source, "[caps]", data.get("caps", {}))
        _check_keys(source, "[caps]", caps_table, _CAPS_KEYS)
        caps = _wrap(source, lambda: Caps(**caps_table))
        raw_actions = data.get("action", [])
        if not isinstance(raw_actions, list):
            raise ConfigError(f"{source}: 'action' must be an array of tables ([[action]])")
        actions = []
        for number, raw in enumerate(raw_actions, start=1):
            where = f"[[action]] #{number}"
            raw = _table(source, where, raw)
            if isinstance(raw.get("name"), str):
                where = f"{where} ({raw['name']!r})"
            _check_keys(source, where, raw, _ACTION_KEYS)
            actions.append(_wrap(source, lambda raw=raw, where=where: _action(where, raw)))
        return _wrap(source, lambda: cls(tuple(actions), budget, caps))


def _action(where: str, raw: Mapping[str, Any]) -> Action:
    if raw.get("name") == NONE:
        extra = sorted(set(raw) - {"name"})
        if extra:
            raise ConfigError(
                f"{where}: 'none' is the no-contact action and takes no other key;"
                f" remove {', '.join(extra)}"
            )
        return NONE_ACTION
    missing = [k for k in ("name", "kind", "channel", "cost") if k not in raw]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    return Action(**raw)


def _table(source: str, where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {where} must be a table, got {value!r}")
    return value


def _check_keys(source: str, where: str, table: Mapping[str, Any], allowed: tuple[str, ...]):
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{source}: {where}: key {key!r} is unknown{hint};"
                f" allowed keys: {', '.join(allowed)}"
            )


def _wrap(source: str, build):
    """Run `build`, prefixing any `ConfigError` it raises with `source`."""
    try:
        return build()
    except ConfigError as error:
        if str(error).startswith(f"{source}:"):
            raise
        raise ConfigError(f"{source}: {error}") from error


def load_actions(path: str | Path) -> ActionCatalogue:
    """Read an action catalogue from a TOML file.

    Parameters
    ----------
    path : str or Path
        The TOML file (format in the module docstring).

    Returns
    -------
    ActionCatalogue

    Raises
    ------
    ConfigError
        If the file is missing, is not valid TOML (the message gives the line), or holds an
        unknown key or a bad value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ConfigError(
            f"action catalogue {path} does not exist; check the path, or start from the"
            " default (ebbtide/activate/default_actions.toml)"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"action catalogue {path} cannot be read as UTF-8 text: {error}"
        ) from error
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}; fix the file at that line") from error
    return ActionCatalogue.from_dict(data, source=str(path))


def default_actions() -> ActionCatalogue:
    """The catalogue shipped with ebbtide (push, e-mail and two coupon tiers, 5000 EUR).

    Returns
    -------
    ActionCatalogue
    """
    resource = resources.files("ebbtide.activate") / "default_actions.toml"
    data = tomllib.loads(resource.read_text(encoding="utf-8"))
    return ActionCatalogue.from_dict(data, source="default_actions.toml")


def override(
    catalogue: ActionCatalogue,
    *,
    budget: float | None = None,
    currency: str | None = None,
    objective: str | None = None,
    min_days_between_contacts: float | None = None,
    max_contacts: int | None = None,
) -> ActionCatalogue:
    """A copy of `catalogue` with the given budget or cap values replaced (None: keep).

    Why: command-line options such as ``--budget 5000`` win over the file without editing it;
    the copy is validated like a loaded file.

    Returns
    -------
    ActionCatalogue

    Raises
    ------
    ConfigError
        If a new value is out of range.
    """
    new_budget = catalogue.budget
    changes = {
        k: v
        for k, v in (("total", budget), ("currency", currency), ("objective", objective))
        if v is not None
    }
    if changes:
        new_budget = replace(new_budget, **changes)
    new_caps = catalogue.caps
    cap_changes = {
        k: v
        for k, v in (
            ("min_days_between_contacts", min_days_between_contacts),
            ("max_contacts", max_contacts),
        )
        if v is not None
    }
    if cap_changes:
        new_caps = replace(new_caps, **cap_changes)
    return ActionCatalogue(catalogue.actions, new_budget, new_caps)
