"""Sums over the tasks of a Spark barrier stage: the `Reducer` a decay fit runs with.

Both reducers add the tasks' vectors in partition order, starting from zeros, so every
task gets the same bits (the contract of `ebbtide.models.decay_em.Reducer`).

- `AllGatherReducer`: one ``BarrierTaskContext.allGather`` per sum. Simple, but Spark's
  barrier call polls its RPC once a second (``Thread.sleep(1000)`` in
  ``BarrierTaskContext.runBarrier``): measured 0.8 s per call here, whatever the size,
  and a decay fit sums about 450 times (two per EM iteration, the dropout search, the
  validation refit).
- `SocketReducer`: one ``allGather`` at the start, to share the address of a small TCP
  hub that partition 0 opens (and a random token, so only this stage's tasks may join);
  then each sum is one round trip of a few milliseconds. Barrier mode still matters: it
  starts all tasks together, so the hub and its peers can meet (as XGBoost and Horovod
  do on Spark).
"""

from __future__ import annotations

import base64
import hmac
import secrets
import socket
import struct
from typing import Any

import numpy as np

from ebbtide.errors import EbbtideError

__all__ = ["AllGatherReducer", "SocketReducer"]

_LENGTH = struct.Struct("!Q")


def _add_in_order(parts: list[tuple[int, np.ndarray]], size: int) -> np.ndarray:
    """Σ of the parts in partition order, from zeros; refuses vectors of another size."""
    total = np.zeros(size)
    for partition, part in sorted(parts, key=lambda item: item[0]):
        if part.size != size:
            raise EbbtideError(
                f"partition {partition} sent {part.size} values to sum, expected {size}:"
                " the tasks of a decay fit went out of step (a bug)"
            )
        total = total + part
    return total


class AllGatherReducer:
    """A sum per ``allGather``: each task sends its float64 vector (base64, tagged with its
    partition) and adds the gathered vectors in partition order."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.partition = int(context.partitionId())

    def sum(self, values: np.ndarray) -> np.ndarray:
        values = np.ascontiguousarray(values, dtype=np.float64)
        message = f"{self.partition}:{base64.b64encode(values.tobytes()).decode('ascii')}"
        parts = []
        for gathered in self.context.allGather(message):
            tag, data = gathered.split(":", 1)
            parts.append((int(tag), np.frombuffer(base64.b64decode(data), dtype=np.float64)))
        return _add_in_order(parts, values.size)

    def close(self) -> None:
        return None


class SocketReducer:
    """A sum per round trip to a hub in partition 0, met once through ``allGather``.

    Every task sends its vector to the hub; the hub adds them in partition order and sends
    the same bytes back to all. Use as a context manager (the sockets are closed at exit).
    """

    def __init__(self, context: Any) -> None:
        self.partition = int(context.partitionId())
        self.tasks = len(context.getTaskInfos())
        self._server: socket.socket | None = None
        self._peers: dict[int, socket.socket] = {}
        self._hub: socket.socket | None = None
        message = ""
        if self.partition == 0 and self.tasks > 1:
            host = context.getTaskInfos()[0].address.rsplit(":", 1)[0]
            self._server = socket.create_server(("", 0), backlog=self.tasks)
            token = secrets.token_hex(16)
            message = f"{host}:{self._server.getsockname()[1]}:{token}"
        hub = next(m for m in context.allGather(message) if m) if self.tasks > 1 else ""
        if self.tasks == 1:
            return
        host, port, token = hub.rsplit(":", 2)
        if self._server is not None:
            self._accept(token)
        else:
            self._hub = socket.create_connection((host, int(port)))
            _send(self._hub, f"{self.partition}:{token}".encode())

    def _accept(self, token: str) -> None:
        assert self._server is not None
        while len(self._peers) < self.tasks - 1:
            peer, _ = self._server.accept()
            tag, _, given = _receive(peer).decode().partition(":")
            if not hmac.compare_digest(given, token):
                peer.close()  # not a task of this stage
                continue
            self._peers[int(tag)] = peer

    def sum(self, values: np.ndarray) -> np.ndarray:
        values = np.ascontiguousarray(values, dtype=np.float64)
        if self.tasks == 1:
            return _add_in_order([(0, values)], values.size)
        if self._hub is not None:
            _send(self._hub, values.tobytes())
            return np.frombuffer(_receive(self._hub), dtype=np.float64).copy()
        parts = [(0, values)]
        for tag, peer in self._peers.items():
            parts.append((tag, np.frombuffer(_receive(peer), dtype=np.float64)))
        total = _add_in_order(parts, values.size)
        for peer in self._peers.values():
            _send(peer, total.tobytes())
        return total

    def close(self) -> None:
        for sock in (*self._peers.values(), self._hub, self._server):
            if sock is not None:
                sock.close()

    def __enter__(self) -> SocketReducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def _receive(sock: socket.socket) -> bytes:
    (size,) = _LENGTH.unpack(_exactly(sock, _LENGTH.size))
    return _exactly(sock, size)


def _exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise EbbtideError(
                "a task of the decay fit closed its connection mid-sum: another task failed"
                " (see its error above)"
            )
        got += n
    return bytes(buffer)
