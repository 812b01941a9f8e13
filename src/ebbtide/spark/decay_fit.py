"""Fit `decay` in Spark: every partition of users runs the EM, the global sums go between
barrier tasks.

Why barrier mode: the EM alternates per-pair work (local to a partition) with a few
category-level sums over all users, a hundred times per fit. Barrier tasks all run at once
and can meet: each call of `reducer.sum` adds every task's vector in partition order, so
all tasks get the bit-identical sum and take the same steps (`ebbtide.models.decay_em`);
`ebbtide.spark.reducers` says how the vectors travel. The driver then assembles the model
from each partition's state with `DecayModel.from_partitions`.

A barrier stage needs a free task slot per partition, so the fit uses the session's default
parallelism (its slots) as the number of partitions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ebbtide.errors import ConfigError, EbbtideError
from ebbtide.spark.lake import micros_of
from ebbtide.spark.numbering import number_events
from ebbtide.spark.partitions import by_user, epoch_days, partition_arrays

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from ebbtide.models.decay import DecayConfig, DecayModel

__all__ = ["EXCHANGES", "event_time_quantile", "fit_decay", "numpy_linear_quantile"]

#: The quantile of event times a decay fit starts its window at (as `DecayModel._fit`).
START_QUANTILE = 0.001
#: Largest piece of one state array per output row (Arrow binary cells stay small).
_CHUNK_BYTES = 1 << 26
_STATE_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.int64()),
        pa.field("name", pa.string()),
        pa.field("dtype", pa.string()),
        pa.field("ndim", pa.int64()),
        pa.field("piece", pa.int64()),
        pa.field("data", pa.binary()),
    ]
)
_STATE_DDL = "partition long, name string, dtype string, ndim long, piece long, data binary"
_METRICS = "__metrics__"
#: How the barrier tasks sum: a TCP hub met through one all-gather, or an all-gather per
#: sum (about a second each: see `ebbtide.spark.reducers`).
EXCHANGES = ("socket", "all_gather")


def numpy_linear_quantile(n: int, q: float, value_at: Callable[[int], float]) -> float:
    """``np.quantile(x, q)`` (method "linear") of a sorted array of size `n` known only
    through ``value_at(i)``: the same two order statistics and the same arithmetic, so
    the same bits, without holding the array.

    Examples
    --------
    >>> x = [1.0, 2.0, 4.0, 8.0]
    >>> numpy_linear_quantile(len(x), 0.4, x.__getitem__) == float(np.quantile(x, 0.4))
    True
    """
    if n < 1:
        raise ConfigError("a quantile of no values: there are no events before the cut-off")
    virtual = (n - 1) * q
    if virtual >= n - 1:
        return float(value_at(n - 1))
    below = math.floor(virtual)
    a, b = float(value_at(below)), float(value_at(below + 1))
    gamma = virtual - below
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def event_time_quantile(events: DataFrame, q: float = START_QUANTILE) -> float:
    """`q`-quantile of the events' times in days, as ``np.quantile(events.t, q)``.

    Exact: Spark returns the few smallest times (a top-k, not a sort of the log) and the
    interpolation is numpy's own arithmetic (`numpy_linear_quantile`).
    """
    from pyspark.sql import functions as F

    n = events.count()
    if n == 0:
        raise EbbtideError("no events before the cut-off: nothing to learn from")
    need = min(math.floor((n - 1) * q) + 2, n)
    smallest = events.select("micros").orderBy("micros").limit(need).toArrow().column(0).to_numpy()
    # the largest time is only read when q is near 1
    top = events.agg(F.max("micros")).collect()[0][0] if n - 1 >= need else smallest[-1]
    largest = int(top)
    days = epoch_days(np.asarray(smallest, dtype=np.int64))

    def value_at(i: int) -> float:
        return float(days[i]) if i < days.size else float(epoch_days(np.array([largest]))[0])

    return numpy_linear_quantile(n, q, value_at)


@dataclass(frozen=True)
class _FitJob:
    """What every barrier task needs."""

    config: dict[str, Any]
    cutoff: datetime
    start: float
    sizes: tuple[int, int, int]
    exchange: str


def fit_decay(
    events: DataFrame,
    *,
    cutoff: datetime,
    config: DecayConfig | None = None,
    partitions: int | None = None,
    exchange: str = "socket",
) -> DecayModel:
    """Fit `decay` on the events before `cutoff`, over partitions of users in Spark.

    Parameters
    ----------
    events : DataFrame
        Checked events (`LakeEvents.valid`, or `LakeEvents.before(cutoff)`); those at
        or after `cutoff` are left out here.
    partitions : int, optional
        Default, and at most: the session's default parallelism (its task slots); a
        barrier stage cannot start with more partitions than slots.
    exchange : {"socket", "all_gather"}
        How the tasks sum (`EXCHANGES`); "all_gather" costs about a second per sum.

    Returns
    -------
    DecayModel
        Fitted, with the catalogue of the lake's numbering; equal to a local fit on the
        same events.

    Raises
    ------
    EbbtideError
        No events before `cutoff`, or the barrier stage cannot get a slot per partition.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from ebbtide.models.decay import DecayConfig, DecayModel

    config = config or DecayConfig()
    if exchange not in EXCHANGES:
        raise ConfigError(f"exchange={exchange!r}: use one of {', '.join(EXCHANGES)}")
    spark = events.sparkSession
    slots = spark.sparkContext.defaultParallelism
    n = partitions or slots
    if n > slots:
        raise ConfigError(
            f"a decay fit runs {n} barrier tasks at once but the session has {slots} task"
            f" slots: use at most {slots} partitions, or a master with more cores"
        )
    # read once: numbering scans the events three times, the fit once more
    before = events.where(F.col("micros") < F.lit(micros_of(cutoff)))
    before.persist(StorageLevel.MEMORY_AND_DISK)
    numbered = number_events(before)
    numbered.events.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        start = event_time_quantile(numbered.events)  # fills the numbered events' cache
        before.unpersist()
        job = _FitJob(asdict(config), cutoff, start, numbered.sizes, exchange)
        shared = spark.sparkContext.broadcast(job)

        def fit(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            yield from _fit_partition(batches, shared.value)

        stage = by_user(numbered.events, n).mapInArrow(fit, _STATE_DDL, barrier=True)
        rows = _barrier_collect(stage, n, slots)
    finally:
        numbered.events.unpersist()
        before.unpersist()
    parts, metrics = _parts_of(rows)
    return DecayModel.from_partitions(
        config, cutoff=cutoff, catalogue=numbered.catalogue, parts=parts, metrics=metrics
    )


def _barrier_collect(frame: DataFrame, n: int, slots: int) -> pa.Table:
    """Run the barrier stage; a failure to launch says what it needs."""
    try:
        return frame.toArrow()
    except Exception as exc:
        text = str(exc)
        if "barrier" in text.lower() and ("slot" in text.lower() or "BARRIER" in text):
            raise EbbtideError(
                f"Spark could not launch the decay fit's {n} barrier tasks at once (the session"
                f" has {slots} task slots by its default parallelism): free the cluster's"
                f" slots or lower the partitions. Spark said: {text.splitlines()[0]}"
            ) from None
        raise


def _fit_partition(batches: Iterator[pa.RecordBatch], job: _FitJob) -> Iterator[pa.RecordBatch]:
    """One barrier task: this partition's users fitted, its state as rows."""
    from pyspark import BarrierTaskContext

    from ebbtide.models.decay import DecayConfig, DecayModel
    from ebbtide.spark.reducers import AllGatherReducer, SocketReducer

    context = BarrierTaskContext.get()
    _threads_for(context)
    n_users, n_items, n_categories = job.sizes
    events = partition_arrays(
        batches, n_users=n_users, n_items=n_items, n_categories=n_categories, before=job.cutoff
    )
    model = DecayModel(DecayConfig(**job.config))
    model.cutoff_ = job.cutoff
    kind = SocketReducer if job.exchange == "socket" else AllGatherReducer
    reducer = kind(context)
    try:
        state = model.fit_partition(events, start=job.start, reducer=reducer)
    finally:
        reducer.close()
    partition = context.partitionId()
    rows: dict[str, list] = {f.name: [] for f in _STATE_SCHEMA}

    def add(name: str, dtype: str, ndim: int, data: bytes) -> None:
        for piece, lo in enumerate(range(0, max(len(data), 1), _CHUNK_BYTES)):
            for key, value in zip(
                rows,
                (partition, name, dtype, ndim, piece, data[lo : lo + _CHUNK_BYTES]),
                strict=True,
            ):
                rows[key].append(value)

    for name, value in state.items():
        array = np.asarray(value)
        add(name, array.dtype.str, array.ndim, np.ascontiguousarray(array).tobytes())
    if partition == 0:
        add(_METRICS, "json", 0, json.dumps(model.metrics_).encode())
    yield pa.RecordBatch.from_pydict(rows, schema=_STATE_SCHEMA)


def _threads_for(context: Any) -> None:
    """The compiled EM uses this task's CPUs, not every core: tasks share the machine."""
    import numba

    cpus = max(1, int(context.cpus()))
    numba.set_num_threads(min(cpus, numba.config.NUMBA_NUM_THREADS))


def _parts_of(rows: pa.Table) -> tuple[list[dict[str, np.ndarray]], dict]:
    """Each partition's state arrays (in partition order) and the fit's metrics."""
    table = rows.sort_by(
        [("partition", "ascending"), ("name", "ascending"), ("piece", "ascending")]
    )
    data = table.to_pydict()
    pieces: dict[tuple[int, str], list] = {}
    for partition, name, dtype, ndim, data_piece in zip(
        data["partition"], data["name"], data["dtype"], data["ndim"], data["data"], strict=True
    ):
        entry = pieces.setdefault((partition, name), [dtype, ndim, []])
        entry[2].append(data_piece)
    parts: dict[int, dict[str, np.ndarray]] = {}
    metrics: dict = {}
    for (partition, name), (dtype, ndim, chunks) in pieces.items():
        blob = b"".join(chunks)
        if name == _METRICS:
            metrics = json.loads(blob)
            continue
        array = np.frombuffer(blob, dtype=np.dtype(dtype)).copy()
        parts.setdefault(partition, {})[name] = array.reshape(()) if ndim == 0 else array
    return [parts[p] for p in sorted(parts)], metrics
