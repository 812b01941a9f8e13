"""API keys, scopes, rate and body limits of the live service, and `ebbtide keys`."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import stat
import threading
from pathlib import Path
from typing import Annotated, Any

import anyio
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from starlette.testclient import TestClient

from ebbtide.errors import ConfigError, Forbidden, Unauthenticated
from ebbtide.serve import security
from ebbtide.serve.security import (
    UNAUTHENTICATED,
    BodySizeLimit,
    Guard,
    KeyInfo,
    KeyRing,
    RateLimiter,
    Scope,
    authorize,
    check_bind,
    http_error_handler,
    redact,
    require,
)

TOKEN = re.compile(r"ebt_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")


class Clock:
    """Monotonic seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the key ring -----------------------------------------------------------------------------


def test_the_file_holds_hashes_never_tokens_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = KeyRing(path)
    tokens = [ring.create(name, [Scope.SCORES_READ])[0] for name in ("a", "b")]
    ring.save()
    text = path.read_text(encoding="utf-8")
    assert _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temporary file left
    for token in tokens:
        assert TOKEN.fullmatch(token)
        secret = token.split("_", 2)[2]
        assert token not in text and secret not in text
        assert hashlib.sha256(token.encode()).hexdigest() in text
    again = KeyRing.load(path)
    assert [again.authenticate(token).name for token in tokens] == ["a", "b"]
    assert {info.name for info in again.list()} == {"a", "b"}


def test_a_missing_file_is_an_empty_ring_unless_it_must_exist(tmp_path: Path) -> None:
    assert len(KeyRing.load(tmp_path / "none.json")) == 0
    with pytest.raises(ConfigError, match=r"no API keys file at .*ebbtide keys create"):
        KeyRing.load(tmp_path / "none.json", must_exist=True)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable API keys file"):
        KeyRing.load(tmp_path / "bad.json")


def test_every_refusal_compares_hashes_once_and_says_the_same(monkeypatch) -> None:
    ring = KeyRing()
    token, info = ring.create("scorer", [Scope.SCORES_READ])
    revoked, gone = ring.create("old", [Scope.SCORES_READ])
    ring.revoke(gone.key_id)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", counting)
    assert ring.authenticate(token) == info and len(calls) == 1
    wrong_secret = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    unknown_id = "ebt_" + ("0" * 8 if info.key_id != "0" * 8 else "1" * 8) + token[12:]
    refused = [None, "", "Bearer", "ebt_short", wrong_secret, unknown_id, revoked, token + "x"]
    messages = set()
    for bad in refused:
        calls.clear()
        with pytest.raises(Unauthenticated) as caught:
            ring.authenticate(bad)
        assert len(calls) == 1, bad  # the same work whether or not the key id exists
        assert len(calls[0][1]) == 32
        messages.add(str(caught.value))
    assert messages == {UNAUTHENTICATED}


def test_scopes_and_admin_implies_the_others() -> None:
    ring = KeyRing()
    _, writer = ring.create("bot", ["events:write"])
    _, admin = ring.create("ops", [Scope.ADMIN])
    authorize(writer, Scope.EVENTS_WRITE)
    with pytest.raises(Forbidden, match=r"lacks the scope scores:read; .*--scope scores:read"):
        authorize(writer, Scope.SCORES_READ)
    for scope in Scope:
        authorize(admin, scope)
    with pytest.raises(ConfigError, match="unknown scope 'scores:write'; use one of"):
        ring.create("x", ["scores:write"])
    with pytest.raises(ConfigError, match="at least one scope"):
        ring.create("x", [])
    with pytest.raises(ConfigError, match="key name"):
        ring.create("  ", [Scope.ADMIN])


