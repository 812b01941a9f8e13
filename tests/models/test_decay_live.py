"""LiveDecay: event-by-event state answers exactly as the batch decay queries do."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebbtide.activate.segments import interest_summary
from ebbtide.errors import ConfigError
from ebbtide.features.history import UNCATEGORISED, History, snapshot
from ebbtide.features.sequences import to_days
from ebbtide.ingest import ColumnMapping, ingest_file
from ebbtide.models.decay import DecayConfig, DecayModel
from ebbtide.models.decay_live import LiveDecay
from ebbtide.models.scoring import score_users
from ebbtide.store import EventStore

TOL = 1e-6
COLUMNS = ("p_engage", "level", "baseline", "excitation", "half_life_days")
Event = tuple[str, str | None, int, float]


def _events(history: History) -> list[Event]:
    """Every event of `history` as LiveDecay takes it, in time order."""
    ev = history.events
    order = np.argsort(ev.t, kind="stable")
    users = history.ids.user_ids[ev.user_idx[order]].tolist()
    codes = ev.category_idx[order].tolist()
    categories = [None if c < 0 else history.ids.category_ids[c] for c in codes]
    behaviors, times = ev.behavior[order].tolist(), ev.t[order].tolist()
    return list(zip(users, categories, behaviors, times, strict=True))


def _stream(live: LiveDecay, events: list[Event]) -> None:
    for event in events:
        live.add(*event)


def _assert_matches_batch(model: DecayModel, history: History, live: LiveDecay) -> None:
    """Every user's live answer equals `score_users` and `interest` at `history.at`."""
    users, categories = score_users(model, history, horizon=timedelta(days=1))
    assert sorted(live.user_ids()) == users.user_id.tolist()
    at = to_days(history.at)
    answers = [live.answer(user, at, 1.0) for user in users.user_id]

    def close(got: list[float], want: pd.Series) -> None:
        np.testing.assert_allclose(got, want.to_numpy(dtype=float), rtol=0, atol=TOL)

    close([a.p_return for a in answers], users.p_return)
    close([a.expected_return_days for a in answers], users.expected_return_days)
    if "p_buy" in model.answers:
        close([a.p_buy for a in answers], users.p_buy)
    else:
        assert all(a.p_buy is None for a in answers)
    # Per category, in the batch order within each user (users by id, as in `users`).
    want = categories.sort_values("user_id", kind="stable")
    got = [(u, c) for u, a in zip(users.user_id, answers, strict=True) for c in a.categories]
    assert [u for u, _ in got] == want.user_id.tolist()
    assert [c.category_id for _, c in got] == want.category_id.tolist()
    for column in COLUMNS:
        close([getattr(c, column) for _, c in got], want[column])
    sums = want.groupby("user_id")[["level", "baseline"]].sum()
    close([a.interest_vs_usual for a in answers], sums.level / sums.baseline)
    summary = interest_summary(categories, 1.0).set_index("user_id").loc[users.user_id]
    close([a.interest_change for a in answers], summary.interest_change)


def test_taobao_stream_equals_the_batch_answers(taobao: EventStore) -> None:
    """Fitted a day before the end; every event (also after the cut-off) streamed in."""
    cut = datetime(2017, 12, 2, 16, tzinfo=UTC)
    model = DecayModel(DecayConfig(max_iter=10, dropout="fit")).fit(taobao, cutoff=cut)
    assert float(model.dropout_) > 0
    history = snapshot(taobao, at=datetime(2017, 12, 4, tzinfo=UTC))
    events = _events(history)
    live = LiveDecay(model)
    _stream(live, events)
    # Categories the fit never saw (the sample has no user new after the cut-off).
    assert {c for _, c, *_ in events} - set(model.catalogue_.category_ids)
    _assert_matches_batch(model, history, live)
    some = live.user_ids()[0]
    assert live.last_time(some) == max(t for u, *_, t in events if u == some)


BASE = int(datetime(2021, 3, 1, tzinfo=UTC).timestamp())
CUTOFF = datetime.fromtimestamp(BASE + 10 * 86_400, tz=UTC)
AT = datetime.fromtimestamp(BASE + 12 * 86_400 + 43_200, tz=UTC)


def _row(user: str, item: str, category: str, behavior: str, days: float) -> str:
    return f"{user},{item},{category},{behavior},{BASE + round(days * 86_400)}"


