"""The barrier tasks' sums: every task gets the same bits, added in partition order."""

from __future__ import annotations

import numpy as np


def test_both_reducers_give_every_task_the_same_ordered_sum(spark) -> None:
    def sums(batches):  # nested: pickled by value, so workers need not import this module
        import numpy as np
        import pyarrow as pa
        from pyspark import BarrierTaskContext

        from ebbtide.spark.reducers import AllGatherReducer, SocketReducer

        context = BarrierTaskContext.get()
        list(batches)
        mine = np.random.default_rng(context.partitionId()).normal(size=1000) * 1e6
        with SocketReducer(context) as hub:
            by_socket = [hub.sum(mine), hub.sum(mine[:3])]
        by_all_gather = AllGatherReducer(context).sum(mine)
        yield pa.RecordBatch.from_pydict(
            {
                "partition": [context.partitionId()],
                "socket": [by_socket[0].tobytes()],
                "short": [by_socket[1].tobytes()],
                "all_gather": [by_all_gather.tobytes()],
            }
        )

    schema = "partition long, socket binary, short binary, all_gather binary"
    rows = spark.range(8).repartition(2).mapInArrow(sums, schema, barrier=True).collect()
    assert sorted(r["partition"] for r in rows) == [0, 1]
    parts = [np.random.default_rng(p).normal(size=1000) * 1e6 for p in (0, 1)]
    expected = np.zeros(1000) + parts[0] + parts[1]
    for row in rows:
        assert row["socket"] == expected.tobytes()
        assert row["all_gather"] == expected.tobytes()
        assert row["short"] == expected[:3].tobytes()