def test_revoke_keeps_the_key_listed_and_refuses_it(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.json")
    token, info = ring.create("scorer", [Scope.SCORES_READ])
    assert ring.revoke(info.key_id).revoked
    assert ring.revoke(info.key_id).revoked  # again: nothing changes
    with pytest.raises(Unauthenticated):
        ring.authenticate(token)
    ring.save()
    (listed,) = KeyRing.load(ring.path).list()
    assert listed.key_id == info.key_id and listed.revoked
    with pytest.raises(ConfigError, match="no API key 'ffffffff'"):
        ring.revoke("ffffffff")


def test_a_running_ring_sees_new_and_revoked_keys_after_its_check_interval(
    tmp_path: Path, caplog
) -> None:
    path, clock = tmp_path / "keys.json", Clock()
    KeyRing(path).save()
    running = KeyRing.load(path, clock=clock)  # the server's
    editor = KeyRing.load(path)  # `ebbtide keys` in another process
    token, info = editor.create("scorer", [Scope.SCORES_READ])
    editor.save()
    assert not running.reload_if_changed()  # no look before the interval is over
    with pytest.raises(Unauthenticated):
        running.authenticate(token)
    clock.now += 0.5
    assert running.reload_if_changed() and running.authenticate(token) == info
    clock.now += 0.5
    assert not running.reload_if_changed()  # unchanged: one stat, no read
    editor.revoke(info.key_id)
    editor.save()
    clock.now += 0.5
    assert running.reload_if_changed()
    with pytest.raises(Unauthenticated):
        running.authenticate(token)
    # a hand edit that broke the file: reported, and the keys read before stay
    token2, _ = editor.create("bot", [Scope.EVENTS_WRITE])
    editor.save()
    clock.now += 0.5
    running.reload_if_changed()
    path.write_text("{broken", encoding="utf-8")
    clock.now += 0.5
    with caplog.at_level(logging.ERROR, logger="ebbtide.serve.security"):
        assert not running.reload_if_changed()
    assert "not reread" in caplog.text and token2 not in caplog.text
    assert running.authenticate(token2).name == "bot"
    path.unlink()  # no file: no key is valid
    clock.now += 0.5
    assert running.reload_if_changed() and len(running) == 0


def test_redact_and_check_bind() -> None:
    token, info = KeyRing().create("x", [Scope.ADMIN])
    assert redact(token) == f"ebt_{info.key_id}_…" and token[13:] not in redact(token)
    assert redact(None) == redact("hunter2") == "…"
    check_bind("127.0.0.1", auth_enabled=False)
    check_bind("::1", auth_enabled=False)
    check_bind("localhost", auth_enabled=False)
    check_bind("0.0.0.0", auth_enabled=True)
    with pytest.raises(ConfigError, match="only on a loopback address"):
        check_bind("0.0.0.0", auth_enabled=False)
    with pytest.raises(ConfigError):
        check_bind("10.1.2.3", auth_enabled=False)


# --- the rate limiter -------------------------------------------------------------------------


def test_the_rate_limiter_is_a_token_bucket_per_key() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.allow("a")[0] for _ in range(3)] == [True, True, True]
    assert limiter.allow("a") == (False, pytest.approx(0.5))
    assert limiter.allow("b") == (True, 0.0)  # another key has its own bucket
    clock.now += 0.25
    assert limiter.allow("a") == (False, pytest.approx(0.25))
    clock.now += 0.25
    assert limiter.allow("a") == (True, 0.0)
    clock.now += 100.0  # refills up to the burst, no further
    assert [limiter.allow("a")[0] for _ in range(4)] == [True, True, True, False]
    for rate, burst in ((0, 1), (1, 0), (float("inf"), 1)):
        with pytest.raises(ConfigError):
            RateLimiter(rate=rate, burst=burst)


def test_the_rate_limiter_is_thread_safe() -> None:
    limiter = RateLimiter(rate=1.0, burst=500, clock=lambda: 0.0)
    allowed = []

    def hammer() -> None:
        allowed.append(sum(limiter.allow("k")[0] for _ in range(1000)))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 500


# --- FastAPI --------------------------------------------------------------------------------


