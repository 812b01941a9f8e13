"""ebbtide: interest decay, return prediction and re-activation from behaviour logs.

Start with the event store and a reader::

    from ebbtide import EventStore, ingest_file
    with EventStore("shop.duckdb") as store:
        summary = ingest_file(store, "events.csv.gz", "taobao")
"""

import os

# PyTorch and scikit-learn each bring their own OpenMP runtime. With both in one process
# (a plan scored by `neural` and priced by uplift learners, or the test suite), their worker
# threads busy-wait against each other on a small machine and a gradient-boosting fit that
# takes a second can take minutes. Passive waiting avoids that; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ebbtide.errors import EbbtideError
from ebbtide.ingest import ColumnMapping, FormatName, Pseudonymiser, ingest_file
from ebbtide.schema import Behavior
from ebbtide.store import EventStore, IngestSummary, StoreStats

__version__ = "0.1.0"

__all__ = [
    "Behavior",
    "ColumnMapping",
    "EbbtideError",
    "EventStore",
    "FormatName",
    "IngestSummary",
    "Pseudonymiser",
    "StoreStats",
    "__version__",
    "ingest_file",
]