#: Before the cut-off (day 10) and after it: a new user, new categories, events without a
#: category, baskets (rows of one pair at one instant, different behaviours).
ROWS = [
    _row("u1", "i1", "c1", "view", 0.0),
    _row("u1", "i2", "c1", "view", 0.5),
    _row("u1", "i1", "c1", "view", 1.0),
    _row("u1", "i3", "c1", "view", 3.0),
    _row("u1", "i4", "c1", "buy", 3.0),
    _row("u1", "i5", "c2", "view", 1.2),
    _row("u1", "i6", "c2", "cart", 4.0),
    _row("u1", "i7", "", "view", 2.0),
    _row("u1", "i8", "", "view", 5.0),
    *[_row("u2", f"i{10 + d}", "c2", "view", d + 0.3) for d in range(9)],
    _row("u2", "i20", "c3", "fav", 6.1),
    _row("u2", "i21", "c3", "buy", 7.4),
    _row("u3", "i1", "c1", "view", 1.1),
    _row("u3", "i22", "c3", "view", 2.2),
    *[_row("u4", f"i{30 + h}", "c3", "view", 8.0 + h / 24) for h in range(12)],
    # after the cut-off
    _row("u1", "i1", "c1", "view", 10.2),
    _row("u1", "i2", "c1", "cart", 10.2),
    _row("u1", "i40", "c_new_a", "view", 10.5),
    _row("u1", "i41", "", "buy", 11.0),
    _row("u_new", "i1", "c1", "view", 10.3),
    _row("u_new", "i40", "c_new_a", "view", 10.4),
    _row("u_new", "i42", "c_new_b", "fav", 10.45),
    _row("u_new", "i43", "", "view", 10.6),
    _row("u_new", "i44", "c_new_b", "view", 11.0),
    _row("u_new", "i45", "c_new_b", "buy", 11.0),
    _row("u2", "i19", "c2", "view", 11.3),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("live") / "log.csv"
    path.write_text("user_id,item_id,category_id,behavior,ts\n" + "\n".join(ROWS) + "\n")
    mapping = ColumnMapping(user_col="user_id", item_col="item_id", time_col="ts",
                            category_col="category_id", behavior_col="behavior",
                            time_format="epoch_s")  # fmt: skip
    with EventStore(tmp_path_factory.mktemp("live") / "s.duckdb") as store:
        ingest_file(store, path, "generic", mapping=mapping)
        yield store


def _tiny_model(store: EventStore, dropout: str = "fit") -> DecayModel:
    config = DecayConfig(behavior_weights=(1.0, 2.0, 1.5, 4.0), dropout=dropout, max_iter=20)
    return DecayModel(config).fit(store, cutoff=CUTOFF)


@pytest.mark.parametrize("dropout", ["fit", "off"])
def test_new_users_categories_baskets_and_a_late_event(tiny: EventStore, dropout: str) -> None:
    model = _tiny_model(tiny, dropout)
    assert (float(model.dropout_) > 0) == (dropout == "fit")
    assert UNCATEGORISED in set(model.catalogue_.category_ids)
    history = snapshot(tiny, at=AT)
    events = _events(history)
    # u1's c1 view of day 1 (an instant no other c1 row of u1 has) arrives last.
    day_1 = (BASE + 86_400) / 86_400
    late = next(e for e in events if e[:2] == ("u1", "c1") and abs(e[3] - day_1) < 1e-9)
    events.remove(late)
    live = LiveDecay(model)
    _stream(live, [*events, late])
    _assert_matches_batch(model, history, live)
    answer = live.answer("u_new", to_days(AT), 1.0)
    assert {c.category_id for c in answer.categories} == {"c1", "c_new_a", "c_new_b", UNCATEGORISED}


def test_forget_export_and_import(tiny: EventStore) -> None:
    model = _tiny_model(tiny)
    events = _events(snapshot(tiny, at=AT))
    live = LiveDecay(model)
    _stream(live, events)
    at = to_days(AT)

    assert len(live) == 5 and "u3" in live
    assert live.last_time("u3") == max(t for u, *_, t in events if u == "u3")
    assert live.forget("u3") and "u3" not in live and len(live) == 4
    assert not live.forget("u3")
    with pytest.raises(KeyError):
        live.answer("u3", at, 1.0)
    with pytest.raises(KeyError):
        live.export_user("u3")

    other = LiveDecay(model)
    for user in ("u1", "u_new"):
        state = json.loads(json.dumps(live.export_user(user)))
        other.import_user(user, state)
        assert other.answer(user, at, 1.0) == live.answer(user, at, 1.0)
        assert other.last_time(user) == live.last_time(user)
    for target in (live, other):  # the imported state goes on as the original
        target.add("u1", "c1", 3, at - 0.1)
        target.add("u1", "c2", 0, at - 2.0)  # late
    assert other.answer("u1", at + 1, 2.0) == live.answer("u1", at + 1, 2.0)

    foreign = LiveDecay(DecayModel().fit(tiny, cutoff=CUTOFF - timedelta(days=1)))
    with pytest.raises(ConfigError, match="belongs to model"):
        foreign.import_user("u1", live.export_user("u1"))
    with pytest.raises(ConfigError):
        live.add("u1", "c1", 7, at)
    with pytest.raises(ConfigError):
        live.answer("u1", at, 0.0)


def test_a_model_without_purchases_answers_no_p_buy(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "views.csv"
    path.write_text("1,1,1,pv,1600000000\n1,2,1,pv,1600086400\n2,1,1,pv,1600000000\n")
    ingest_file(store, path, "taobao")
    model = DecayModel().fit(store, cutoff=datetime(2020, 9, 20, tzinfo=UTC))
    live = LiveDecay(model)
    _stream(live, _events(snapshot(store, at=datetime(2020, 9, 20, tzinfo=UTC))))
    answer = live.answer("1", to_days(datetime(2020, 9, 20, tzinfo=UTC)), 1.0)
    assert answer.p_buy is None and 0 < answer.p_return < 1
