"""Store features for uplift: counted from events before the instant only, joined by user."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ebbtide.activate.store_features import PREFIX, attach_store_features, store_features
from ebbtide.errors import CampaignWarning, QueryTimeError
from ebbtide.features.history import snapshot
from ebbtide.models.decay import DecayModel
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)


def test_features_count_only_events_before_the_instant(taobao: EventStore) -> None:
    model = DecayModel().fit(taobao, cutoff=CUT)
    table = store_features(taobao, model, at=CUT, horizon=timedelta(days=7))
    assert table.user_id.is_unique and all(c.startswith(PREFIX) for c in table.columns[1:])
    for column in ("p_return", "p_buy", "interest_now", "interest_change", "recency_days"):
        assert f"{PREFIX}{column}" in table.columns
    truth = taobao.con.execute(
        """SELECT u.user_id, count(*) AS n, max(e.ts) AS last
        FROM events e JOIN users u USING (user_idx) WHERE e.ts < ? GROUP BY ALL""",
        [CUT],
    ).df()
    merged = table.merge(truth, on="user_id", validate="1:1")
    assert len(merged) == len(table) == len(truth)
    np.testing.assert_array_equal(merged[f"{PREFIX}events"], merged["n"])
    last = pd.to_datetime(merged["last"], utc=True)
    days = (pd.Timestamp(CUT) - last).dt.total_seconds() / 86_400
    np.testing.assert_allclose(merged[f"{PREFIX}recency_days"], days, rtol=1e-9, atol=1e-6)
    history = snapshot(taobao, at=CUT)
    scored = model.p_return(history, horizon=timedelta(days=7)).set_index("user_id")
    np.testing.assert_allclose(
        merged.set_index("user_id")[f"{PREFIX}p_return"], scored.loc[merged.user_id, "p_return"]
    )


def test_unknown_users_are_kept_with_missing_features(taobao: EventStore) -> None:
    table = store_features(taobao, None, at=CUT, horizon=timedelta(days=1))
    log = pd.DataFrame({"user_id": [table.user_id.iloc[0], "nobody"], "arm": ["a", "b"]})
    with pytest.warns(CampaignWarning, match="1 of 2 users have no events"):
        joined = attach_store_features(log, table)
    assert len(joined) == 2 and joined[f"{PREFIX}events"].isna().tolist() == [False, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CampaignWarning)
        attach_store_features(log.iloc[:1], table)


def test_a_later_fit_is_refused_and_a_family_name_fits_at_the_instant(taobao: EventStore) -> None:
    """Features of a campaign that started at `at` must not encode its outcome."""
    start = CUT - timedelta(days=2)
    later = DecayModel().fit(taobao, cutoff=CUT)
    with pytest.raises(QueryTimeError, match="earlier instant"):
        store_features(taobao, later, at=start, horizon=timedelta(days=1))
    by_name = store_features(taobao, "decay", at=start, horizon=timedelta(days=1))
    fitted_there = DecayModel().fit(taobao, cutoff=start)
    by_model = store_features(taobao, fitted_there, at=start, horizon=timedelta(days=1))
    pd.testing.assert_frame_equal(by_name, by_model)
