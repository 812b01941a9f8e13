"""The monitor page (GET /monitor) in a real browser against the real server.

The server runs in process on uvicorn (a thread, a free port) with API keys on; Debian's
Chromium, driven by Playwright as in tests/report/test_browser.py, opens the page, is given
the key, and must show what one user's posted events change: the counter, the segments and
that user's interest.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from ebbtide.serve.app import create_app
from ebbtide.serve.replay import Replay, post_json
from ebbtide.serve.security import Guard, KeyRing, RateLimiter, Scope
from ebbtide.serve.service import Clock, Service, ServiceConfig

NDJSON = {"content-type": "application/x-ndjson"}


def _service(live: Replay) -> Service:
    """The service on a clock replaying from the cut, so the last day's events are news."""
    config = ServiceConfig(
        db=live.db, model_dir=live.model_dir, sweep_seconds=0.2, flush_seconds=0.2, fsync=False
    )
    return Service(config, Clock(live.start, speed=1.0))


def _keys() -> tuple[KeyRing, str]:
    ring = KeyRing()
    token, _ = ring.create("monitor", [Scope.EVENTS_WRITE, Scope.SCORES_READ])
    return ring, token


@pytest.fixture
def server(live: Replay) -> Iterator[tuple[str, Service, str]]:
    """The app on uvicorn in a thread: (base URL, its service, a key)."""
    ring, token = _keys()
    service = _service(live)
    app = create_app(service, Guard(ring, RateLimiter(1e6, 10**6)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", service, token
    finally:
        running.should_exit = True
        thread.join(timeout=15)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


def test_the_page_is_served_without_a_key_and_runs_only_its_own_script(live: Replay) -> None:
    ring, _ = _keys()
    client = TestClient(create_app(_service(live), Guard(ring, RateLimiter(1e6, 10**6))))
    page = client.get("/monitor")  # no lifespan: the page needs no state
    assert client.get("/v1/summary").status_code == 401
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy
    assert "connect-src 'self'" in policy
    for element in ("events-per-second", "segments", "alerts", "user-id", "interest-curve"):
        assert f'id="{element}"' in page.text
    assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")


def test_the_summary_names_the_latest_events_user(live: Replay) -> None:
    ring, token = _keys()
    auth = {"authorization": f"Bearer {token}"}
    service = _service(live)
    with TestClient(create_app(service, Guard(ring, RateLimiter(1e6, 10**6)))) as client:
        rebuilt = client.get("/v1/summary", headers=auth).json()["latest_user"]
        batch = live.events[:40]
        client.post(
            "/v1/events", content=b"\n".join(map(post_json, batch)), headers={**NDJSON, **auth}
        )
        after = client.get("/v1/summary", headers=auth).json()
    assert rebuilt is not None
    newest = max(e.ts for e in batch)
    assert after["latest_user"] == [e for e in batch if e.ts == newest][-1].user_id
    assert after["latest_event"] == pytest.approx(newest)


def _until(page, condition: str, arg: object = None) -> None:
    """Wait for a JavaScript `condition` on `arg`; a function, as the page's policy allows
    no evaluation of strings."""
    page.wait_for_function(f"(arg) => {condition}", arg=arg, timeout=10_000)


def _number(page, selector: str) -> float:
    return float(page.locator(selector).get_attribute("data-value"))


@pytest.mark.slow
def test_the_monitor_follows_a_users_events(chromium, server, live: Replay) -> None:
    base, service, token = server
    auth = {"authorization": f"Bearer {token}"}
    in_state = set(service.state.user_ids())
    counts = Counter(e.user_id for e in live.events if e.user_id in in_state)
    user, _ = counts.most_common(1)[0]
    mine = [e for e in live.events if e.user_id == user]

    page = chromium.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",  # the refusals before the key is typed are expected: nothing else
        lambda m: errors.append(m.text) if m.type == "error" and "401" not in m.text else 0,
    )
    try:
        page.goto(f"{base}/monitor")
        _until(page, "document.getElementById('status').classList.contains('bad')")
        assert "API key" in page.locator("#status").inner_text()

        page.fill("#api-key", token)
        page.click("#api-key-use")
        _until(page, "document.getElementById('users').dataset.value > 0")
        assert _number(page, "#events-accepted") == 0
        assert page.locator("#clock-mode").inner_text() == "replay"
        assert page.locator("#server-clock").inner_text().endswith("Z")
        # the field starts on the latest event's user, until one is chosen
        _until(page, "document.getElementById('user-id').value !== ''")
        assert page.input_value("#user-id") == service.latest_user
        _until(page, "/live/.test(document.getElementById('alerts-source').textContent)")

        page.fill("#user-id", user)
        page.press("#user-id", "Enter")
        _until(
            page,
            "document.getElementById('interest-total').dataset.value !== ''"
            " && /categories/.test(document.getElementById('interest-detail').textContent)",
        )
        before = _number(page, "#interest-total")

        answer = httpx.post(
            f"{base}/v1/events",
            content=b"\n".join(map(post_json, mine)),
            headers={**NDJSON, **auth},
        )
        assert answer.status_code == 200 and answer.json()["accepted"] == len(mine)
        # reads now stand at the latest event (the clock is behind it): a fixed answer
        interest = httpx.get(f"{base}/v1/users/{user}/interest", headers=auth).json()
        expected = sum(c["level"] for c in interest["categories"])
        assert abs(expected - before) > 1e-3 * max(before, 1.0)

        _until(
            page,
            "Number(document.getElementById('events-accepted').dataset.value) === arg",
            len(mine),
        )
        _until(
            page,
            "Math.abs(Number(document.getElementById('interest-total').dataset.value)"
            " - arg) < 1e-9",
            expected,
        )
        _until(page, "document.querySelectorAll('#segments [data-segment]').length > 0")
        sizes = {
            row.get_attribute("data-segment"): int(row.get_attribute("data-count"))
            for row in page.locator("#segments [data-segment]").all()
        }
        assert set(sizes) == {"active", "cooling", "at_risk", "dormant", "lost"}
        assert 0 < sum(sizes.values()) <= _number(page, "#users")
        assert page.locator("#interest-curve polyline").count() == 2  # history, projection
        assert errors == []
    finally:
        page.close()
