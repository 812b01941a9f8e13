"""The live state in Redis, so several service processes share it (``--state redis://``).

Why Redis: a shop runs more than one service process behind a load balancer; an event
posted to one must count once, and a read from any must see it. Each process keeps its own
append log and loads it into the shared store (`ebbtide.serve.sink`); only the state and
the seen digests live in Redis.

Keys, under ``ebbtide:<model fingerprint>:`` (a retrained model with other half-lives never
reads the decayed sums built for another; a reload fills its own namespace):

* ``seen:<digest>``: an event's digest; ``1`` once the event is durable and applied,
  else the token of the process that reserved it and is writing it;
* ``alive:<token>``: set, with a short expiry, by each `reserve` of the process holding
  that token;
* ``user:<id>``: the user's `LiveDecay.export_user` JSON plus ``n``, the number of events
  it holds;
* ``users``: the set of users; ``latest``: a sorted set holding the latest event time.

Promises, as `MemoryState` keeps them in one process:

* `reserve` is one Lua call per batch: a digest is fresh when absent, or when it is
  pending for a process that has not reserved anything for `PENDING_SECONDS` (it crashed
  before the event was durable, so the client got no answer and its retry must count).
  A racing copy pending for a live process is a duplicate, as in `MemoryState`;
* `apply` updates all the batch's users in one optimistic transaction (WATCH, MGET,
  MULTI/EXEC; retried on a concurrent change, then user by user), computing the new state
  with a local `LiveDecay` (import, add, export); the same transaction marks the events'
  digests done;
* `load_from` (what `rebuild` uses) is idempotent, so processes starting against the same
  Redis do not count the store twice: it builds each user's state from the store locally
  and *replaces* the shared one, unless the shared one already holds more events than the
  store (events other processes accepted and have not loaded into the store yet: those
  are kept). A user whose events arrived both ways in that window keeps the shared state
  until the next start.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import orjson
import redis

from ebbtide.errors import ConfigError
from ebbtide.models.decay import DecayModel
from ebbtide.models.decay_live import LiveAnswer, LiveDecay
from ebbtide.serve.records import LiveEvent

log = logging.getLogger("ebbtide.serve")

SECONDS_PER_DAY = 86_400.0
#: How long a reservation of a process that reserves nothing more stays a duplicate.
PENDING_SECONDS = 10.0
#: Optimistic tries of a whole batch before falling back to one user at a time.
BATCH_TRIES = 3
#: Users written by one call of the replace script, digests by one pipeline.
CHUNK = 2_000

_RESERVE = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
local out = {}
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if (not v) or (v ~= '1' and v ~= ARGV[1]
      and redis.call('EXISTS', ARGV[3] .. 'alive:' .. v) == 0) then
    redis.call('SET', KEYS[i], ARGV[1])
    out[i - 1] = 1
  else
    out[i - 1] = 0
  end
end
return out
"""

_RELEASE = """
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    n = n + 1
  end
end
return n
"""

# KEYS: users set, then user keys; ARGV: user ids, then states, then counts.
_REPLACE = """
local m = #KEYS - 1
local kept = 0
for i = 1, m do
  local old = redis.call('GET', KEYS[i + 1])
  local n = tonumber(ARGV[2 * m + i])
  if old and cjson.decode(old)['n'] > n then
    kept = kept + 1
  else
    redis.call('SET', KEYS[i + 1], ARGV[m + i])
    redis.call('SADD', KEYS[1], ARGV[i])
  end
end
return kept
"""


def parse_redis_url(url: str) -> tuple[str, str | None, dict[str, str]]:
    """``redis://HOST:PORT/DB[/STREAM][?query]`` → (connection URL, stream, query).

    >>> parse_redis_url("redis://h:6380/2/clicks?group=g")
    ('redis://h:6380/2', 'clicks', {'group': 'g'})
    """
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"{url!r}: a Redis URL starts redis://, rediss:// or unix://")
    segments = [s for s in parts.path.split("/") if s]
    db = "0"
    if segments and segments[0].isdigit():
        db = segments.pop(0)
    stream = "/".join(segments) or None
    query = dict(p.split("=", 1) if "=" in p else (p, "") for p in parts.query.split("&") if p)
    return f"{parts.scheme}://{parts.netloc}/{db}", stream, query


