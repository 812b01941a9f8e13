"""Time rules every family keeps: no answer knows its future.

- a model fitted up to a cut-off refuses a query at an earlier instant (its parameters
  know what happened after it), unless an in-sample answer is asked for, which says so;
- answers at ``at >= cutoff`` do not change when the store also holds events after ``at``,
  new users, items and categories included (the model's catalogue is what it saw);
- a fitted model keeps no store: it answers on any store's snapshot by external id.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from ebbtide.datasets import taobao_sample_path
from ebbtide.errors import QueryTimeError, UnsupportedQueryError
from ebbtide.features.history import History, snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.base import QUERIES, Model
from ebbtide.models.scoring import build_model
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)
AT = CUT + timedelta(hours=6)
DAY = timedelta(days=1)
SETTINGS = {
    "popular": {},
    "btyd": {},
    "gbdt": {"max_iter": 30},
    "decay": {"max_iter": 20},
    "neural": {
        "epochs": 2,
        "item_epochs": 1,
        "hidden": 8,
        "embedding": 4,
        "rank": 2,
        "validation_days": 0.5,
        "seed": 5,
    },
}


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 120-user slice of the bundled sample, and events after AT by new and old users on
    new items and categories."""
    folder = tmp_path_factory.mktemp("time-rules")
    with gzip.open(taobao_sample_path(), "rt") as lines:
        rows = [line for line in lines if int(line.split(",", 1)[0]) % 7 == 0]
    users = sorted({row.split(",", 1)[0] for row in rows})[:120]
    keep = set(users)
    (folder / "past.csv").write_text("".join(r for r in rows if r.split(",", 1)[0] in keep))
    later = int(AT.timestamp())
    (folder / "future.csv").write_text(
        f"{users[0]},900000001,900000002,buy,{later}\n"
        f"{users[1]},900000003,900000004,pv,{later + 60}\n"
        f"900000005,900000001,900000002,cart,{later + 3600}\n"
    )
    return {"past": folder / "past.csv", "future": folder / "future.csv"}


def _store(path: Path, *files: Path) -> EventStore:
    store = EventStore(path)
    for file in files:
        ingest_file(store, file, "taobao")
    return store


@pytest.fixture(scope="module")
def stores(logs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """past only; past then future; future then past (other dense ids, same events)."""
    folder = tmp_path_factory.mktemp("stores")
    made = {
        "past": _store(folder / "a.duckdb", logs["past"]),
        "with_future": _store(folder / "b.duckdb", logs["past"], logs["future"]),
        "future_first": _store(folder / "c.duckdb", logs["future"], logs["past"]),
    }
    yield made
    for store in made.values():
        store.close()


def _answers(
    model: Model, history: History, *, in_sample: bool = False, only: str | None = None
) -> dict[str, pd.DataFrame]:
    asked = {
        "p_return": lambda: model.p_return(history, horizon=DAY, in_sample=in_sample),
        "p_buy": lambda: model.p_buy(history, horizon=DAY, in_sample=in_sample),
        "expected_return_time": lambda: model.expected_return_time(history, in_sample=in_sample),
        "interest": lambda: model.interest(history, horizon=DAY, in_sample=in_sample),
        "recommend": lambda: model.recommend(history, k=5, in_sample=in_sample),
    }
    return {query: asked[query]() for query in sorted(model.answers) if only in (None, query)}


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def fitted(request: pytest.FixtureRequest, stores) -> tuple[Model, Model]:
    """The family fitted at CUT on the past-only store and on the store with the future."""
    name = request.param
    return tuple(
        build_model(name, **SETTINGS[name]).fit(stores[key], cutoff=CUT)
        for key in ("past", "with_future")
    )


def test_every_family_declares_what_it_answers(fitted: tuple[Model, Model]) -> None:
    model = fitted[0]
    assert model.answers and model.answers <= QUERIES
    history = snapshot(EventStore(":memory:"), at=AT)
    for query in sorted(QUERIES - model.answers):
        horizon = {} if query in ("expected_return_time", "recommend") else {"horizon": DAY}
        with pytest.raises(UnsupportedQueryError, match="does not answer"):
            getattr(model, query)(history, **horizon)


def test_answers_after_the_cutoff_ignore_later_events(fitted, stores) -> None:
    alone, with_future = fitted
    before = _answers(alone, snapshot(stores["past"], at=AT))
    after = _answers(with_future, snapshot(stores["with_future"], at=AT))
    assert before.keys() == after.keys()
    for query, frame in before.items():
        assert len(frame) > 0, query
        pd.testing.assert_frame_equal(after[query], frame, obj=query)


def test_the_catalogue_holds_only_what_came_before_the_cutoff(fitted, stores) -> None:
    _, with_future = fitted
    catalogue = with_future.catalogue_
    assert "900000001" not in set(catalogue.item_ids)
    assert "900000002" not in set(catalogue.category_ids)
    assert "900000005" not in set(catalogue.user_ids)
    known = stores["with_future"].con.execute("SELECT count(*) FROM items").fetchone()[0]
    assert catalogue.item_ids.size < known


def test_a_query_before_the_cutoff_is_refused_unless_in_sample(fitted, stores) -> None:
    model = fitted[0]
    earlier = snapshot(stores["past"], at=CUT - timedelta(hours=12))
    for query in sorted(model.answers):
        with pytest.raises(QueryTimeError, match="cannot answer at the earlier instant"):
            _answers(model, earlier, only=query)
    for query, frame in _answers(model, earlier, in_sample=True).items():
        assert frame["in_sample"].all() and frame.attrs["in_sample"], query
    on_time = _answers(model, snapshot(stores["past"], at=CUT), in_sample=True)
    assert all("in_sample" not in frame for frame in on_time.values())


def test_a_fitted_model_keeps_no_store_and_answers_any_store_by_id(fitted, stores) -> None:
    model = fitted[0]
    assert not [name for name, value in vars(model).items() if isinstance(value, EventStore)]
    same = _answers(model, snapshot(stores["with_future"], at=AT))
    renumbered = _answers(model, snapshot(stores["future_first"], at=AT))
    for query, frame in same.items():
        pd.testing.assert_frame_equal(renumbered[query], frame, obj=query)


def test_a_saved_model_answers_without_the_store_it_was_fitted_on(fitted, stores, tmp_path):
    model = fitted[0]
    loaded = Model.load(model.save(tmp_path / "m"))
    history = snapshot(stores["future_first"], at=AT)
    for query, frame in _answers(model, history).items():
        pd.testing.assert_frame_equal(_answers(loaded, history)[query], frame, obj=query)
