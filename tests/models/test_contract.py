"""What every model family promises: fit/query/save/load behave the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebbtide.errors import ConfigError, EbbtideError, NotFittedError
from ebbtide.features.history import snapshot
from ebbtide.models.base import Model
from ebbtide.models.decay import DecayModel
from ebbtide.models.popular import PopularConfig, PopularModel
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)  # 2017-12-02 00:00 China time
FAMILIES = [PopularModel, DecayModel]


@pytest.mark.parametrize("family", FAMILIES)
def test_queries_before_fit_raise(family: type[Model]) -> None:
    with pytest.raises(NotFittedError):
        family().recommend(snapshot(EventStore(":memory:"), at=CUT), ["1"])


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip_gives_identical_answers(
    family: type[Model], taobao: EventStore, tmp_path: Path
) -> None:
    model = family().fit(taobao, cutoff=CUT)
    before = model.recommend(snapshot(taobao, at=CUT), ["1", "100"], k=5)
    loaded = Model.load(model.save(tmp_path / "m"))
    assert type(loaded) is family
    pd.testing.assert_frame_equal(
        loaded.recommend(snapshot(taobao, at=CUT), ["1", "100"], k=5), before
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_users_and_bad_arguments_are_clear(family: type[Model], taobao: EventStore) -> None:
    model = family().fit(taobao, cutoff=CUT)
    with pytest.raises(EbbtideError, match="unknown user"):
        model.recommend(snapshot(taobao, at=CUT), ["no-such-user"])
    with pytest.raises(ConfigError):
        model.recommend(snapshot(taobao, at=CUT), ["1"], k=0)


def test_popular_recommends_what_is_popular_now_and_skips_purchases(taobao: EventStore) -> None:
    model = PopularModel(PopularConfig(half_life_days=1.0)).fit(taobao, cutoff=CUT)
    recs = model.recommend(snapshot(taobao, at=CUT), k=10)
    assert recs.groupby("user_id").size().eq(10).all()
    assert recs["user_id"].nunique() == 815
    bought = set(
        map(
            tuple,
            taobao.con.execute(
                "SELECT u.user_id, i.item_id FROM events e JOIN users u USING (user_idx)"
                " JOIN items i USING (item_idx) WHERE behavior = 3 AND ts < ?",
                [CUT],
            ).fetchall(),
        )
    )
    assert not any((u, i) in bought for u, i in zip(recs.user_id, recs.item_id, strict=True))
    scores = recs[recs.user_id == "1"].score.to_numpy()
    assert np.all(np.diff(scores) <= 0)
    # The top item is the one with the most recency-weighted activity before the cut.
    top = recs[recs["rank"] == 1].item_id.mode()[0]
    window = taobao.con.execute(
        "SELECT i.item_id, count(*) n FROM events e JOIN items i USING (item_idx)"
        " WHERE ts >= ? AND ts < ? GROUP BY 1 ORDER BY n DESC LIMIT 3",
        [CUT - timedelta(days=1), CUT],
    ).fetchall()
    assert top in {row[0] for row in window}
