"""From the store to arrays: per-user event sequences, splits in time, RFM features.

Everything here reads events strictly before an instant (`before`, `cutoff`, `at`), so a
feature computed at T can never see an event at or after T.
"""

from ebbtide.features.sequences import EventArrays, load_events
from ebbtide.features.splits import TemporalSplit, leave_one_out, temporal_split

__all__ = ["EventArrays", "TemporalSplit", "leave_one_out", "load_events", "temporal_split"]
