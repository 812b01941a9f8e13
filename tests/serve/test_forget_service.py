"""`DELETE /v1/users/{id}` reaches the live state (memory and Redis), the loaded model, its
folder, the event log's files and the digests of the user's events."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.serve.test_redis import redis_url  # noqa: F401  (a fixture)

from ebbtide.models.base import Model
from ebbtide.serve.app import create_app
from ebbtide.serve.replay import Replay, post_json
from ebbtide.serve.security import Guard, RateLimiter
from ebbtide.serve.service import Service, ServiceConfig
from ebbtide.store import EventStore

USER = "zz-forget-me-7731"
NDJSON = {"content-type": "application/x-ndjson"}


def _files_holding(folder: Path, needle: str) -> list[str]:
    return [
        str(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and needle.encode() in p.read_bytes()
    ]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_forget_reaches_state_model_log_and_digests(
    live: Replay, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    log_dir = tmp_path / "log"
    config = ServiceConfig(
        db=live.db, model_dir=live.model_dir, log_dir=log_dir, sweep_seconds=60, state_url=url
    )
    service = Service(config)
    client = TestClient(create_app(service, Guard(None, RateLimiter(1e6, 10**6))))
    fitted = set(service.model.catalogue_.user_ids)
    known = next(e.user_id for e in live.events if e.user_id in fitted)
    mine = [replace(e, user_id=USER) for e in live.events[:30]]
    body = b"\n".join(post_json(e) for e in [*live.events[:200], *mine])
    with client:
        assert client.post("/v1/events", content=body, headers=NDJSON).status_code == 200
        service.sink.flush()  # part of the log in the store, part only in the log
        client.post(
            "/v1/events", content=b"\n".join(post_json(e) for e in mine[:5]), headers=NDJSON
        )
        assert _files_holding(log_dir, USER)
        for user in (USER, known):
            assert client.get(f"/v1/users/{user}/scores").status_code == 200
            report = client.delete(f"/v1/users/{user}").json()
            assert report["live_state"] is True and report["events"] > 0
            assert client.get(f"/v1/users/{user}/scores").status_code == 404
            assert user not in service.state.user_ids()
        assert report["model"] is True  # `known` was fitted on
        assert report["models_rewritten"] == [str(live.model_dir.resolve())]
        assert known not in set(service.model.catalogue_.user_ids)
        assert _files_holding(log_dir, USER) == []
        if backend == "redis":
            assert service.state.redis.keys(f"*{USER}*") == []
        # the digests went too: the same events, posted again, are new
        assert service.state.reserve([e.identity() for e in mine]) == [True] * len(mine)
        service.state.release([e.identity() for e in mine])
    assert known not in set(Model.load(live.model_dir).catalogue_.user_ids)
    assert USER.encode() not in live.db.read_bytes()  # the store was compacted
    with EventStore(live.db, read_only=True) as store:
        for user in (USER, known):
            held = store.con.execute("SELECT count(*) FROM users WHERE user_id = ?", [user])
            assert held.fetchone()[0] == 0
