"""The live service in process (FastAPI's test client drives the real app, log and store).

The heart: events posted one batch at a time leave each user's live state equal to batch
`score` on the store at the same instant, every posted row is accounted for, retries change
nothing, and the store holds each event once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from ebbtide.activate.segments import SegmentRules
from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.ingest.pseudonymise import KEY_ENV, Pseudonymiser
from ebbtide.models.base import Model
from ebbtide.models.decay import DecayConfig, DecayModel
from ebbtide.models.scoring import score_users
from ebbtide.serve.app import create_app
from ebbtide.serve.replay import CANONICAL, Replay, post_json
from ebbtide.serve.security import Guard, KeyRing, RateLimiter, Scope
from ebbtide.serve.service import Service, ServiceConfig
from ebbtide.serve.state import SegmentWatch
from ebbtide.store import EventStore

NDJSON = {"content-type": "application/x-ndjson"}


def _client(live: Replay, tmp_path, *, keys: KeyRing | None = None, max_body: int = 1 << 20):
    config = ServiceConfig(db=live.db, model_dir=live.model_dir, sweep_seconds=0.2)
    service = Service(config)
    app = create_app(service, Guard(keys, RateLimiter(1e6, 10**6)), max_body_bytes=max_body)
    return TestClient(app)


def _ndjson(events) -> bytes:
    return b"\n".join(post_json(e) for e in events)


def _stored_count(db) -> int:
    with EventStore(db, read_only=True) as store:
        return store.stats().events


def test_streamed_state_equals_batch_scores(live: Replay, tmp_path) -> None:
    before = _stored_count(live.db)
    client = _client(live, tmp_path)
    accepted = 0
    with client:
        for lo in range(0, len(live.events), 500):
            answer = client.post(
                "/v1/events", content=_ndjson(live.events[lo : lo + 500]), headers=NDJSON
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["rows"] == body["accepted"] + body["duplicates"] + body["rejected"]
            accepted += body["accepted"]
        at = max(e.ts for e in live.events) + 1.0
        users = sorted({e.user_id for e in live.events})[:150]
        live_scores = {
            u: client.get(f"/v1/users/{u}/scores", params={"at": at, "horizon": "1d"}).json()
            for u in users
        }
        interest = client.get(f"/v1/users/{users[0]}/interest", params={"at": at}).json()
    # shutdown loaded the log into the store: the batch path reads it
    model = Model.load(live.model_dir)
    with EventStore(live.db, read_only=True) as store:
        assert accepted == len(live.events) == len({e.identity() for e in live.events})
        assert store.stats().events == before + accepted
        history = snapshot(store, at=datetime.fromtimestamp(at, UTC))
        batch, categories = score_users(model, history, horizon=timedelta(days=1))
    batch = batch.set_index("user_id")
    for user, answer in live_scores.items():
        row = batch.loc[user]
        assert answer["p_return"] == pytest.approx(row["p_return"], abs=1e-6)
        assert answer["p_buy"] == pytest.approx(row["p_buy"], abs=1e-6)
        assert answer["expected_return_days"] == pytest.approx(
            row["expected_return_days"], abs=1e-6
        )
    mine = categories[categories["user_id"] == users[0]].set_index("category_id")
    assert len(interest["categories"]) == len(mine)
    for c in interest["categories"]:
        assert c["level"] == pytest.approx(mine.loc[c["category_id"], "level"], abs=1e-6)
        assert c["long_run_level"] == pytest.approx(
            mine.loc[c["category_id"], "baseline"], abs=1e-6
        )


def test_retries_and_copies_change_nothing(live: Replay, tmp_path) -> None:
    batch = live.events[:50]
    client = _client(live, tmp_path)
    with client:
        first = client.post("/v1/events", content=_ndjson(batch), headers=NDJSON).json()
        again = client.post("/v1/events", content=_ndjson(batch), headers=NDJSON).json()
        copy = client.post(
            "/v1/events", content=_ndjson([live.events[60], live.events[60]]), headers=NDJSON
        ).json()
        user = batch[0].user_id
        state_after = client.get(f"/v1/users/{user}/interest").json()
    distinct = len({e.identity() for e in batch})
    assert first["accepted"] == distinct and again["accepted"] == 0
    assert again["duplicates"] == len(batch)
    assert copy["accepted"] == 1 and copy["duplicate_lines"] == [2]
    assert _stored_count(live.db) == _stored_count_prepared(live) + distinct + 1
    assert state_after["categories"]


def _stored_count_prepared(live: Replay) -> int:
    with EventStore(live.db, read_only=True) as store:
        return store.con.execute("SELECT count(*) FROM events WHERE ingest_id = 1").fetchone()[0]


def test_bad_rows_are_refused_with_reasons_and_quarantined(live: Replay, tmp_path) -> None:
    good = orjson.loads(post_json(live.events[0]))
    rows = [
        good,
        {**good, "user_id": ""},
        {**good, "behavior": "teleport"},
        {**good, "ts": "yesterday"},
        {**good, "price": -3},
        {**good, "user_id": "x" * 5_000},
        {**good, "ts": "1970-01-01T00:00:01Z"},
    ]
    body = b"\n".join(orjson.dumps(r) for r in rows) + b"\n{not json\n"
    client = _client(live, tmp_path)
    with client:
        answer = client.post("/v1/events", content=body, headers=NDJSON).json()
    reasons = [r["reason"] for r in answer["rejected_rows"]]
    assert answer["rows"] == 8 and answer["accepted"] == 1
    assert reasons == [
        "missing_user_id",
        "unknown_behavior",
        "bad_time",
        "negative_price",
        "id_too_long",
        "time_out_of_range",
        "malformed_json",
    ]
    with EventStore(live.db, read_only=True) as store:
        stored = [
            r[0]
            for r in store.con.execute("SELECT reason FROM quarantine ORDER BY reason").fetchall()
        ]
    assert stored == sorted(reasons)


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"[{broken", {"content-type": "application/json"}, 400),
        (b'"just a string"', {"content-type": "application/json"}, 400),
        (b"\xff\xfe\x00garbage", {"content-type": "application/json"}, 400),
        (b"[]", {"content-type": "application/json"}, 400),
    ],
)
def test_a_body_that_is_not_events_is_a_400(live, tmp_path, body, headers, status) -> None:
    client = _client(live, tmp_path)
    with client:
        answer = client.post("/v1/events", content=body, headers=headers)
    assert answer.status_code == status
    assert answer.json()["detail"]


def test_reads_refuse_what_they_cannot_answer(live: Replay, tmp_path) -> None:
    client = _client(live, tmp_path, max_body=1_000)
    user = live.events[0].user_id
    with client:
        assert client.get("/v1/users/nobody-here/scores").status_code == 404
        assert client.get(f"/v1/users/{user}/scores", params={"horizon": "soon"}).status_code == 422
        assert (
            client.get(f"/v1/users/{user}/scores", params={"horizon": "1e308d"}).status_code == 422
        )
        assert client.get(f"/v1/users/{user}/scores", params={"at": 0}).status_code == 422
        assert client.get(f"/v1/users/{'u' * 300}/scores").status_code == 422
        big = client.post("/v1/events", content=_ndjson(live.events[:50]), headers=NDJSON)
        assert big.status_code == 413 and big.json()["detail"]
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").status_code == 200
        assert b"ebbtide_events_total" in client.get("/metrics").content


def test_keys_scopes_and_refusals(live: Replay, tmp_path) -> None:
    keys = KeyRing(tmp_path / "keys.json")
    writer, _ = keys.create("writer", [Scope.EVENTS_WRITE])
    reader, _ = keys.create("reader", [Scope.SCORES_READ])
    keys.save()
    client = _client(live, tmp_path, keys=keys)
    user = live.events[0].user_id
    with client:
        assert client.get(f"/v1/users/{user}/scores").status_code == 401
        wrong = {"authorization": "Bearer ebt_00000000_nope"}
        assert client.get(f"/v1/users/{user}/scores", headers=wrong).status_code == 401
        as_writer = {"authorization": f"Bearer {writer}"}
        as_reader = {"authorization": f"Bearer {reader}"}
        assert client.get(f"/v1/users/{user}/scores", headers=as_writer).status_code == 403
        assert client.get(f"/v1/users/{user}/scores", headers=as_reader).status_code == 200
        posted = client.post(
            "/v1/events", content=_ndjson(live.events[:5]), headers={**NDJSON, **as_reader}
        )
        assert posted.status_code == 403
        assert client.delete(f"/v1/users/{user}", headers=as_reader).status_code == 403


def test_forget_reaches_store_and_live_state(live: Replay, tmp_path) -> None:
    client = _client(live, tmp_path)
    user = live.events[0].user_id
    with client:
        client.post("/v1/events", content=_ndjson(live.events[:200]), headers=NDJSON)
        assert client.get(f"/v1/users/{user}/scores").status_code == 200
        report = client.delete(f"/v1/users/{user}").json()
        assert report["events"] > 0 and report["live_state"] is True
        assert client.get(f"/v1/users/{user}/scores").status_code == 404
    with EventStore(live.db, read_only=True) as store:
        held = store.con.execute("SELECT count(*) FROM users WHERE user_id = ?", [user])
        assert held.fetchone()[0] == 0


def test_a_retrained_model_is_swapped_in(live: Replay, tmp_path) -> None:
    client = _client(live, tmp_path)
    with client:
        client.post("/v1/events", content=_ndjson(live.events[:300]), headers=NDJSON)
        swapped = client.post("/v1/admin/reload").json()
        assert swapped["events"] == _stored_count(live.db)
        user = live.events[0].user_id
        assert client.get(f"/v1/users/{user}/scores").status_code == 200


def test_alerts_name_users_whose_segment_worsened(live: Replay, tmp_path) -> None:
    with EventStore(live.db, read_only=True) as store:  # users may leave: silence tells
        model = DecayModel(DecayConfig(dropout="fit")).fit(store, cutoff=_cutoff(live))
    live = Replay(live.db, model.save(tmp_path / "leaving"), live.start, live.events)
    client = _client(live, tmp_path)
    service = client.app.state.service
    with client:
        client.post("/v1/events", content=_ndjson(live.events[:2_000]), headers=NDJSON)
        latest = max(e.ts for e in live.events[:2_000])
        users = service.state.user_ids()
        watch = SegmentWatch(SegmentRules(), horizon_days=1.0)  # the service's sweeps now
        for user in users:  # a first look, then a look days later: interest has faded
            watch.observe(service.state, user, latest + 1)
        alerts = [watch.observe(service.state, u, latest + 5 * 86_400) for u in users]
    raised = [a for a in alerts if a is not None]
    assert raised, "five silent days should worsen someone's segment"
    assert all(a.reason and a.segment != a.previous for a in raised)
    assert sum(watch.sizes().values()) == len(users)
    assert np.isfinite([a.p_return for a in raised]).all()


def _cutoff(live: Replay) -> datetime:
    return datetime.fromtimestamp(live.start, UTC)


def test_a_retry_after_a_restart_is_still_a_duplicate(live: Replay, tmp_path) -> None:
    batch = live.events[:40]
    with _client(live, tmp_path) as client:
        assert client.post("/v1/events", content=_ndjson(batch), headers=NDJSON).json()[
            "accepted"
        ] == len(batch)
    with _client(live, tmp_path) as client:  # state rebuilt from the store
        again = client.post("/v1/events", content=_ndjson(batch), headers=NDJSON).json()
    assert again["accepted"] == 0 and again["duplicates"] == len(batch)


def test_a_pseudonymised_store_never_sees_raw_ids(live: Replay, tmp_path, monkeypatch) -> None:
    key = b"k" * 32
    db = tmp_path / "private.duckdb"
    early = tmp_path / "early.jsonl"
    early.write_bytes(b"\n".join(post_json(e) for e in live.events[:300]))
    with EventStore(db) as store:
        ingest_file(store, early, "generic", mapping=CANONICAL, pseudonymiser=Pseudonymiser(key))
        model = DecayModel().fit(store, cutoff=datetime.fromtimestamp(live.events[300].ts, UTC))
    private = Replay(db, model.save(tmp_path / "model"), live.start, live.events)
    monkeypatch.setenv(KEY_ENV, key.decode())
    user = live.events[400].user_id
    with _client(private, tmp_path) as client:
        posted = client.post("/v1/events", content=_ndjson(live.events[300:600]), headers=NDJSON)
        assert posted.json()["accepted"] == 300
        assert client.get(f"/v1/users/{user}/scores").json()["user_id"] == user
    with EventStore(db, read_only=True) as store:
        ids = {r[0] for r in store.con.execute("SELECT user_id FROM users").fetchall()}
    raw = {e.user_id for e in live.events[:600]}
    assert ids and not ids & raw
    assert Pseudonymiser(key)(user) in ids
    logged = b"".join(p.read_bytes() for p in (tmp_path / "private.duckdb.log").iterdir())
    assert f'"{user}"'.encode() not in logged


def test_recommendations_are_the_models_lists_of_the_store(live: Replay, tmp_path) -> None:
    user, other = live.events[10].user_id, live.events[11].user_id
    with _client(live, tmp_path) as client:
        client.post("/v1/events", content=_ndjson(live.events[:500]), headers=NDJSON)
        service = client.app.state.service
        service.sink.flush()
        service.refresh_recommendations()
        answer = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        assert client.get(f"/v1/users/{user}/recommendations", params={"k": 0}).status_code == 422
        with EventStore(live.db) as store:  # the same store, as the service saw it
            at = datetime.fromtimestamp(answer["as_of"], UTC)
            batch = service.model.recommend(snapshot(store, at=at), [user], k=5)
        client.delete(f"/v1/users/{other}")
        assert client.get(f"/v1/users/{other}/recommendations").status_code == 404
    assert at > datetime.fromtimestamp(live.events[499].ts, UTC)
    assert [i["item_id"] for i in answer["items"]] == list(batch["item_id"])
