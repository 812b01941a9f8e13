"""One small local Spark for every Spark test, and the bundled sample as a lake."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ebbtide.store import EventStore


@pytest.fixture(scope="session")
def spark():
    """``local[2]``: two task slots, so a decay fit runs two barrier tasks; UTC, no UI,
    two shuffle partitions, a small driver, quiet logs."""
    from ebbtide.spark.session import spark_session

    session = spark_session(
        "local[2]",
        app_name="ebbtide-tests",
        shuffle_partitions=2,
        driver_memory="1g",
        extra={"spark.sql.adaptive.enabled": "false", "spark.default.parallelism": "2"},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def taobao_lake(taobao: EventStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's events as a store keeps them, written out as one Parquet file."""
    path = tmp_path_factory.mktemp("lake") / "events.parquet"
    pq.write_table(taobao.events(), path)
    return path
