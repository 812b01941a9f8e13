"""Users to partitions, and one partition's rows to `EventArrays` with global codes.

Why whole users per partition: everything decay learns or answers about a user reads that
user's events only (the pairs are (user, category)), so a partition of whole users is
fitted and scored as the local engine would, and only a few category-level sums cross
partitions. Rows are sorted as `load_events` sorts them (user, time, behaviour, item), and
times become days with DuckDB's own arithmetic, so the arrays are bit for bit those of a
local store.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ebbtide.features.sequences import EventArrays

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["by_user", "epoch_days", "partition_arrays"]

#: The sort of `ebbtide.features.sequences.load_events` (``ORDER BY user_idx, ts, behavior,
#: item_idx``), in the numbered columns.
SORT = ("user", "micros", "behavior", "item")


def by_user(events: DataFrame, partitions: int) -> DataFrame:
    """Whole users per partition (hash of the code), each partition sorted as `SORT`."""
    return events.repartition(partitions, "user").sortWithinPartitions(*SORT)


def epoch_days(micros: np.ndarray) -> np.ndarray:
    """µs since the epoch as days, exactly as the store computes them.

    The store's ``epoch(ts) / 86400`` on a TIMESTAMPTZ goes through ICU, which adds whole
    milliseconds and the microseconds left as two divisions; plain ``micros / 1e6`` differs
    in the last bit for about one time in four.
    """
    micros = np.asarray(micros, dtype=np.int64)
    millis, rest = np.divmod(micros, 1000)
    return (millis / 1e3 + rest / 1e6) / 86_400.0


def partition_arrays(
    batches: Iterable[pa.RecordBatch],
    *,
    n_users: int,
    n_items: int,
    n_categories: int,
    before: datetime,
) -> EventArrays:
    """One partition's rows (sorted by `by_user`) as `EventArrays` over every user.

    Codes stay global: ``n_users`` etc. are the sizes of the whole numbering, and users of
    other partitions have empty runs, so a model's per-user arrays index the same way on
    every partition.
    """
    batches = list(batches)
    if batches:
        table = pa.Table.from_batches(batches).combine_chunks()
    else:
        table = pa.table(
            {
                "user": pa.array([], pa.int32()),
                "item": pa.array([], pa.int32()),
                "category": pa.array([], pa.int32()),
                "behavior": pa.array([], pa.int8()),
                "micros": pa.array([], pa.int64()),
            }
        )

    def column(name: str, dtype: type) -> np.ndarray:
        return np.asarray(table.column(name).to_numpy(), dtype=dtype)

    user = column("user", np.int32)
    offsets = np.searchsorted(user, np.arange(n_users + 1), side="left").astype(np.int64)
    return EventArrays(
        user_idx=user,
        item_idx=column("item", np.int32),
        category_idx=column("category", np.int32),
        behavior=column("behavior", np.int8),
        t=epoch_days(column("micros", np.int64)),
        offsets=offsets,
        n_users=n_users,
        n_items=n_items,
        n_categories=n_categories,
        before=before,
    )