class RedisState:
    """The `LiveState` of several service processes, kept in Redis (module docstring).

    Parameters
    ----------
    model : DecayModel
        The fitted model; its fingerprint names the key namespace.
    url : str
        ``redis://HOST:PORT/DB``.
    namespace : str
        First part of every key.
    """

    def __init__(self, model: DecayModel, url: str, *, namespace: str = "ebbtide") -> None:
        self.model = model
        self._live = LiveDecay(model)  # scratch: holds a user only while computing
        self._lock = threading.Lock()
        connection, _, _ = parse_redis_url(url)
        self.url = connection
        self.redis = redis.Redis.from_url(connection)
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise ConfigError(f"cannot reach Redis at {connection}: {exc}") from None
        self.prefix = f"{namespace}:{self._live.fingerprint}:"
        self._users_key = self.prefix + "users"
        self._latest_key = self.prefix + "latest"
        self.token = uuid.uuid4().hex
        self._alive_key = f"{self.prefix}alive:{self.token}"
        self._reserve = self.redis.register_script(_RESERVE)
        self._release = self.redis.register_script(_RELEASE)
        self._replace = self.redis.register_script(_REPLACE)

    def close(self) -> None:
        self.redis.delete(self._alive_key)
        self.redis.close()

    # -- keys --------------------------------------------------------------------------
    def _seen(self, digest: bytes) -> str:
        return f"{self.prefix}seen:{digest.hex()}"

    def _user(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    # -- events ------------------------------------------------------------------------
    def reserve(self, digests: Sequence[bytes]) -> list[bool]:
        if not digests:
            return []
        keys = [self._alive_key, *(self._seen(d) for d in digests)]
        ttl = int(PENDING_SECONDS * 1000)
        out = self._reserve(keys=keys, args=[self.token, ttl, self.prefix])
        return [bool(v) for v in out]

    def release(self, digests: Sequence[bytes]) -> None:
        if digests:
            self._release(keys=[self._seen(d) for d in digests], args=[self.token])

    def apply(self, events: Sequence[LiveEvent]) -> None:
        if not events:
            return
        by_user: dict[str, list[LiveEvent]] = defaultdict(list)
        for e in events:
            by_user[e.user_id].append(e)
        for _ in range(BATCH_TRIES):
            if self._apply_once(by_user):
                return
        for user_id, own in by_user.items():  # contention: smaller transactions
            tries = 0
            while not self._apply_once({user_id: own}):
                tries += 1
                time.sleep(min(0.05, 0.001 * tries) * random.random())

    def _apply_once(self, by_user: dict[str, list[LiveEvent]]) -> bool:
        """One optimistic transaction; False when another process changed a user meanwhile."""
        users = list(by_user)
        keys = [self._user(u) for u in users]
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(*keys)
                olds = pipe.mget(keys)
                states = []
                latest = 0.0
                with self._lock:
                    live = self._live
                    for user_id, old in zip(users, olds, strict=True):
                        n = 0
                        if old is not None:
                            data = orjson.loads(old)
                            n = int(data["n"])
                            live.import_user(user_id, data)
                        try:
                            for e in by_user[user_id]:
                                t = e.ts / SECONDS_PER_DAY
                                live.add(user_id, e.category_id, e.behavior, t)
                                latest = max(latest, e.ts)
                            state = live.export_user(user_id)
                        finally:
                            live.forget(user_id)
                        state["n"] = n + len(by_user[user_id])
                        states.append(orjson.dumps(state))
                pipe.multi()
                for key, state in zip(keys, states, strict=True):
                    pipe.set(key, state)
                pipe.sadd(self._users_key, *users)
                pipe.zadd(self._latest_key, {"latest": latest}, gt=True)
                for own in by_user.values():
                    for e in own:
                        pipe.set(self._seen(e.identity()), "1")
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    # -- reads -------------------------------------------------------------------------
    def answer(self, user_id: str, at: float, horizon_days: float) -> LiveAnswer:
        raw = self.redis.get(self._user(user_id))
        if raw is None:
            raise KeyError(user_id)
        state = orjson.loads(raw)
        with self._lock:  # one scratch LiveDecay (its model tables are costly to build)
            self._live.import_user(user_id, state)
            try:
                return self._live.answer(user_id, at / SECONDS_PER_DAY, horizon_days)
            finally:
                self._live.forget(user_id)

    def forget(self, user_id: str, digests: Sequence[bytes] = ()) -> bool:
        with self._lock:
            self._live.forget_fitted(user_id)
        with self.redis.pipeline() as pipe:
            pipe.delete(self._user(user_id))
            pipe.srem(self._users_key, user_id)
            for lo in range(0, len(digests), CHUNK):
                pipe.delete(*(self._seen(d) for d in digests[lo : lo + CHUNK]))
            deleted, *_ = pipe.execute()
        return bool(deleted)

    def user_ids(self) -> list[str]:
        """Every user, sorted (Redis sets have no order; a sweep needs a stable one)."""
        return sorted(u.decode() for u in self.redis.smembers(self._users_key))

    def __len__(self) -> int:
        return int(self.redis.scard(self._users_key))

    @property
    def latest(self) -> float:
        value = self.redis.zscore(self._latest_key, "latest")
        return float(value) if value is not None else 0.0

    # -- rebuild -----------------------------------------------------------------------
    def load_from(self, events: Iterable[LiveEvent]) -> int:
        """Make the shared state hold the store's events, idempotently (module docstring).

        Returns the number of events read."""
        live = LiveDecay(self.model)
        counts: Counter[str] = Counter()
        latest = 0.0
        count = 0
        pipe = self.redis.pipeline(transaction=False)
        for e in events:
            live.add(e.user_id, e.category_id, e.behavior, e.ts / SECONDS_PER_DAY)
            counts[e.user_id] += 1
            latest = max(latest, e.ts)
            pipe.set(self._seen(e.identity()), "1")
            count += 1
            if count % CHUNK == 0:
                pipe.execute()
        pipe.execute()
        users = live.user_ids()
        kept = 0
        for lo in range(0, len(users), CHUNK):
            chunk = users[lo : lo + CHUNK]
            states = []
            for user_id in chunk:
                state = live.export_user(user_id)
                state["n"] = counts[user_id]
                states.append(orjson.dumps(state))
            kept += self._replace(
                keys=[self._users_key, *(self._user(u) for u in chunk)],
                args=[*chunk, *states, *(counts[u] for u in chunk)],
            )
        if count:
            self.redis.zadd(self._latest_key, {"latest": latest}, gt=True)
        if kept:
            log.info("%d users hold events not in the store yet: their shared state kept", kept)
        return count
