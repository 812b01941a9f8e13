"""ebbtide: interest decay, return prediction and re-activation from behaviour logs.

Start with the event store and a reader::

    from ebbtide import EventStore, ingest_file
    with EventStore("shop.duckdb") as store:
        summary = ingest_file(store, "events.csv.gz", "taobao")
"""

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
