"""decay fitted over partitions of users equals the fit of the whole log.

The partitions run in threads of this process and sum through a barrier, the way Spark's
tasks sum through their all-gather: same numbers in the same order on every worker.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ebbtide.features.history import Catalogue, snapshot
from ebbtide.models.decay import DecayConfig, DecayModel
from ebbtide.models.decay_em import LOCAL_REDUCER, reduce_parts
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)


class BarrierReducer:
    """Workers in threads: each posts its vector, all wait, each adds them in worker order."""

    def __init__(self, workers: int) -> None:
        self.parts: list[np.ndarray | None] = [None] * workers
        self.barrier = threading.Barrier(workers)

    def for_worker(self, rank: int):
        outer = self

        class _Worker:
            def sum(self, values: np.ndarray) -> np.ndarray:
                outer.parts[rank] = np.asarray(values, dtype=np.float64).copy()
                outer.barrier.wait()
                total = np.zeros_like(outer.parts[rank])
                for part in outer.parts:
                    total = total + part
                outer.barrier.wait()  # everyone has read before the next round writes
                return total

        return _Worker()


def _fit_in_partitions(store: EventStore, workers: int, config: DecayConfig) -> DecayModel:
    history = snapshot(store, at=CUT)
    local = Catalogue.empty().localise(history)
    events = local.events
    start = float(np.quantile(events.t, 0.001))
    owner = np.arange(events.n_users) % workers  # users spread over workers
    reducer = BarrierReducer(workers)
    parts: list[dict | None] = [None] * workers
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            model = DecayModel(config)
            model.cutoff_ = history.at
            mine = events.select(owner[events.user_idx] == rank)
            parts[rank] = model.fit_partition(mine, start=start, reducer=reducer.for_worker(rank))
        except BaseException as error:  # surfaced below, not lost in the thread
            errors.append(error)
            reducer.barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return DecayModel.from_partitions(
        config, cutoff=history.at, catalogue=local.catalogue, parts=parts
    )


# the default, and a validation refit on a sample of users (a log past validation_events)
CONFIGS = [DecayConfig(), DecayConfig(validation_events=30_000)]


@pytest.mark.parametrize("config", CONFIGS, ids=["whole-validation", "sampled-validation"])
def test_three_partitions_equal_the_whole_log(taobao: EventStore, config: DecayConfig) -> None:
    whole = DecayModel(config).fit(taobao, cutoff=CUT)
    parted = _fit_in_partitions(taobao, workers=3, config=config)
    for name in DecayModel.state_attributes:
        np.testing.assert_allclose(
            np.asarray(getattr(parted, name), dtype=np.float64),
            np.asarray(getattr(whole, name), dtype=np.float64),
            rtol=1e-9,
            atol=1e-12,
            err_msg=name,
        )
    at = snapshot(taobao, at=CUT)
    week = timedelta(days=7)
    np.testing.assert_allclose(
        parted.p_return(at, horizon=week)["p_return"],
        whole.p_return(at, horizon=week)["p_return"],
        rtol=1e-9,
    )


def test_reduce_parts_hands_back_what_it_was_given() -> None:
    scalar, vector = reduce_parts(LOCAL_REDUCER, 2.5, np.array([1.0, 2.0]))
    assert scalar.tolist() == [2.5]
    assert vector.tolist() == [1.0, 2.0]
