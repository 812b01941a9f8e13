"""Pre-campaign features of each user from the event store: model outputs plus RFM.

Why: uplift learners need to know *who* responded; the event store already says how each
user behaved before the campaign (recency, frequency, decayed activity per behaviour) and a
model says what it expected of them (return and purchase probability, interest and its
trend). Both are computed at one instant from events before it only, so a campaign that
started at ``at`` gets features that could have been known when it was sent. Columns are
prefixed ``store_`` so they never clash with the log's own columns.

The same function scores the users of a later plan, so a learner fitted on a campaign log
can produce effects for `reactivation.plan_reactivation`.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from ebbtide.activate.segments import interest_summary
from ebbtide.errors import CampaignWarning
from ebbtide.features.history import snapshot
from ebbtide.features.rfm import user_features
from ebbtide.features.sequences import to_days
from ebbtide.models.base import Model
from ebbtide.models.scoring import build_model
from ebbtide.store import EventStore

__all__ = ["PREFIX", "attach_store_features", "store_features"]

#: Every store feature's name starts with this.
PREFIX = "store_"


def store_features(
    store: EventStore, model: Model | str | None, *, at: datetime, horizon: timedelta
) -> pd.DataFrame:
    """One row per user with events before `at`: RFM features and the model's outputs.

    Parameters
    ----------
    store : EventStore
    model : Model, str or None
        A model fitted at or before `at` (a later fit knows the campaign's outcome, and is
        refused), or a family name, fitted here on the events before `at`. Its
        ``p_return``, ``p_buy``, ``expected_return_time`` and interest (``interest_now``,
        ``interest_change`` over `horizon`) are added when it answers them.
    at : datetime
        Features use events strictly before this instant.
    horizon : timedelta
        Window of the model's probabilities.

    Returns
    -------
    DataFrame
        ``user_id`` and ``store_*`` columns.
    """
    history = snapshot(store, at=at)
    events = history.events
    users = np.flatnonzero(events.lengths() > 0)
    table = pd.DataFrame(user_features(events, users, to_days(at)))
    table.insert(0, "user_id", history.ids.user_ids[users])
    if isinstance(model, str):
        model = build_model(model).fit(history)
    if model is not None:
        answers = model.answers
        if "p_return" in answers:
            table = table.merge(model.p_return(history, horizon=horizon), on="user_id", how="left")
        if "p_buy" in answers:
            table = table.merge(model.p_buy(history, horizon=horizon), on="user_id", how="left")
        if "expected_return_time" in answers:
            table = table.merge(model.expected_return_time(history), on="user_id", how="left")
        if "interest" in answers:
            interest = interest_summary(
                model.interest(history, horizon=horizon), horizon / timedelta(days=1)
            )
            table = table.merge(interest, on="user_id", how="left")
    renamed = {name: f"{PREFIX}{name}" for name in table.columns if name != "user_id"}
    return table.rename(columns=renamed)


def attach_store_features(
    frame: pd.DataFrame, features: pd.DataFrame, *, user_col: str = "user_id"
) -> pd.DataFrame:
    """`frame` with the store features of its users joined on; unknown users get NaN.

    Warns
    -----
    CampaignWarning
        When some users of `frame` have no history in the store (their features are NaN,
        which the gradient-boosted learners handle, but they carry no behaviour signal).
    """
    joined = frame.merge(
        features.rename(columns={"user_id": user_col}), on=user_col, how="left", validate="m:1"
    )
    joined.index = frame.index
    known = frame[user_col].astype(str).isin(features["user_id"].astype(str))
    if not known.all():
        warnings.warn(
            f"{int((~known).sum())} of {len(frame)} users have no events in the store before "
            "the feature time: their store_* features are missing",
            CampaignWarning,
            stacklevel=2,
        )
    return joined
