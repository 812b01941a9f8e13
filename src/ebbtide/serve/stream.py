"""Events from a Redis stream (``ebbtide serve --stream redis://HOST:PORT/DB/STREAM``).

Why: a shop that already publishes its clicks to a Redis stream should not need an HTTP
client. The consumer reads the stream in a consumer group (``?group=NAME``, default
``ebbtide``; consumer name ``hostname-pid`` unless ``?consumer=NAME``) and posts each
batch through `Service.post`, so checks, dedupe and durability are those of
``POST /v1/events``. An entry carries one event: a field ``event`` holding one JSON
object as the POST body takes it, or the canonical names (``user_id``, ``item_id``,
``ts`` …) as fields.

Entries are acknowledged (XACK) only once `post` returned, that is once the events are
durable; refused rows are acknowledged too (they are in the store's quarantine). On start
the consumer first claims entries that another consumer of the group left unacknowledged
for `CLAIM_IDLE_MS` (a crashed process), then re-reads its own pending entries (id 0):
whatever was delivered but not acknowledged before a crash is posted again, and what had
become durable counts as duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import orjson
import redis

from ebbtide.errors import ConfigError
from ebbtide.serve.redis_state import parse_redis_url

log = logging.getLogger("ebbtide.serve")

#: The fields an entry may carry instead of ``event``.
CANONICAL = (
    "user_id",
    "item_id",
    "category_id",
    "category_name",
    "behavior",
    "ts",
    "price",
    "quantity",
    "brand",
    "session_id",
)
#: Entries left unacknowledged this long by another consumer are taken over on start.
CLAIM_IDLE_MS = 60_000


class StreamConsumer:
    """Reads a Redis stream into `service` (module docstring); `run` is the task.

    Counters (``entries``, ``accepted``, ``duplicates``, ``rejected``) cover the entries
    acknowledged by this consumer.
    """

    def __init__(self, service, url: str, *, batch: int = 500, block_ms: int = 1_000) -> None:
        connection, stream, query = parse_redis_url(url)
        if stream is None:
            raise ConfigError(f"{url!r}: name the stream, redis://HOST:PORT/DB/STREAM")
        self.service = service
        self.url = connection
        self.stream = stream
        self.group = query.get("group") or "ebbtide"
        self.consumer = query.get("consumer") or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.block_ms = block_ms
        self.entries = self.accepted = self.duplicates = self.rejected = 0

    async def run(self) -> None:
        # The blocking client in worker threads: a cancelled task (shutdown) stops at
        # once, whatever the Redis call was doing (it ends within `block_ms`).
        client = redis.Redis.from_url(self.url)
        try:
            while True:
                try:
                    await self._consume(client)
                except (redis.RedisError, OSError) as exc:
                    log.warning("reading stream %s failed, will retry: %s", self.stream, exc)
                    await asyncio.sleep(1.0)
        finally:
            client.close()

    async def _consume(self, client: redis.Redis) -> None:
        try:
            await asyncio.to_thread(
                client.xgroup_create, self.stream, self.group, id="0", mkstream=True
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        start = "0-0"
        while True:  # entries of crashed consumers become ours, then are pending here
            reply = await asyncio.to_thread(
                client.xautoclaim, self.stream, self.group, self.consumer, CLAIM_IDLE_MS, start
            )
            start = _text(reply[0])
            if start == "0-0":
                break
        last = "0"  # our pending entries first, then new ones (">")
        while True:
            reply = await asyncio.to_thread(
                client.xreadgroup,
                self.group,
                self.consumer,
                {self.stream: last},
                count=self.batch,
                block=None if last != ">" else self.block_ms,
            )
            entries = _entries(reply)
            if not entries:
                last = ">"
                continue
            try:
                await self._post(entries)
            except Exception:  # e.g. the log cannot be written: nothing acknowledged
                log.exception("posting stream entries failed; they stay pending")
                await asyncio.sleep(1.0)
                last = "0"
                continue
            await asyncio.to_thread(client.xack, self.stream, self.group, *(i for i, _ in entries))
            if last != ">":
                last = _text(entries[-1][0])

    async def _post(self, entries: list[tuple[bytes, dict | None]]) -> None:
        rows = [_row(fields) for _, fields in entries if fields]
        if rows:
            result = await self.service.post(orjson.dumps(rows), "application/json")
            self.accepted += result.accepted
            self.duplicates += len(result.duplicates)
            self.rejected += len(result.rejected)
        self.entries += len(entries)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(reply) -> list[tuple[bytes, dict | None]]:
    """XREADGROUP's entries, as RESP2 (a list) or RESP3 (a dict) gives them."""
    if not reply:
        return []
    if isinstance(reply, dict):
        groups = list(reply.values())
        return [tuple(e) for g in groups for batch in g for e in batch]
    return [tuple(e) for _, batch in reply for e in batch]


def _row(fields: dict) -> object:
    """One entry as a row of a JSON array body; what is not an object is refused there."""
    named = {_text(k): v for k, v in fields.items()}
    if "event" in named:
        try:
            return orjson.loads(named["event"])
        except orjson.JSONDecodeError:
            return _text(named["event"])  # a string row: refused, and quarantined
    return {k: _text(v) for k, v in named.items() if k in CANONICAL}
