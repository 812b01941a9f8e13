"""`decay` with searches: a search raises interest in its query's category, says so, and
never reaches back from after the instant asked about."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebbtide.features.history import snapshot
from ebbtide.ingest import ColumnMapping, ingest_file
from ebbtide.models.base import Model
from ebbtide.models.decay import DecayConfig, DecayModel
from ebbtide.store import EventStore

START = datetime(2024, 3, 1, tzinfo=UTC)
CUT = START + timedelta(days=14)
AT = CUT + timedelta(hours=6)
DAY = timedelta(days=1)
VOCABULARY = {
    "shoes": ["running shoes", "trail sneakers", "shoes for running"],
    "tea": ["green tea", "oolong tea", "tea pot"],
    "books": ["crime novel", "poetry books", "a novel"],
}
PLAIN = ["toys", "garden", "music"]  # browsed, never searched for
HEADER = "user_id,item_id,category_id,behavior,timestamp,query"
MAPPING = ColumnMapping(
    user_col="user_id", item_col="item_id", category_col="category_id",
    behavior_col="behavior", time_col="timestamp", time_format="epoch_s", query_col="query",
)  # fmt: skip


def _stamp(when: datetime) -> int:
    return int(when.timestamp())


def _log(seed: int = 0) -> list[str]:
    """Two weeks of 150 users. Some days a user searches for one of the searched
    categories, opens one of its items within the hour or so and comes back to it over the
    next hours and days (an interest that fades in about a day); other days the user
    browses a random category the same way, without searching."""
    rng = np.random.default_rng(seed)
    rows = []
    categories = [*VOCABULARY, *PLAIN]
    for user in range(150):
        for day in range(0, 14, 2):
            if rng.random() > 0.7:
                continue
            t = START + timedelta(days=day, hours=float(rng.uniform(8, 12)))
            if rng.random() < 0.5:
                category = str(rng.choice(list(VOCABULARY)))
                query = str(rng.choice(VOCABULARY[category]))
                rows.append(f"u{user},,,search,{_stamp(t)},{query}")
            else:
                category = str(rng.choice(categories))
            first = float(rng.exponential(1 / 24))  # about an hour after the search
            later = [first, *first + np.sort(rng.exponential(1.0, int(rng.integers(1, 4))))]
            for delay in later:
                item = f"{category}-{rng.integers(0, 20)}"
                rows.append(f"u{user},{item},{category},view,{_stamp(t + delay * DAY)},")
    # the probe: touched shoes once, long ago, then tea every other day
    rows.append(f"probe,shoes-1,shoes,view,{_stamp(START + timedelta(hours=12))},")
    for day in range(1, 14, 2):
        rows.append(f"probe,tea-2,tea,view,{_stamp(START + timedelta(days=day, hours=9))},")
    return rows


def _store(path: Path, rows: list[str]) -> EventStore:
    csv = path.with_suffix(".csv")
    csv.write_text("\n".join([HEADER, *rows]) + "\n")
    store = EventStore(path)
    ingest_file(store, csv, "generic", mapping=MAPPING)
    return store


def _search(user: str, query: str, when: datetime) -> str:
    return f"{user},,,search,{_stamp(when)},{query}"


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EventStore]:
    """The same log three times: as is; with the probe searching for running shoes ten
    minutes before `AT` and for poetry (a category it never touched) half an hour
    before; and with those searches an hour after `AT` instead."""
    folder = tmp_path_factory.mktemp("searches")
    rows = _log()
    made = {
        "plain": _store(folder / "plain.duckdb", rows),
        "searched": _store(
            folder / "searched.duckdb",
            [
                *rows,
                _search("probe", "Running Shoes", AT - timedelta(minutes=10)),
                _search("probe", "poetry books", AT - timedelta(minutes=30)),
            ],
        ),
        "later": _store(
            folder / "later.duckdb",
            [
                *rows,
                _search("probe", "Running Shoes", AT + timedelta(hours=1)),
                _search("probe", "poetry books", AT + timedelta(hours=1)),
            ],
        ),
    }
    yield made
    for store in made.values():
        store.close()


@pytest.fixture(scope="module")
def model(stores: dict[str, EventStore]) -> DecayModel:
    return DecayModel(DecayConfig(dropout="off")).fit(stores["plain"], cutoff=CUT)


def _probe_interest(model: Model, store: EventStore, category: str) -> float:
    table = model.interest(snapshot(store, at=AT), ["probe"], horizon=DAY)
    return float(table.set_index("category_id").p_engage.get(category, 0.0))


def test_the_map_learns_what_queries_are_about(model: DecayModel) -> None:
    qmap = model.query_map_
    assert qmap is not None and qmap.n_searches_ > 300
    assert qmap.n_attributed_ > 0.8 * qmap.n_searches_  # a few first views come after 2 h
    codes = pd.Index(model.catalogue_.category_ids)
    asked = ["running shoes", "tea", "novel", "sneakers for trail"]
    want = codes.get_indexer(["shoes", "tea", "books", "shoes"])
    assert np.array_equal(qmap.top1(asked), want)
    assert model.metrics_["search_marks"] >= qmap.n_searches_ and model.search_alpha_.sum() > 0


def test_a_search_is_no_event_of_its_category(
    model: DecayModel, stores: dict[str, EventStore]
) -> None:
    """Searches excite with kernels of their own, fitted after the rest: the categories'
    half-lives and the pairs' background rates are what the item events say (as one
    more event each, a search an hour before its category's first view would pull the
    half-life toward that hour)."""
    without = DecayModel(DecayConfig(dropout="off", use_searches=False))
    without.fit(stores["plain"], cutoff=CUT)
    assert model.metrics_["events"] == without.metrics_["events"]
    for name in ("delta_", "alpha_", "pair_key_", "pair_mu_"):
        assert np.array_equal(getattr(model, name), getattr(without, name)), name
    metrics = model.metrics_
    assert metrics["search_fast_half_life_days"] < metrics["search_slow_half_life_days"]
    assert 0.5 < metrics["engagements_per_search"] < 5  # about one view follows each


def test_a_search_raises_interest_in_its_category(
    model: DecayModel, stores: dict[str, EventStore]
) -> None:
    before = _probe_interest(model, stores["plain"], "shoes")
    after = _probe_interest(model, stores["searched"], "shoes")
    assert after > 2 * before > 0
    tea = [_probe_interest(model, stores[name], "tea") for name in ("plain", "searched")]
    assert tea[0] == pytest.approx(tea[1])  # other categories keep theirs
    # a category never touched: its first touch's rate, and what the search adds
    poetry = model.interest(snapshot(stores["searched"], at=AT), ["probe"], horizon=DAY)
    books = poetry.set_index("category_id").loc["books"]
    assert books.baseline < 0.1 * books.excitation and books.p_engage > 0.2
    assert _probe_interest(model, stores["plain"], "books") == 0.0  # not listed before


def test_a_search_after_the_instant_changes_nothing(
    model: DecayModel, stores: dict[str, EventStore]
) -> None:
    for ask in ("interest", "p_return", "expected_return_time", "recommend"):
        options = {"horizon": DAY} if ask in ("interest", "p_return") else {}
        plain = getattr(model, ask)(snapshot(stores["plain"], at=AT), ["probe"], **options)
        later = getattr(model, ask)(snapshot(stores["later"], at=AT), ["probe"], **options)
        pd.testing.assert_frame_equal(plain, later)
    cut_back = snapshot(stores["later"], at=AT + timedelta(hours=2)).until(AT)
    assert cut_back.searches.t.max() < AT.timestamp() / 86_400
    pd.testing.assert_frame_equal(
        model.interest(cut_back, ["probe"], horizon=DAY),
        model.interest(snapshot(stores["plain"], at=AT), ["probe"], horizon=DAY),
    )
    refit = DecayModel(DecayConfig(dropout="off")).fit(stores["later"], cutoff=CUT)
    assert np.array_equal(refit.delta_, model.delta_)  # nor does one after the cut-off


def test_explain_queries_names_the_search(model: DecayModel, stores: dict[str, EventStore]) -> None:
    now = snapshot(stores["searched"], at=AT)
    table = model.explain_queries(now, ["probe"], k=2)
    assert list(table.columns) == [
        "user_id", "category_id", "query", "searches", "last_searched_at", "contribution",
    ]  # fmt: skip
    row = table.set_index("category_id").loc["shoes"]
    assert row.query == "Running Shoes" and row.searches == 1
    assert row.last_searched_at == pd.Timestamp(AT - timedelta(minutes=10))
    interest = model.interest(now, ["probe"], horizon=DAY).set_index("category_id")
    plain = model.interest(snapshot(stores["plain"], at=AT), ["probe"], horizon=DAY)
    added = interest.excitation["shoes"] - plain.set_index("category_id").excitation["shoes"]
    assert row.contribution == pytest.approx(added, rel=1e-6)
    assert table.set_index("category_id").loc["books"].query == "poetry books"
    alone = now.for_users(["probe"])  # the probe's own searches travel with it
    assert set(alone.ids.user_ids[alone.searches.user_idx]) == {"probe"}
    pd.testing.assert_frame_equal(model.explain_queries(alone, ["probe"], k=2), table)
    assert model.explain_queries(snapshot(stores["plain"], at=AT), ["probe"]).empty
    everyone = model.explain_queries(now, k=1)
    assert everyone.groupby(["user_id", "category_id"]).size().max() == 1
    assert set(everyone.category_id) <= set(VOCABULARY)


def test_searches_can_be_left_out(stores: dict[str, EventStore]) -> None:
    """use_searches=False on a log with searches is the model of the log without them."""
    off = DecayConfig(dropout="off", use_searches=False)
    with_searches = DecayModel(off).fit(stores["searched"], cutoff=CUT)
    assert with_searches.query_map_ is None
    rows = [r for r in _log() if ",search," not in r]
    folder = Path(stores["plain"].path).parent
    with _store(folder / "no_searches.duckdb", rows) as bare:
        without = DecayModel(replace(off, use_searches=True)).fit(bare, cutoff=CUT)
        assert without.query_map_ is None
        assert np.array_equal(with_searches.delta_, without.delta_)
        a = with_searches.interest(snapshot(stores["searched"], at=AT), ["probe"], horizon=DAY)
        b = without.interest(snapshot(bare, at=AT), ["probe"], horizon=DAY)
        pd.testing.assert_frame_equal(a, b)


def test_save_load_keeps_the_map(
    model: DecayModel, stores: dict[str, EventStore], tmp_path: Path
) -> None:
    now = snapshot(stores["searched"], at=AT)
    folder = model.save(tmp_path / "decay")
    again = Model.load(folder)
    pd.testing.assert_frame_equal(
        again.interest(now, horizon=DAY), model.interest(now, horizon=DAY)
    )
    pd.testing.assert_frame_equal(again.explain_queries(now), model.explain_queries(now))
    # a folder from before searches has no map: it loads, and places no search
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    (old / "query_map.npz").unlink()
    legacy = Model.load(old)
    assert legacy.query_map_ is None and legacy.explain_queries(now).empty
