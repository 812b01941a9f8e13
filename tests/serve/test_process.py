"""`ebbtide serve` as a real process on loopback: killed with SIGKILL under load, then
restarted, it has lost no acknowledged event, stored none twice, and its state equals a
batch replay of the store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ebbtide.features.history import snapshot
from ebbtide.models.base import Model
from ebbtide.models.scoring import score_users
from ebbtide.serve.replay import Replay, post_json
from ebbtide.store import EventStore

NDJSON = {"content-type": "application/x-ndjson"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`ebbtide serve` in a child process."""

    def __init__(self, live: Replay, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "ebbtide.cli", "serve", "--db", str(live.db),
            "--model-dir", str(live.model_dir), "--no-auth", "--port", str(self.port),
        ]  # fmt: skip
        self.log = log.open("ab")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the server exited while starting"
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not become ready")

    def stop(self, sig: int = signal.SIGINT) -> None:
        self.process.send_signal(sig)
        self.process.wait(timeout=60)
        self.log.close()


def _post_until_killed(url: str, live: Replay, acked: list, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=5) as client:
        for lo in range(0, len(live.events), 50):
            if stop.is_set():
                return
            batch = live.events[lo : lo + 50]
            try:
                answer = client.post(
                    "/v1/events", content=b"\n".join(post_json(e) for e in batch), headers=NDJSON
                )
            except httpx.HTTPError:
                return
            if answer.status_code == 200:
                acked.extend(batch)


@pytest.mark.slow
def test_kill_9_under_load_loses_no_acknowledged_event(live: Replay, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    before = _events(live.db)
    server = Server(live, log)
    server.wait_ready()
    acked: list = []
    stop = threading.Event()
    poster = threading.Thread(target=_post_until_killed, args=(server.url, live, acked, stop))
    poster.start()
    deadline = time.monotonic() + 30
    while len(acked) < 1_500 and poster.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    stop.set()
    poster.join(timeout=30)
    assert len(acked) >= 1_500, log.read_text()

    again = Server(live, log)
    again.wait_ready()
    users = sorted({e.user_id for e in acked})[:40]
    with httpx.Client(base_url=again.url, timeout=10) as client:
        at = client.get("/v1/summary").json()["latest_event"] + 1.0
        live_scores = {
            u: client.get(f"/v1/users/{u}/scores", params={"at": at}).json() for u in users
        }
    again.stop()

    with EventStore(live.db, read_only=True) as store:
        rows = store.con.execute(
            """SELECT u.user_id, i.item_id, epoch_us(e.ts), e.behavior FROM events e
            JOIN users u USING (user_idx) JOIN items i USING (item_idx)"""
        ).fetchall()
        stored = {(u, i, us, b) for u, i, us, b in rows}
        assert len(rows) == len(stored), "an event is stored twice"
        missing = [
            e for e in acked
            if (e.user_id, e.item_id, round(e.ts * 1e6), e.behavior) not in stored
        ]  # fmt: skip
        assert not missing, f"{len(missing)} acknowledged events were lost"
        assert len(rows) >= before + len(acked)
        history = snapshot(store, at=datetime.fromtimestamp(at, UTC))
        batch, _ = score_users(Model.load(live.model_dir), history, horizon=timedelta(days=1))
    batch = batch.set_index("user_id")
    for user, answer in live_scores.items():
        assert answer["p_return"] == pytest.approx(batch.loc[user, "p_return"], abs=1e-6)
        assert answer["expected_return_days"] == pytest.approx(
            batch.loc[user, "expected_return_days"], abs=1e-6
        )


def _events(db: Path) -> int:
    with EventStore(db, read_only=True) as store:
        return store.stats().events
