"""Several service processes sharing their live state in a real Redis (a redis-server
started for the test): reads from one see events posted to another, a retry through
another is a duplicate, the stream consumer acknowledges only durable events.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from ebbtide.models.base import Model
from ebbtide.serve.app import create_app
from ebbtide.serve.redis_state import RedisState, parse_redis_url
from ebbtide.serve.replay import Replay, post_json, read_events
from ebbtide.serve.security import Guard, RateLimiter
from ebbtide.serve.service import Service, ServiceConfig
from ebbtide.serve.state import MemoryState, rebuild, scores_of
from ebbtide.serve.stream import StreamConsumer
from ebbtide.store import EventStore

NDJSON = {"content-type": "application/x-ndjson"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path: Path):
    """A throw-away redis-server (no persistence) for one test."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; CI must run the Redis tests")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        else:
            pytest.fail("redis-server did not answer within 4 s")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


def _service(live: Replay, url: str, log_dir: Path) -> Service:
    config = ServiceConfig(
        db=live.db, model_dir=live.model_dir, log_dir=log_dir, sweep_seconds=60, state_url=url
    )
    return Service(config)


def _client(service: Service, background=()) -> TestClient:
    guard = Guard(None, RateLimiter(1e6, 10**6))
    return TestClient(create_app(service, guard, background=background))


def _ndjson(events) -> bytes:
    return b"\n".join(post_json(e) for e in events)


def test_parse_redis_url() -> None:
    assert parse_redis_url("redis://h:1/3/s/t?group=g") == ("redis://h:1/3", "s/t", {"group": "g"})
    assert parse_redis_url("redis://h:1") == ("redis://h:1/0", None, {})


@pytest.mark.slow  # each starts services rebuilding 73k stored events
def test_two_processes_share_the_state(live: Replay, tmp_path: Path, redis_url: str) -> None:
    a = _service(live, redis_url, tmp_path / "log-a")
    b = _service(live, redis_url, tmp_path / "log-b")
    posted = live.events[:3000]
    with _client(a) as ca, _client(b) as cb:
        assert len(a.state) == len(b.state) > 0  # both rebuilt: the second counted nothing twice
        for lo in range(0, len(posted), 500):
            answer = ca.post("/v1/events", content=_ndjson(posted[lo : lo + 500]), headers=NDJSON)
            assert answer.status_code == 200, answer.text
        retry = cb.post("/v1/events", content=_ndjson(posted[:500]), headers=NDJSON).json()
        assert retry["accepted"] == 0 and retry["duplicates"] == 500
        at = max(e.ts for e in posted) + 60.0
        users = sorted({e.user_id for e in posted})[:60]
        from_b = {
            u: cb.get(f"/v1/users/{u}/scores", params={"at": at, "horizon": "1d"}).json()
            for u in users
        }
        assert b.state.latest == a.state.latest == max(e.ts for e in posted)
    # the same events in one process's memory answer the same
    model = Model.load(live.model_dir)
    memory = MemoryState(model)
    new = {p.identity() for p in posted}
    with EventStore(live.db, read_only=True) as store:  # it holds the posted events now
        stored = [e for e in read_events(store) if e.identity() not in new]
    rebuild(memory, stored)
    memory.apply(posted)
    for user, got in from_b.items():
        want = scores_of(memory.answer(user, at, 1.0), user, at, 1.0, a.config.rules).to_dict()
        for name in ("p_return", "p_buy", "expected_return_days", "interest_change"):
            if want[name] is None:
                assert got[name] is None
            else:
                assert got[name] == pytest.approx(want[name], abs=1e-9, rel=1e-9), (user, name)
        assert got["segment"] == want["segment"]


@pytest.mark.slow  # each starts services rebuilding 73k stored events
def test_a_restart_does_not_count_twice(live: Replay, tmp_path: Path, redis_url: str) -> None:
    model = Model.load(live.model_dir)
    with EventStore(live.db, read_only=True) as store:
        events = list(read_events(store))
    first, second = RedisState(model, redis_url), RedisState(model, redis_url)
    first.load_from(events)
    user = events[-1].user_id
    at = events[-1].ts + 3600
    before = first.answer(user, at, 1.0)
    second.load_from(events)  # a second process starting on the same store and Redis
    assert second.answer(user, at, 1.0) == before
    assert second.reserve([e.identity() for e in events[:10]]) == [False] * 10
    first.close()
    second.close()


@pytest.mark.slow  # each starts services rebuilding 73k stored events
def test_forget_through_one_process(live: Replay, tmp_path: Path, redis_url: str) -> None:
    a = _service(live, redis_url, tmp_path / "log-a")
    b = _service(live, redis_url, tmp_path / "log-b")
    with _client(a) as ca, _client(b) as cb:
        user = live.events[0].user_id
        ca.post("/v1/events", content=_ndjson(live.events[:200]), headers=NDJSON)
        assert cb.get(f"/v1/users/{user}/scores").status_code == 200
        users = len(b.state)
        assert cb.delete(f"/v1/users/{user}").json()["live_state"] is True
        assert ca.get(f"/v1/users/{user}/scores").status_code == 404
        assert user not in a.state.user_ids()
        assert len(a.state) == users - 1


@pytest.mark.slow  # each starts services rebuilding 73k stored events
def test_stream_consumer(live: Replay, tmp_path: Path, redis_url: str) -> None:
    service = _service(live, redis_url, tmp_path / "log")
    base, _, _ = parse_redis_url(redis_url)
    consumer = StreamConsumer(service, f"{base}/clicks?group=shop", block_ms=50)
    r = redis.Redis.from_url(base)
    events = live.events[:400]

    def wait_acked(entries: int) -> None:
        for _ in range(800):
            try:
                pending = r.xpending("clicks", "shop")["pending"]
            except redis.ResponseError:  # the consumer has not made its group yet
                pending = -1
            if consumer.entries == entries and pending == 0:
                return
            time.sleep(0.025)
        raise AssertionError(f"{consumer.entries} of {entries} entries, {pending} pending")

    with _client(service, background=[consumer.run]) as client:
        for e in events[:200]:  # one JSON object in `event`
            r.xadd("clicks", {"event": post_json(e)})
        for e in events[200:]:  # the canonical names as fields
            fields = {k: str(v) for k, v in _fields(e).items()}
            r.xadd("clicks", fields)
        r.xadd("clicks", {"event": b"{not json"})
        wait_acked(401)
        assert consumer.accepted == 400 and consumer.rejected == 1
        user = events[0].user_id
        at = max(e.ts for e in events) + 60
        first = client.get(f"/v1/users/{user}/scores", params={"at": at}).json()
        users = len(service.state)
        for e in events:
            r.xadd("clicks", {"event": post_json(e)})
        wait_acked(801)
        assert consumer.duplicates == 400 and consumer.accepted == 400
        assert client.get(f"/v1/users/{user}/scores", params={"at": at}).json() == first
        assert len(service.state) == users
    r.close()


def _fields(e) -> dict:
    import orjson

    return {k: v for k, v in orjson.loads(post_json(e)).items() if v is not None}