def _app(guard: Guard | None, max_bytes: int = 100) -> FastAPI:
    app = FastAPI()
    if guard is not None:
        app.state.guard = guard
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)
    app.add_exception_handler(HTTPException, http_error_handler)

    @app.get("/scores")
    async def scores(key: Annotated[KeyInfo, Depends(require(Scope.SCORES_READ))]) -> Any:
        return {"key_id": key.key_id}

    @app.post("/events", dependencies=[Depends(require(Scope.EVENTS_WRITE))])
    async def events(request: Request) -> Any:
        return {"bytes": len(await request.body()), "key_id": request.state.key_id}

    return app


@pytest.fixture()
def keyed() -> tuple[TestClient, dict[str, str], Clock]:
    ring, clock = KeyRing(), Clock()
    tokens = {
        name: ring.create(name, scopes)[0]
        for name, scopes in (
            ("scorer", [Scope.SCORES_READ]),
            ("writer", [Scope.EVENTS_WRITE]),
            ("admin", [Scope.ADMIN]),
        )
    }
    guard = Guard(ring, RateLimiter(rate=1.0, burst=3, clock=clock))
    return TestClient(_app(guard)), tokens, clock


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_requests_without_a_valid_key_get_401(keyed) -> None:
    client, tokens, _ = keyed
    token = tokens["scorer"]
    for headers in (
        {},
        _bearer(token[:-1] + ("A" if token[-1] != "A" else "B")),
        _bearer("ebt_00000000_" + token[13:]),
        {"Authorization": f"Basic {token}"},
        {"X-API-Key": "nonsense"},
    ):
        response = client.get("/scores", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"error": "unauthorized", "detail": UNAUTHENTICATED}


def test_a_valid_key_passes_by_either_header_and_admin_passes_everywhere(keyed) -> None:
    client, tokens, _ = keyed
    info = client.get("/scores", headers=_bearer(tokens["scorer"]))
    assert info.status_code == 200 and info.json()["key_id"] == tokens["scorer"][4:12]
    assert client.get("/scores", headers={"X-API-Key": tokens["scorer"]}).status_code == 200
    posted = client.post("/events", headers=_bearer(tokens["admin"]), content=b"x" * 10)
    assert posted.json() == {"bytes": 10, "key_id": tokens["admin"][4:12]}


def test_a_key_without_the_scope_gets_403(keyed) -> None:
    client, tokens, _ = keyed
    response = client.post("/events", headers=_bearer(tokens["scorer"]), content=b"{}")
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "forbidden" and "lacks the scope events:write" in body["detail"]
    assert client.get("/scores", headers=_bearer(tokens["writer"])).status_code == 403


def test_a_key_over_its_rate_gets_429_with_retry_after(keyed) -> None:
    client, tokens, clock = keyed
    headers = _bearer(tokens["scorer"])
    assert [client.get("/scores", headers=headers).status_code for _ in range(3)] == [200] * 3
    response = client.get("/scores", headers=headers)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert response.json()["error"] == "rate_limited"
    assert "retry after 1.00 s" in response.json()["detail"]
    assert client.get("/scores", headers=_bearer(tokens["admin"])).status_code == 200
    clock.now += 1.0
    assert client.get("/scores", headers=headers).status_code == 200


def test_a_body_over_the_limit_gets_413_by_length_or_by_chunks(keyed) -> None:
    client, tokens, _ = keyed
    headers = _bearer(tokens["writer"])
    response = client.post("/events", headers=headers, content=b"x" * 101)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert "over the limit of 100 bytes; send fewer events" in response.json()["detail"]
    assert client.post("/events", headers=headers, content=b"x" * 100).json()["bytes"] == 100

    def chunks(sizes: list[int]) -> Any:
        yield from (b"x" * size for size in sizes)

    chunked = client.post("/events", headers=headers, content=chunks([60, 60]))
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413 and chunked.json()["error"] == "payload_too_large"
    small = client.post("/events", headers=headers, content=chunks([30, 30]))
    assert small.status_code == 200 and small.json()["bytes"] == 60


