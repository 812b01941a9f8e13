"""The model's numbering of a lake's users, items and categories, as `Catalogue.localise`
gives it.

Why the same numbering: a decay model's pairs are keyed by user and category code, and a
model fitted in Spark must be the model a local fit gives (and answer the same for the
same user). The rule is `localise`'s: codes the model was fitted with are kept; ids new to
it follow in id order (a store numbers one load's ids in that order); events without a
category go to the implicit category `UNCATEGORISED`, after every other new category.

The distinct ids are gathered on the driver (they become the model's `Catalogue` anyway)
and joined back to the events as tables of (id, code) of the ids present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ebbtide.features.history import UNCATEGORISED, Catalogue

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["Numbered", "codes_for", "number_events"]

#: Columns of numbered events: codes, behaviour code and time in µs since the epoch.
NUMBERED_FIELDS = ("user", "item", "category", "behavior", "micros")


@dataclass(frozen=True)
class Numbered:
    """Events in a model's numbering, and the id of every code.

    Attributes
    ----------
    events : DataFrame
        ``user``, ``item``, ``category`` (int32 codes), ``behavior`` (int8), ``micros``
        (int64), plus ``user_id`` when asked for.
    catalogue : Catalogue
        Fitted ids first (when numbering for a fitted model), then the new ones.
    """

    events: DataFrame
    catalogue: Catalogue

    @property
    def sizes(self) -> tuple[int, int, int]:
        """(users, items, categories): the sizes `EventArrays` of a partition carry."""
        c = self.catalogue
        return int(c.user_ids.size), int(c.item_ids.size), int(c.category_ids.size)


def codes_for(fitted: np.ndarray, present: np.ndarray, last: str | None = None) -> np.ndarray:
    """Every id's code: fitted ids keep theirs, new ids follow in sorted order (`last`,
    when new, after them all). Returns the ids of all codes (fitted, then new).

    Examples
    --------
    >>> codes_for(np.array(["b", "a"], dtype=object), np.array(["c", "a", "0"], dtype=object))
    array(['b', 'a', '0', 'c'], dtype=object)
    """
    fitted_index = pd.Index(fitted, dtype=object)
    present = np.asarray(present, dtype=object)
    new = present[fitted_index.get_indexer(pd.Index(present, dtype=object)) < 0]
    tail = new[new == last] if last is not None else new[:0]
    new = np.sort(new[new != last]) if last is not None else np.sort(new)
    return np.concatenate([np.asarray(fitted, dtype=object), new, tail]).astype(object)


def number_events(
    events: DataFrame, catalogue: Catalogue | None = None, *, keep_user_id: bool = False
) -> Numbered:
    """Number `events` (canonical, checked: see `ebbtide.spark.lake`) for a model.

    Parameters
    ----------
    events : DataFrame
        ``user_id``, ``item_id``, ``category_id`` (NULL: none), ``behavior``, ``micros``.
    catalogue : Catalogue, optional
        A fitted model's; default: a fit's numbering from scratch.
    keep_user_id : bool
        Keep the ``user_id`` column (scoring writes it; a fit does not need it).
    """
    from pyspark.sql import functions as F

    spark = events.sparkSession
    fitted = catalogue or Catalogue.empty()
    events = events.withColumn(
        "category_id", F.coalesce(F.col("category_id"), F.lit(UNCATEGORISED))
    )
    ids = {}
    joined = events
    for column, code, known, last in (
        ("user_id", "user", fitted.user_ids, None),
        ("item_id", "item", fitted.item_ids, None),
        ("category_id", "category", fitted.category_ids, UNCATEGORISED),
    ):
        present = events.select(column).distinct().toArrow().column(0)
        ids[column] = codes_for(known, present.to_numpy(zero_copy_only=False), last)
        codes = pa.table(
            {column: pa.array(ids[column], pa.string()), code: np.arange(ids[column].size)}
        )
        in_use = codes.filter(pc.is_in(codes.column(column), value_set=present))
        joined = joined.join(spark.createDataFrame(in_use), column)
    kept = ["user_id"] if keep_user_id else []
    numbered = joined.select(
        F.col("user").cast("int"),
        F.col("item").cast("int"),
        F.col("category").cast("int"),
        F.col("behavior").cast("tinyint"),
        F.col("micros").cast("long"),
        *kept,
    )
    return Numbered(
        events=numbered,
        catalogue=Catalogue(ids["user_id"], ids["item_id"], ids["category_id"]),
    )
