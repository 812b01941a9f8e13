"""Batch scoring: every query a model answers, for every user, as one table.

`score_users` asks the model each question it answers at one instant, on one `History`,
and joins the answers on ``user_id``; a query the family does not answer leaves its
columns out rather than inventing numbers. Everything is vectorised inside the queries,
so a million users are one call each, not a million.
"""

from __future__ import annotations

import dataclasses
import importlib
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ebbtide.errors import ConfigError, UnsupportedQueryError
from ebbtide.features.history import History
from ebbtide.models.base import Model, registered_families

#: Registry of the families `ebbtide train --model` builds, by name.
FAMILIES = ("popular", "btyd", "gbdt", "decay", "neural")


def build_model(name: str, **settings: Any) -> Model:
    """A fresh model of the family `name`: its default config with `settings` changed."""
    families = available_families()
    if name not in families:
        raise ConfigError(
            f"no model family {name!r} in this ebbtide; use one of {', '.join(families)}"
        )
    family = registered_families()[name]
    known = {field.name for field in dataclasses.fields(family.config_class)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"the {name} model has no setting {', '.join(unknown)};"
            f" it has {', '.join(sorted(known))}"
        )
    return family(family.config_class(**settings))


def available_families() -> list[str]:
    """Names of the families this installation can train (each module registers itself)."""
    for name in FAMILIES:
        try:
            importlib.import_module(f"ebbtide.models.{name}")
        except ModuleNotFoundError:
            continue
    return sorted(registered_families())


def score_users(
    model: Model, history: History, *, horizon: timedelta, k: int = 10, top_categories: int = 3
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """One row per user with events in `history`, and the per-(user, category) table.

    Every query the model answers is asked once, at ``history.at``, on the same history.

    Returns
    -------
    users : DataFrame
        user_id, then whichever of p_return, expected_return_days, p_buy,
        top_categories (list), top_category_p_engage (list), top_category_half_life_days
        (list), top_items (list) the model answers.
    categories : DataFrame or None
        user_id, category_id, p_engage, level, baseline, excitation, half_life_days;
        None when the model has no notion of interest.
    """
    if not model.answers & {"p_return", "expected_return_time", "p_buy", "interest", "recommend"}:
        raise UnsupportedQueryError(f"the {model.name} model answers no scoring query")
    answers = []
    if "p_return" in model.answers:
        answers.append(model.p_return(history, horizon=horizon))
    if "expected_return_time" in model.answers:
        answers.append(model.expected_return_time(history))
    if "p_buy" in model.answers:
        answers.append(model.p_buy(history, horizon=horizon))
    categories = None
    if "interest" in model.answers:
        categories = model.interest(history, horizon=horizon)
        top = (
            categories.sort_values(  # ties: in the order the model ranked them
                ["user_id", "p_engage"], ascending=[True, False], kind="stable"
            )
            .groupby("user_id", sort=False)
            .head(top_categories)
        )
        answers.append(
            _lists(
                top,
                top_categories="category_id",
                top_category_p_engage="p_engage",
                top_category_half_life_days="half_life_days",
            )
        )
    if "recommend" in model.answers:
        answers.append(_lists(model.recommend(history, k=k), top_items="item_id"))
    table = answers[0]
    for answer in answers[1:]:
        table = table.merge(answer, on="user_id", how="outer")
    return table.sort_values("user_id", kind="stable").reset_index(drop=True), categories


def _lists(frame: pd.DataFrame, **columns: str) -> pd.DataFrame:
    """One row per user of `frame` (its rows grouped by user_id), each named column's
    values as a list, in row order.

    Arrow cuts the lists at the users' offsets in one call: pandas' ``agg(list)`` makes a
    Series per user, most of the scoring time on a million users.
    """
    users = frame["user_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if users.size else users
    offsets = pa.array(np.append(starts, users.size).astype(np.int64), type=pa.int64())
    out = {"user_id": users[starts] if users.size else users}
    for name, source in columns.items():
        values = pa.array(frame[source].to_numpy())
        out[name] = pa.LargeListArray.from_arrays(offsets, values).to_pylist()
    return pd.DataFrame(out)
