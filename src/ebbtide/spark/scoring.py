"""Score every user of a lake with a fitted `decay` model, in Spark, as Parquet.

Why this equals ``ebbtide score``: each partition holds whole users with the model's codes
(`numbering`, `partitions`), and every answer of decay about a user reads only that user's
events and the model's state, which each task receives once (a broadcast). The partition
asks the same array-level queries `score_users` asks and reads segments with the same
`assign_segments`, so a user's numbers are the local ones.

Per user: ``p_return``, ``expected_return_days``, ``p_buy`` (when the model saw buys),
the top categories with their ``p_engage`` and half-lives, and the segment (``segment``,
``interest_now``, ``interest_change``, ``segment_reason``). Item recommendations are not
written: they rank items by the popularity of the whole log, which no partition holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ebbtide.errors import ConfigError, QueryTimeError
from ebbtide.features.sequences import to_days
from ebbtide.spark.numbering import number_events
from ebbtide.spark.partitions import by_user, partition_arrays

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from ebbtide.models.decay import DecayModel

__all__ = ["TOP_CATEGORIES", "score_events"]

#: Categories listed per user, as `score_users` lists them.
TOP_CATEGORIES = 3


@dataclass(frozen=True)
class _Job:
    """What every task needs: the model's state (not its catalogue), sizes and the query."""

    config: dict[str, Any]
    state: dict[str, np.ndarray]
    cutoff: datetime
    category_ids: np.ndarray
    sizes: tuple[int, int, int]
    at: datetime
    horizon: timedelta
    answers: frozenset[str]


def score_events(
    model: DecayModel,
    events: DataFrame,
    *,
    at: datetime,
    horizon: timedelta,
    partitions: int | None = None,
) -> DataFrame:
    """Every user with events before `at`, scored at `at` over `horizon` (a lazy DataFrame).

    Parameters
    ----------
    model : DecayModel
        Fitted (locally or in Spark); its catalogue numbers the events.
    events : DataFrame
        Checked events strictly before `at` (`LakeEvents.before`).
    partitions : int, optional
        Default: the session's default parallelism.

    Raises
    ------
    ConfigError
        The model is not a fitted decay model, or `horizon` is not positive.
    QueryTimeError
        `at` is before the model's cut-off.
    """
    from ebbtide.models.decay import DecayModel

    if not isinstance(model, DecayModel) or not model.is_fitted:
        raise ConfigError(
            "the Spark engine scores fitted decay models only: train one with"
            " `ebbtide train --model decay`, or score this one with --engine local"
        )
    if horizon <= timedelta(0):
        raise ConfigError(f"horizon={horizon} must be positive")
    if at < model.cutoff_:
        raise QueryTimeError(
            f"the decay model was fitted on events before {model.cutoff_.isoformat()} and"
            f" cannot answer at the earlier instant {at.isoformat()}: fit a model with"
            " cutoff at or before that instant"
        )
    spark = events.sparkSession
    numbered = number_events(events, model.catalogue_, keep_user_id=True)
    job = _Job(
        config=asdict(model.config),
        state=model._state(),
        cutoff=model.cutoff_,
        category_ids=numbered.catalogue.category_ids,
        sizes=numbered.sizes,
        at=at,
        horizon=horizon,
        answers=frozenset(model.answers),
    )
    shared = spark.sparkContext.broadcast(job)
    n = partitions or spark.sparkContext.defaultParallelism
    schema = _schema(job.answers)

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from _score_partition(batches, shared.value, schema)

    return by_user(numbered.events, n).mapInArrow(score, _ddl(schema))


def _schema(answers: frozenset[str]) -> pa.Schema:
    fields = [pa.field("user_id", pa.string()), pa.field("p_return", pa.float64())]
    fields.append(pa.field("expected_return_days", pa.float64()))
    if "p_buy" in answers:
        fields.append(pa.field("p_buy", pa.float64()))
    fields += [
        pa.field("top_categories", pa.list_(pa.string())),
        pa.field("top_category_p_engage", pa.list_(pa.float64())),
        pa.field("top_category_half_life_days", pa.list_(pa.float64())),
        pa.field("segment", pa.string()),
        pa.field("interest_now", pa.float64()),
        pa.field("interest_change", pa.float64()),
        pa.field("segment_reason", pa.string()),
    ]
    return pa.schema(fields)


def _ddl(schema: pa.Schema) -> str:
    names = {pa.string(): "string", pa.float64(): "double"}
    parts = []
    for f in schema:
        if pa.types.is_list(f.type):
            parts.append(f"{f.name} array<{names[f.type.value_type]}>")
        else:
            parts.append(f"{f.name} {names[f.type]}")
    return ", ".join(parts)


def _model(job: _Job) -> DecayModel:
    """The fitted model rebuilt from its state, without its (large) catalogue."""
    from ebbtide.models.decay import DecayConfig, DecayModel

    model = DecayModel(DecayConfig(**job.config))
    model._set_state(job.state)
    model.cutoff_ = job.cutoff
    return model


def _score_partition(
    batches: Iterator[pa.RecordBatch], job: _Job, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    from ebbtide.activate.segments import assign_segments

    batches = list(batches)
    user_ids = (
        pa.concat_arrays([b.column("user_id") for b in batches])
        if batches
        else pa.array([], pa.string())
    )
    n_users, n_items, n_categories = job.sizes
    events = partition_arrays(
        (b.drop_columns(["user_id"]) for b in batches),
        n_users=n_users,
        n_items=n_items,
        n_categories=n_categories,
        before=job.at,
    )
    users = np.flatnonzero(events.lengths() > 0)
    if users.size == 0:
        return
    model = _model(job)
    at, horizon = to_days(job.at), job.horizon / timedelta(days=1)
    ids = np.asarray(user_ids.take(pa.array(events.offsets[users])).to_pylist(), dtype=object)
    columns: dict[str, Any] = {
        "user_id": ids,
        "p_return": model._p_return(events, users, at, horizon),
        "expected_return_days": model._expected_return_days(events, users, at),
    }
    if "p_buy" in job.answers:
        columns["p_buy"] = model._p_buy(events, users, at, horizon)
    interest = model._interest(events, users, at, horizon)
    codes = interest.pop("user_idx")
    categories = pd.DataFrame(
        {
            "user_id": ids[np.searchsorted(users, codes)],
            "category_id": job.category_ids[interest.pop("category_idx")],
            **interest,
        }
    )
    top = categories.groupby("user_id", sort=False).head(TOP_CATEGORIES)
    lists = top.groupby("user_id", sort=False).agg(
        top_categories=("category_id", list),
        top_category_p_engage=("p_engage", list),
        top_category_half_life_days=("half_life_days", list),
    )
    table = pd.DataFrame(columns).join(lists, on="user_id")
    segments = assign_segments(table, categories, horizon=job.horizon).set_index("user_id")
    table["segment"] = segments["segment"].to_numpy()
    table["interest_now"] = segments["interest_now"].to_numpy()
    table["interest_change"] = segments["interest_change"].to_numpy()
    table["segment_reason"] = segments["reason"].to_numpy()
    for name in ("top_categories", "top_category_p_engage", "top_category_half_life_days"):
        table[name] = table[name].map(lambda v: v if isinstance(v, list) else [])
    yield from pa.Table.from_pandas(table, schema=schema, preserve_index=False).to_batches()
