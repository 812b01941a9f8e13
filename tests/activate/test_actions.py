"""The action catalogue: a good file loads, every kind of bad file names its key."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest

from ebbtide.activate.actions import (
    NONE,
    NONE_ACTION,
    Action,
    ActionCatalogue,
    Budget,
    Caps,
    default_actions,
    load_actions,
    override,
)
from ebbtide.errors import ConfigError

GOOD = """
[budget]
total = 5000.0
currency = "EUR"
objective = "conversions"

[caps]
min_days_between_contacts = 7
max_contacts = 100000

[[action]]
name = "push"
kind = "recommendation"
channel = "push"
cost = 0.01

[[action]]
name = "coupon_10"
kind = "coupon"
channel = "email"
discount = 0.10
cost = 0.05
margin = 0.30
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "actions.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file_loads_with_implicit_none(tmp_path):
    catalogue = load_actions(write(tmp_path, GOOD))
    assert catalogue.names == (NONE, "push", "coupon_10")
    assert catalogue.budget == Budget(5000.0, "EUR", "conversions")
    assert catalogue.caps == Caps(7.0, 100000)
    coupon = catalogue["coupon_10"]
    assert (coupon.kind, coupon.channel, coupon.cost, coupon.discount, coupon.margin) == (
        "coupon",
        "email",
        0.05,
        0.10,
        0.30,
    )
    assert catalogue[NONE] == NONE_ACTION
    assert not NONE_ACTION.is_contact and coupon.is_contact
    with pytest.raises(KeyError, match="push"):
        catalogue["nope"]


def test_explicit_none_and_integer_numbers_are_accepted(tmp_path):
    text = GOOD.replace(
        '[[action]]\nname = "push"', '[[action]]\nname = "none"\n\n[[action]]\nname = "push"'
    ).replace("total = 5000.0", "total = 5000")
    catalogue = load_actions(write(tmp_path, text))
    assert catalogue.names == (NONE, "push", "coupon_10")
    assert catalogue.budget.total == 5000.0 and isinstance(catalogue.budget.total, float)


def test_caps_are_optional(tmp_path):
    text = GOOD.replace("[caps]\nmin_days_between_contacts = 7\nmax_contacts = 100000\n", "")
    assert load_actions(write(tmp_path, text)).caps == Caps()


BAD = [
    ("cost = 0.01", "cots = 0.01", ["cots", "did you mean 'cost'", "[[action]] #1"]),
    ('name = "coupon_10"', 'name = "push"', ["'push'", "unique"]),
    ("cost = 0.01", "cost = -0.01", ["cost", "-0.01", ">= 0"]),
    ("total = 5000.0", "total = -1.0", ["total", "-1.0", ">= 0"]),
    ("discount = 0.10", "discount = 1.0", ["discount", "1.0", "[0, 1)"]),
    ("discount = 0.10", "discount = -0.1", ["discount", "-0.1", "[0, 1)"]),
    ('kind = "recommendation"', 'kind = "banner"', ["kind", "'banner'", "'coupon'"]),
    ('channel = "push"', 'channel = "fax"', ["channel", "'fax'", "'in_app'"]),
    ('objective = "conversions"', 'objective = "revenue"', ["objective", "'revenue'", "'margin'"]),
    ('objective = "conversions"', 'objective = "margin"', ["margin", "'push'"]),
    ("max_contacts = 100000", "max_contacts = 1.5", ["max_contacts", "1.5", "integer"]),
    ("min_days_between_contacts = 7", "min_days_between_contacts = -7", ["min_days", "-7"]),
    ("cost = 0.01", "cost = true", ["cost", "True", "number"]),
    ("cost = 0.01", 'cost = "cheap"', ["cost", "'cheap'"]),
    ("[caps]", "[capz]", ["capz", "did you mean 'caps'", "top level"]),
    ('currency = "EUR"', 'currency = "E U R"', ["currency", "'E U R'"]),
    ('kind = "recommendation"', 'kind = "recommendation"\ndiscount = 0.1', ["discount", "coupon"]),
    ('channel = "push"\ncost = 0.01', 'channel = "push"', ["missing", "cost"]),
    ("total = 5000.0", "", ["total"]),
]


@pytest.mark.parametrize(("old", "new", "expected"), BAD, ids=[b[1] or "no-total" for b in BAD])
def test_bad_file_names_the_file_key_and_value(tmp_path, old, new, expected):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_actions(path)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message, message


def test_none_action_takes_no_other_key(tmp_path):
    text = GOOD + '\n[[action]]\nname = "none"\ncost = 1.0\n'
    with pytest.raises(ConfigError, match=r"'none'.*remove cost"):
        load_actions(write(tmp_path, text))


def test_missing_budget_table(tmp_path):
    text = GOOD.split("[caps]")[1]
    with pytest.raises(ConfigError, match=r"\[budget\] is missing"):
        load_actions(write(tmp_path, "[caps]" + text))


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, GOOD.replace("cost = 0.01", "cost = = 0.01"))
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 15") as info:
        load_actions(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_actions(tmp_path / "nope.toml")


def test_only_none_is_not_a_catalogue():
    with pytest.raises(ConfigError, match="no action besides 'none'"):
        ActionCatalogue.from_dict({"budget": {"total": 1.0}, "action": [{"name": "none"}]})


def test_from_dict_and_positional_dataclasses():
    catalogue = ActionCatalogue.from_dict(
        {
            "budget": {"total": 10},
            "action": [{"name": "sms", "kind": "recommendation", "channel": "sms", "cost": 0.1}],
        }
    )
    assert catalogue.names == (NONE, "sms")
    assert catalogue.budget == Budget(10.0)
    built = ActionCatalogue((Action("sms", "recommendation", "sms", 0.1),), Budget(10.0))
    assert built == catalogue


def test_default_catalogue_ships_with_the_package():
    resource = resources.files("ebbtide.activate") / "default_actions.toml"
    assert resource.is_file()
    catalogue = default_actions()
    assert catalogue.names[0] == NONE
    assert catalogue.budget.total > 0 and catalogue.budget.objective == "conversions"
    assert {a.kind for a in catalogue.actions if a.is_contact} == {"recommendation", "coupon"}
    # every action carries a margin, so the margin objective is one override away
    assert override(catalogue, objective="margin").budget.objective == "margin"


def test_override_replaces_and_validates():
    catalogue = default_actions()
    changed = override(catalogue, budget=1234.0, max_contacts=10, min_days_between_contacts=0)
    assert changed.budget.total == 1234.0
    assert changed.caps == Caps(0.0, 10)
    assert changed.actions == catalogue.actions
    assert override(catalogue) == catalogue
    with pytest.raises(ConfigError, match="total"):
        override(catalogue, budget=-5.0)
    with pytest.raises(ConfigError, match="objective"):
        override(catalogue, objective="clicks")
