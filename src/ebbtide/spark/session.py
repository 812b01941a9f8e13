"""The SparkSession every Spark stage runs in.

Why one factory: results must not depend on the machine running them, so the session's
time zone is pinned to UTC (Spark's default is the JVM's zone), and a local session uses
this interpreter for its Python workers (otherwise Spark starts whatever ``python3`` is
first on PATH, which need not have ebbtide, numpy or pyarrow).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ebbtide.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["DEFAULT_MASTER", "require_pyspark", "spark_session"]

#: Every core of this machine; a cluster URL (spark://, yarn, k8s://) runs on that cluster.
DEFAULT_MASTER = "local[*]"


def require_pyspark() -> None:
    """Raise a `ConfigError` naming the extra to install when PySpark is missing."""
    try:
        import pyspark  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError(
            "the Spark engine needs PySpark: pip install 'ebbtide[spark]' (or pyspark>=4.0)"
        ) from None


def spark_session(
    master: str = DEFAULT_MASTER,
    *,
    app_name: str = "ebbtide",
    shuffle_partitions: int | None = None,
    driver_memory: str | None = None,
    extra: dict[str, str] | None = None,
) -> SparkSession:
    """A SparkSession on `master`, in UTC, with quiet logs and no UI.

    Parameters
    ----------
    master : str
        ``local[*]``, ``local[N]`` or a cluster URL.
    shuffle_partitions : int, optional
        ``spark.sql.shuffle.partitions``; default: the session's default parallelism
        (the number of task slots), which is also how many partitions a fit uses.
    driver_memory : str, optional
        e.g. ``"1g"``; only takes effect when this call starts the JVM.
    extra : dict, optional
        Further Spark settings.

    Raises
    ------
    ConfigError
        PySpark is not installed, or `master` is empty.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    if not master.strip():
        raise ConfigError("--spark-master is empty: use local[*], local[2] or a cluster URL")
    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    if driver_memory is not None:
        builder = builder.config("spark.driver.memory", driver_memory)
    for key, value in (extra or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    partitions = shuffle_partitions or spark.sparkContext.defaultParallelism
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    return spark