def test_the_body_limit_stops_reading_at_the_limit() -> None:
    """A chunked upload of 10 × 40 bytes against 100: three chunks read, the app never runs."""
    reads, sent, called = [], [], []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope)

    async def receive() -> dict[str, Any]:
        reads.append(1)
        return {"type": "http.request", "body": b"x" * 40, "more_body": len(reads) < 10}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": [(b"transfer-encoding", b"chunked")]}
    anyio.run(BodySizeLimit(app, max_bytes=100), scope, receive, send)
    assert len(reads) == 3 and called == []
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"] == "payload_too_large"


def test_keys_off_lets_everything_through_and_a_missing_guard_is_a_bug() -> None:
    open_client = TestClient(_app(Guard(None)))
    assert open_client.get("/scores").json() == {"key_id": "local"}
    with pytest.raises(RuntimeError, match=r"app\.state\.guard"):
        TestClient(_app(None)).get("/scores")


# --- `ebbtide keys` ---------------------------------------------------------------------------


def test_keys_create_list_revoke(cli, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    created = cli.ok(
        "keys", "create", "ingest bot", "--scope", "events:write", "--scope", "scores:read",
        "--keys-file", str(path),
    )  # fmt: skip
    token = created.stdout.strip()
    assert created.stdout == token + "\n" and TOKEN.fullmatch(token)
    key_id = token[4:12]
    assert "shown only now" in created.stderr and token not in created.stderr
    assert f"Created API key {key_id} 'ingest bot' (events:write, scores:read)" in created.stderr
    text = path.read_text(encoding="utf-8")
    assert token not in text and hashlib.sha256(token.encode()).hexdigest() in text
    assert _mode(path) == 0o600

    listing_file = tmp_path / "keys-list.json"
    listed = cli.ok("keys", "list", "--keys-file", str(path), "--json", str(listing_file))
    assert token not in listed.stdout and token[13:] not in listed.stdout
    line = next(line for line in listed.stdout.splitlines() if key_id in line)
    assert "ingest bot" in line and "events:write, scores:read" in line and "active" in line
    (entry,) = json.loads(listing_file.read_text(encoding="utf-8"))
    assert entry["key_id"] == key_id and entry["scopes"] == ["events:write", "scores:read"]
    assert entry["revoked"] is False and entry["created_at"].endswith("Z")

    revoked = cli.ok("keys", "revoke", key_id, "--keys-file", str(path))
    assert revoked.stdout.startswith(f"Revoked API key {key_id} 'ingest bot'")
    assert "revoked" in cli.ok("keys", "list", "--keys-file", str(path)).stdout
    with pytest.raises(Unauthenticated):
        KeyRing.load(path).authenticate(token)
    again = cli.ok("keys", "revoke", key_id, "--keys-file", str(path))
    assert "already revoked; nothing changed" in again.stdout
    unknown = cli("keys", "revoke", "ffffffff", "--keys-file", str(path))
    assert unknown.exit_code == 1 and unknown.stderr.startswith("Error: no API key 'ffffffff'")


def test_keys_beside_the_store_and_refusals(cli, tmp_path: Path) -> None:
    db = tmp_path / "shop.duckdb"
    missing = cli("keys", "create", "x", "--scope", "admin", "--db", str(db))
    assert missing.exit_code == 1 and "Error: no store at" in missing.stderr
    db.touch()
    token = cli.ok("keys", "create", "x", "--scope", "admin", "--db", str(db)).stdout.strip()
    beside = tmp_path / "shop.duckdb.keys.json"
    assert KeyRing.load(beside).authenticate(token).name == "x"
    listed = cli.ok("keys", "list", "--db", str(db))
    assert token[4:12] in listed.stdout
    both = cli("keys", "list", "--db", str(db), "--keys-file", str(beside))
    assert both.exit_code == 1 and "give --keys-file or --db, not both" in both.stderr
    bad_scope = cli("keys", "create", "x", "--scope", "everything", "--keys-file", str(beside))
    assert bad_scope.exit_code == 2
    empty = cli.ok("keys", "list", "--keys-file", str(tmp_path / "none.json"))
    assert "No API keys in" in empty.stdout and "ebbtide keys create NAME --scope" in empty.stdout
