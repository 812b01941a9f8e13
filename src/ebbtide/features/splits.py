"""Evaluation splits that respect time.

`temporal_split` cuts at an instant: history strictly before it, targets in the horizon
after it. `leave_one_out` is the peers' protocol (RecBole's): per user, ordered by time,
the last event is the test target and the one before it the validation target.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from ebbtide.errors import ConfigError
from ebbtide.features.sequences import EventArrays, load_events
from ebbtide.store import EventStore


@dataclass(frozen=True)
class TemporalSplit:
    """History before `cutoff` and the events of ``[cutoff, cutoff + horizon)``."""

    cutoff: datetime
    horizon: timedelta
    history: EventArrays
    target: EventArrays


def temporal_split(store: EventStore, *, cutoff: datetime, horizon: timedelta) -> TemporalSplit:
    """Split the store at `cutoff`; a model fitted on `history` never saw a target event."""
    if horizon <= timedelta(0):
        raise ConfigError(f"horizon={horizon} must be positive")
    history = load_events(store, before=cutoff)
    target = load_events(store, since=cutoff, before=cutoff + horizon)
    return TemporalSplit(cutoff, horizon, history, target)


@dataclass(frozen=True)
class LeaveOneOut:
    """Indices into an `EventArrays` for the leave-one-out protocol.

    ``users`` have at least `min_events` events; ``valid`` and ``test`` are the indices
    of their second-to-last and last events; ``train_mask`` keeps every other event.
    """

    users: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    train_mask: np.ndarray


def leave_one_out(events: EventArrays, *, min_events: int = 3) -> LeaveOneOut:
    """Hold out each user's last two events (by time) for validation and test."""
    if min_events < 3:
        raise ConfigError(f"min_events={min_events}: leave-one-out needs at least 3 per user")
    lengths = events.lengths()
    users = np.flatnonzero(lengths >= min_events)
    test = events.offsets[users + 1] - 1
    valid = test - 1
    train_mask = np.ones(events.n_events, dtype=bool)
    train_mask[test] = False
    train_mask[valid] = False
    return LeaveOneOut(users=users, valid=valid, test=test, train_mask=train_mask)
