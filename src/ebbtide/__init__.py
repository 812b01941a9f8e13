"""ebbtide: interest decay, return prediction and re-activation from behaviour logs.

Start with the event store and a reader, then a model, a plan and the report::

    import ebbtide
    from datetime import datetime, timedelta, UTC
    with ebbtide.EventStore("shop.duckdb") as store:
        summary = ebbtide.ingest_file(store, "events.csv.gz", "taobao")
        cutoff = datetime(2017, 12, 3, tzinfo=UTC)
        model = ebbtide.build_model("decay").fit(store, cutoff=cutoff)
        now = ebbtide.snapshot(store, at=cutoff)  # the events before `cutoff`, read once
        users, categories = ebbtide.score_users(model, now, horizon=timedelta(days=7))
        plan = ebbtide.plan(model, store, at=cutoff)
        ebbtide.write_report(store, "report.html")

The heavier parts (models, planning, report) load on first use, so ``import ebbtide``
stays quick for a command that only ingests.
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

#: Lazily imported names: attribute -> (module, name in it).
_LAZY = {
    "snapshot": ("ebbtide.features.history", "snapshot"),
    "History": ("ebbtide.features.history", "History"),
    "build_model": ("ebbtide.models.scoring", "build_model"),
    "score_users": ("ebbtide.models.scoring", "score_users"),
    "BTYDModel": ("ebbtide.models.btyd", "BTYDModel"),
    "DecayModel": ("ebbtide.models.decay", "DecayModel"),
    "GBDTModel": ("ebbtide.models.gbdt", "GBDTModel"),
    "NeuralModel": ("ebbtide.models.neural", "NeuralModel"),
    "PopularModel": ("ebbtide.models.popular", "PopularModel"),
    "temporal_holdout": ("ebbtide.evaluate.temporal", "temporal_holdout"),
    "leave_one_out": ("ebbtide.evaluate.leave_one_out", "leave_one_out"),
    "assign_segments": ("ebbtide.activate.segments", "assign_segments"),
    "early_warning": ("ebbtide.activate.segments", "early_warning"),
    "default_actions": ("ebbtide.activate.actions", "default_actions"),
    "plan": ("ebbtide.activate.reactivation", "plan_reactivation"),
    "write_report": ("ebbtide.report", "write_report"),
}


def __getattr__(name: str) -> object:
    """Import a heavy name (a model, `plan`, `write_report`) on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'ebbtide' has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


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
    *_LAZY,
]
