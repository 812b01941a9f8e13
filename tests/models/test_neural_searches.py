"""`neural` with searches: a search is a mark the network reads and never predicts; it
raises interest in its query's category, never reaches back from after the instant asked
about, travels with a saved model, and stays out of a private fit."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ebbtide.errors import ConfigError
from ebbtide.features.history import snapshot
from ebbtide.features.sequences import EventArrays
from ebbtide.ingest import ColumnMapping, ingest_file
from ebbtide.models.base import Model
from ebbtide.models.neural import (
    NeuralConfig,
    NeuralModel,
    _batch,
    _batch_loss,
    _Net,
    _sequences,
)
from ebbtide.store import EventStore

START = datetime(2024, 3, 1, tzinfo=UTC)
CUT = START + timedelta(days=10)
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
TINY = NeuralConfig(
    epochs=3, item_epochs=1, hidden=16, embedding=8, rank=4, max_len=60, context_len=60,
    item_max_len=60, seed=5,
)  # fmt: skip
ASKS = ("interest", "p_return", "p_buy", "expected_return_time", "recommend")


def _stamp(when: datetime) -> int:
    return int(when.timestamp())


def _search(user: str, query: str, when: datetime) -> str:
    return f"{user},,,search,{_stamp(when)},{query}"


def _log(seed: int = 0) -> list[str]:
    """Ten days of 80 users. Some days a user searches for one of the searched categories
    and opens its items within the hour or so, then over the next hours; other days the
    user browses a random category the same way without searching. Some visits buy."""
    rng = np.random.default_rng(seed)
    rows = []
    categories = [*VOCABULARY, *PLAIN]
    for user in range(80):
        for day in range(10):
            if rng.random() > 0.5:
                continue
            t = START + timedelta(days=day, hours=float(rng.uniform(8, 12)))
            if rng.random() < 0.5:
                category = str(rng.choice(list(VOCABULARY)))
                rows.append(_search(f"u{user}", str(rng.choice(VOCABULARY[category])), t))
            else:
                category = str(rng.choice(categories))
            first = float(rng.exponential(1 / 24))
            later = [first, *first + np.sort(rng.exponential(0.3, int(rng.integers(1, 4))))]
            for delay in later:
                item = f"{category}-{rng.integers(0, 8)}"
                behavior = "buy" if rng.random() < 0.1 else "view"
                rows.append(f"u{user},{item},{category},{behavior},{_stamp(t + delay * DAY)},")
    # the probe: touched shoes once, long ago, then tea every other day
    rows.append(f"probe,shoes-1,shoes,view,{_stamp(START + timedelta(hours=12))},")
    for day in range(1, 10, 2):
        rows.append(f"probe,tea-2,tea,view,{_stamp(START + timedelta(days=day, hours=9))},")
    return rows


def _store(path: Path, rows: list[str]) -> EventStore:
    csv = path.with_suffix(".csv")
    csv.write_text("\n".join([HEADER, *rows]) + "\n")
    store = EventStore(path)
    ingest_file(store, csv, "generic", mapping=MAPPING)
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EventStore]:
    """The log without its searches ("bare"), with them ("plain"), with the probe also
    searching for running shoes ten minutes before `AT` and for poetry (a category it
    never touched) half an hour before ("searched"), and with those searches at `AT` and
    an hour after it instead ("later")."""
    folder = tmp_path_factory.mktemp("neural_searches")
    rows = _log()
    probe = [
        _search("probe", "Running Shoes", AT - timedelta(minutes=10)),
        _search("probe", "poetry books", AT - timedelta(minutes=30)),
    ]
    late = [
        _search("probe", "Running Shoes", AT),
        _search("probe", "poetry books", AT + timedelta(hours=1)),
    ]
    made = {
        "bare": _store(folder / "bare.duckdb", [r for r in rows if ",search," not in r]),
        "plain": _store(folder / "plain.duckdb", rows),
        "searched": _store(folder / "searched.duckdb", [*rows, *probe]),
        "later": _store(folder / "later.duckdb", [*rows, *late]),
    }
    yield made
    for store in made.values():
        store.close()


@pytest.fixture(scope="module")
def model(stores: dict[str, EventStore]) -> NeuralModel:
    return NeuralModel(TINY).fit(stores["plain"], cutoff=CUT)


def _answers(model: Model, store: EventStore, ask: str) -> pd.DataFrame:
    options = {"horizon": DAY} if ask in ("interest", "p_return", "p_buy") else {}
    return getattr(model, ask)(snapshot(store, at=AT), ["probe", "u1", "u2"], **options)


def _same_network(a: NeuralModel, b: NeuralModel) -> bool:
    sa, sb = a.net_.state_dict(), b.net_.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- the likelihood: a search is read, never a target ------------------------------------
def _events(with_search: bool) -> EventArrays:
    """One user: a view in c0 at 0, (a search about c1 at 0.3), a view in c1 at 0.5 and a
    buy in c1 at 1.0; three items, two categories."""
    rows = [(0.0, 0, 0, 0), (0.3, 3, 1, 4), (0.5, 1, 1, 0), (1.0, 2, 1, 3)]
    if not with_search:
        rows.pop(1)
    t, item, cat, beh = (np.array(column) for column in zip(*rows, strict=True))
    return EventArrays(
        user_idx=np.zeros(t.size, dtype=np.int32),
        item_idx=item.astype(np.int32),
        category_idx=cat.astype(np.int32),
        behavior=beh.astype(np.int8),
        t=t.astype(np.float64),
        offsets=np.array([0, t.size]),
        n_users=1,
        n_items=3,
        n_categories=2,
        before=CUT,
    )


def _loss(net: _Net, events: EventArrays) -> tuple[float, int]:
    seq = _sequences(events, 3, 2, t_end=2.0, share=np.full(3, 1 / 3), prior_days=1.0)
    batch = _batch(seq, np.array([0]), np.array([events.n_events]), torch.device("cpu"))
    with torch.no_grad():
        loss, _ = _batch_loss(net, batch, item_weight=1.0, item_chunk=64)
    return float(loss), int(seq.target.sum())


def test_a_search_mark_is_no_target() -> None:
    """The interval ending at a search has only its compensator: no mark, item or buy
    term, and the level counts item events only. With the search's own excitation, the
    state's reading of it, the background and the level switched off, the likelihood with
    the search inserted is the one without it: the survival integral splits exactly."""
    seq = _sequences(_events(True), 3, 2, t_end=2.0, share=np.full(3, 1 / 3), prior_days=1.0)
    np.testing.assert_array_equal(seq.target, [False, True, True, False])
    np.testing.assert_array_equal(seq.slot, [-1, 1, 1, -1])
    np.testing.assert_array_equal(seq.next_item, [-1, 1, 2, -1])
    np.testing.assert_array_equal(seq.next_buy, [False, False, True, False])
    np.testing.assert_allclose(seq.tau, [0.3, 0.2, 0.5, 1.0])
    np.testing.assert_array_equal(seq.item, [1, 0, 2, 3])  # the search: no item
    np.testing.assert_allclose(seq.level_total, 4.0 / 3.0)  # (3 item events + 1) / 3 days

    torch.manual_seed(0)
    net = _Net(3, 2, TINY, behaviours=5)
    searched, targets = _loss(net, _events(True))
    plain, plain_targets = _loss(net, _events(False))
    assert targets == plain_targets == 2
    assert searched != pytest.approx(plain, rel=1e-4)  # read: it changes the answer
    with torch.no_grad():
        for p in net.gru.parameters():
            p.zero_()  # h = 0 whatever the inputs
        net.conversion.weight.zero_()  # ρ reads no counts
        net.rates.bias.fill_(-40.0)  # no background, no buy burst of its own
        net.level.fill_(-40.0)  # no long-run level (it restarts its fade at any event)
        net.log_weight[:, 4] = -1e4  # the search excites nothing
    searched, _ = _loss(net, _events(True))
    plain, _ = _loss(net, _events(False))
    assert searched == pytest.approx(plain, rel=1e-6)


def test_search_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="use_searches='yes'"):
        NeuralConfig(use_searches="yes")
    with pytest.raises(ConfigError, match=r"search_min_probability=1.5 must be in \[0, 1\]"):
        NeuralConfig(search_min_probability=1.5)


# -- the model ----------------------------------------------------------------------------
def test_no_searches_is_the_model_without_them(
    model: NeuralModel, stores: dict[str, EventStore]
) -> None:
    """A log without searches, or use_searches=False: no map, four behaviour rows, and
    the same network and answers to the bit."""
    bare = NeuralModel(TINY).fit(stores["bare"], cutoff=CUT)
    assert bare.query_map_ is None and "search_marks" not in bare.metrics_
    off = NeuralModel(NeuralConfig(**{**asdict(TINY), "use_searches": False}))
    off.fit(stores["searched"], cutoff=CUT)
    assert off.query_map_ is None and off.net_.behavior.weight.shape[0] == 4
    assert _same_network(bare, off)
    for ask in ASKS:
        pd.testing.assert_frame_equal(
            _answers(bare, stores["bare"], ask), _answers(off, stores["searched"], ask)
        )
    assert model.net_.behavior.weight.shape[0] == 5
    assert model.metrics_["events"] == bare.metrics_["events"]  # searches are no events


def test_the_map_places_searches(model: NeuralModel) -> None:
    qmap = model.query_map_
    assert qmap is not None and qmap.n_searches_ > 200
    codes = pd.Index(model.catalogue_.category_ids)
    asked = ["running shoes", "tea", "novel"]
    assert np.array_equal(qmap.top1(asked), codes.get_indexer(["shoes", "tea", "books"]))
    assert 0.8 * qmap.n_searches_ < model.metrics_["search_marks"] <= qmap.n_searches_


def test_a_search_raises_interest_in_its_category(
    model: NeuralModel, stores: dict[str, EventStore]
) -> None:
    def probe(store: str) -> pd.DataFrame:
        table = model.interest(snapshot(stores[store], at=AT), ["probe"], horizon=DAY)
        return table.set_index("category_id")

    before, after = probe("plain"), probe("searched")
    assert after.p_engage["shoes"] > 3 * before.p_engage["shoes"]
    assert after.session["shoes"] > before.session["shoes"]
    # a category never touched is listed once searched for, from the search alone
    assert "books" not in before.index
    assert after.loc["books"].p_engage > 0.0 and after.loc["books"].usual < 1.0
    returns = [
        float(model.p_return(snapshot(stores[s], at=AT), ["probe"], horizon=DAY).p_return[0])
        for s in ("plain", "searched")
    ]
    assert returns[1] > returns[0]  # a user searching now is active now


def test_explain_queries_names_the_search(
    model: NeuralModel, stores: dict[str, EventStore]
) -> None:
    now = snapshot(stores["searched"], at=AT)
    table = model.explain_queries(now, ["probe"], k=2)
    assert list(table.columns) == [
        "user_id", "category_id", "query", "searches", "last_searched_at", "contribution",
    ]  # fmt: skip
    row = table.set_index("category_id").loc["shoes"]
    assert row.query == "Running Shoes" and row.searches == 1
    assert row.last_searched_at == pd.Timestamp(AT - timedelta(minutes=10))
    # its terms are part of the interest it raised, not more
    interest = model.interest(now, ["probe"], horizon=DAY).set_index("category_id")
    assert 0 < row.contribution <= interest.excitation["shoes"] + interest.session["shoes"]
    assert table.set_index("category_id").loc["books"].query == "poetry books"
    alone = now.for_users(["probe"])  # the probe's own searches travel with it
    pd.testing.assert_frame_equal(model.explain_queries(alone, ["probe"], k=2), table)
    assert model.explain_queries(snapshot(stores["plain"], at=AT), ["probe"]).empty
    everyone = model.explain_queries(now, k=1)
    assert everyone.groupby(["user_id", "category_id"]).size().max() == 1
    assert set(everyone.category_id) <= set(VOCABULARY)


def test_a_search_at_or_after_the_instant_changes_nothing(
    model: NeuralModel, stores: dict[str, EventStore]
) -> None:
    for ask in ASKS:
        pd.testing.assert_frame_equal(
            _answers(model, stores["plain"], ask), _answers(model, stores["later"], ask)
        )
    cut_back = snapshot(stores["searched"], at=AT).until(AT - timedelta(minutes=40))
    pd.testing.assert_frame_equal(
        model.interest(cut_back, ["probe"], horizon=DAY),
        model.interest(
            snapshot(stores["plain"], at=AT - timedelta(minutes=40)), ["probe"], horizon=DAY
        ),
    )
    refit = NeuralModel(TINY).fit(stores["later"], cutoff=CUT)  # nor one after the cut-off
    assert _same_network(refit, model)


def test_save_load_keeps_the_map(
    model: NeuralModel, stores: dict[str, EventStore], tmp_path: Path
) -> None:
    folder = model.save(tmp_path / "neural")
    assert (folder / "query_map.npz").is_file()
    again = Model.load(folder)
    assert again.query_map_ is not None
    now = snapshot(stores["searched"], at=AT)
    pd.testing.assert_frame_equal(again.explain_queries(now), model.explain_queries(now))
    for ask in ASKS:
        pd.testing.assert_frame_equal(
            _answers(again, stores["searched"], ask), _answers(model, stores["searched"], ask)
        )
    # without its map the folder still loads, and reads no search
    (folder / "query_map.npz").unlink()
    blind = Model.load(folder)
    assert (
        blind.query_map_ is None
        and blind.explain_queries(snapshot(stores["searched"], at=AT)).empty
    )
    pd.testing.assert_frame_equal(
        _answers(blind, stores["searched"], "interest"),
        _answers(blind, stores["plain"], "interest"),
    )


def test_a_folder_from_before_searches_loads(stores: dict[str, EventStore], tmp_path: Path) -> None:
    """Saved before searches: four behaviour rows, no map, a config without the new
    settings. It loads and answers as it did, with searches in the log or not."""
    bare = NeuralModel(TINY).fit(stores["bare"], cutoff=CUT)
    old = bare.save(tmp_path / "old")
    meta = json.loads((old / "config.json").read_text())
    for name in ("use_searches", "search_min_probability"):
        del meta["config"][name]
    (old / "config.json").write_text(json.dumps(meta))
    legacy = Model.load(old)
    assert legacy.query_map_ is None and legacy.net_.behavior.weight.shape[0] == 4
    for ask in ASKS:
        want = _answers(bare, stores["bare"], ask)
        pd.testing.assert_frame_equal(_answers(legacy, stores["searched"], ask), want)


def test_a_private_fit_leaves_searches_out(stores: dict[str, EventStore]) -> None:
    private = NeuralConfig(
        **{**asdict(TINY), "dp_epsilon": 3.0, "dp_users_per_step": 20, "dp_epochs": 1.0,
           "dp_item_epochs": 1.0}
    )  # fmt: skip
    fitted = NeuralModel(private).fit(stores["plain"], cutoff=CUT)
    assert fitted.query_map_ is None and fitted.net_.behavior.weight.shape[0] == 4
    assert "outside this account" in fitted.metrics_["privacy"]["searches"]
    assert math.isfinite(fitted.metrics_["privacy"]["epsilon"])
    bare = NeuralModel(private).fit(stores["bare"], cutoff=CUT)
    assert "searches" not in bare.metrics_["privacy"]


def test_the_onnx_runtime_reads_searches_too(
    model: NeuralModel, stores: dict[str, EventStore], tmp_path: Path
) -> None:
    fresh = Model.load(model.save(tmp_path / "neural"))
    fresh.compress("onnx", directory=tmp_path / "neural", threads=1)
    for ask in ("interest", "p_return"):
        got = _answers(fresh, stores["searched"], ask).select_dtypes("number")
        want = _answers(model, stores["searched"], ask).select_dtypes("number")
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-4, atol=1e-4)
