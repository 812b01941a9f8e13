"""Batch scoring: every query a model answers, for every user, as one table.

`score_users` asks the model each question at one instant and joins the answers on
``user_id``; a family that does not answer a query leaves its columns out rather than
inventing numbers. Everything is vectorised inside the queries, so a million users are
one call each, not a million.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from ebbtide.errors import ConfigError, UnsupportedQueryError
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
    model: Model, *, at: datetime, horizon: timedelta, k: int = 10, top_categories: int = 3
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """One row per user with history before `at`, and the per-(user, category) table.

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
    table: pd.DataFrame | None = None
    for query in (
        lambda: model.p_return(at=at, horizon=horizon),
        lambda: model.expected_return_time(at=at),
        lambda: model.p_buy(at=at, horizon=horizon),
    ):
        try:
            answer = query()
        except UnsupportedQueryError:
            continue
        table = answer if table is None else table.merge(answer, on="user_id", how="outer")
    categories = None
    with contextlib.suppress(UnsupportedQueryError):
        categories = model.interest(at=at, horizon=horizon)
    if categories is not None:
        top = (
            categories.sort_values(["user_id", "p_engage"], ascending=[True, False])
            .groupby("user_id", sort=False)
            .head(top_categories)
            .groupby("user_id", sort=False)
            .agg(
                top_categories=("category_id", list),
                top_category_p_engage=("p_engage", list),
                top_category_half_life_days=("half_life_days", list),
            )
            .reset_index()
        )
        table = top if table is None else table.merge(top, on="user_id", how="left")
    try:
        recs = model.recommend(at=at, k=k)
        items = recs.groupby("user_id", sort=False)["item_id"].agg(list).rename("top_items")
        items = items.reset_index()
        table = items if table is None else table.merge(items, on="user_id", how="left")
    except UnsupportedQueryError:
        pass
    if table is None:
        raise UnsupportedQueryError(f"the {model.name} model answers no scoring query")
    return table.sort_values("user_id", kind="stable").reset_index(drop=True), categories
