"""API keys, scopes, rate limits and body size limits of the live service.

A key is a random token ``ebt_<key_id>_<secret>``: an 8-hex-digit id, which may be shown and
logged, and 32 random bytes (URL-safe base64), which never are. The token is shown once, by
`KeyRing.create`; the keys file holds only its SHA-256. The token is random and 256 bits
long, so one SHA-256 is as safe as a slow password hash and costs a microsecond, which a
service answering in milliseconds needs; a slow hash would only protect guessable secrets.

A request's key is checked in three steps, by `Guard.check` or the FastAPI dependency
`require`: `KeyRing.authenticate` (else 401), `authorize` against the endpoint's `Scope`
(else 403), `RateLimiter.allow` (else 429). `BodySizeLimit` answers 413 before the app reads
an oversized body. Error bodies are ``{"error": CODE, "detail": MESSAGE}``, the message
saying what to do next.

Nothing here logs a token: `redact` shows its id only.

Examples
--------
>>> ring = KeyRing()                      # in memory; `KeyRing.load(path)` reads a file
>>> token, info = ring.create("scorer", [Scope.SCORES_READ])
>>> ring.authenticate(token) == info
True
>>> authorize(info, Scope.EVENTS_WRITE)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ebbtide.errors.Forbidden: this API key lacks the scope events:write; ...
>>> redact(token) == f"ebt_{info.key_id}_…"
True
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from http import HTTPStatus
from pathlib import Path
from typing import Any

from ebbtide.errors import ConfigError, Forbidden, RateLimited, Unauthenticated

logger = logging.getLogger(__name__)


class Scope(StrEnum):
    """What a key may do. `ADMIN` implies every other scope."""

    EVENTS_WRITE = "events:write"
    SCORES_READ = "scores:read"
    ADMIN = "admin"


PREFIX = "ebt_"
#: Hex digits of a key id, and characters of a whole token (prefix, id, "_", 43 secret ones).
KEY_ID_LENGTH = 8
TOKEN_LENGTH = len(PREFIX) + KEY_ID_LENGTH + 1 + 43
SECRET_BYTES = 32
#: Longest key name; names are labels for people (who uses the key), not secrets.
MAX_NAME_LENGTH = 64
#: Seconds between two looks at the keys file's modification time by `reload_if_changed`.
CHECK_INTERVAL = 0.5

#: The one answer to every failed authentication: it never says what was wrong with the key.
UNAUTHENTICATED = (
    "missing, malformed, unknown or revoked API key; send a key made by"
    " `ebbtide keys create` as 'Authorization: Bearer TOKEN' or 'X-API-Key: TOKEN'"
)

#: Compared against when the key id is unknown, so that an unknown id costs what a known one
#: does. Random: no token hashes to it.
_DUMMY_DIGEST = hashlib.sha256(secrets.token_bytes(SECRET_BYTES)).digest()
_HEX = frozenset("0123456789abcdef")


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """An API key as the service sees it: everything but its secret and its hash."""

    key_id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked: bool = False

    def allows(self, scope: Scope) -> bool:
        """Whether the key has `scope`, directly or through `Scope.ADMIN`."""
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def scope_names(self) -> list[str]:
        """The scopes in a fixed order (that of `Scope`)."""
        return [scope.value for scope in Scope if scope in self.scopes]

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data (no secret, no hash)."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": self.scope_names(),
            "created_at": _iso(self.created_at),
            "revoked": self.revoked,
        }


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_scopes(values: Iterable[str | Scope]) -> frozenset[Scope]:
    """Scope names as `Scope` values; at least one, and only known ones."""
    found = set()
    for value in values:
        try:
            found.add(Scope(value))
        except ValueError:
            known = ", ".join(scope.value for scope in Scope)
            raise ConfigError(f"unknown scope {value!r}; use one of {known}") from None
    if not found:
        known = ", ".join(scope.value for scope in Scope)
        raise ConfigError(f"a key needs at least one scope; use one or more of {known}")
    return frozenset(found)


def _key_id_of(token: str) -> str | None:
    """The key id of a token of the right shape, else None (the secret is not looked at)."""
    if len(token) != TOKEN_LENGTH or not token.startswith(PREFIX):
        return None
    if token[len(PREFIX) + KEY_ID_LENGTH] != "_":
        return None
    return token[len(PREFIX) : len(PREFIX) + KEY_ID_LENGTH]


def redact(token: str | None) -> str:
    """A token as it may appear in a log: ``ebt_<key_id>_…``; nothing of anything else.

    >>> redact("ebt_0123abcd_" + "x" * 43)
    'ebt_0123abcd_…'
    >>> redact("my password")
    '…'
    """
    key_id = _key_id_of(token) if token else None
    if key_id is None or not set(key_id) <= _HEX:
        return "…"
    return f"{PREFIX}{key_id}_…"


def digest(token: str) -> bytes:
    """SHA-256 of the whole token, as stored (in hex) in the keys file."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class _Entry:
    info: KeyInfo
    digest: bytes


class KeyRing:
    """The API keys of one service, kept in a JSON file (mode 0600) that holds only hashes.

    `create` and `revoke` change the ring in memory; `save` writes the file (atomically: a
    reader sees the old file or the new one, never half of one). A running service calls
    `reload_if_changed` before each check: it looks at the file at most every
    `check_interval` seconds and rereads it when it changed, so a key created or revoked
    with `ebbtide keys` counts within a second. A file made unreadable by a hand edit is
    reported in the log and the keys read before stay in force; a deleted file leaves no
    key valid.

    `path` None keeps the ring in memory only (`save` then refuses). `clock` (monotonic
    seconds) times the checks; tests pass a fake one.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.check_interval = check_interval
        self._clock = clock
        self._keys: dict[str, _Entry] = {}
        self._signature: tuple[int, int, int] | None = None
        self._checked = clock()

    # --- the file ----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        must_exist: bool = False,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> KeyRing:
        """The ring in `path`; an empty one if there is no file yet (unless `must_exist`)."""
        ring = cls(path, check_interval=check_interval, clock=clock)
        assert ring.path is not None
        if not ring.path.exists():
            if must_exist:
                raise ConfigError(
                    f"no API keys file at {ring.path}; create a key first with"
                    f" `ebbtide keys create NAME --scope scores:read --keys-file {ring.path}`"
                )
            return ring
        ring._keys, ring._signature = _read(ring.path)
        return ring

    def save(self) -> None:
        """Write the ring to its file: a temporary file, fsync, then an atomic rename; 0600."""
        if self.path is None:
            raise ConfigError("this key ring has no file; give a path to KeyRing(...)")
        folder = self.path.parent
        if not folder.is_dir():
            raise ConfigError(f"no folder {folder} for the keys file {self.path}; create it first")
        entries = sorted(self._keys.values(), key=lambda e: (e.info.created_at, e.info.key_id))
        data = {
            "format": "ebbtide-keys",
            "version": 1,
            "hash": "sha256",
            "keys": [{**entry.info.to_dict(), "sha256": entry.digest.hex()} for entry in entries],
        }
        text = json.dumps(data, indent=2) + "\n"
        handle, temporary = tempfile.mkstemp(
            dir=folder, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            os.fchmod(handle, 0o600)
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_folder(folder)
        stat = self.path.stat()
        self._signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def reload_if_changed(self) -> bool:
        """Reread the file if it changed since it was last read; True if it was reread.

        Cheap enough to call on every request: it does nothing until `check_interval`
        seconds have passed since its last look, then one ``stat``.
        """
        if self.path is None:
            return False
        now = self._clock()
        if now - self._checked < self.check_interval:
            return False
        self._checked = now
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            if self._signature is not None or self._keys:
                logger.warning("API keys file %s is gone: no key is valid now", self.path)
            self._keys, self._signature = {}, None
            return True
        if (stat.st_mtime_ns, stat.st_size, stat.st_ino) == self._signature:
            return False
        try:
            keys, signature = _read(self.path)
        except (ConfigError, OSError) as exc:
            # Remember the broken version so that it is reported once, not on every look.
            self._signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            logger.error("API keys file not reread, the keys read before stay in force: %s", exc)
            return False
        self._keys, self._signature = keys, signature
        logger.info("API keys reread from %s: %d keys", self.path, len(keys))
        return True

    # --- keys --------------------------------------------------------------------------------

    def create(self, name: str, scopes: Iterable[str | Scope]) -> tuple[str, KeyInfo]:
        """A new key: its token (show it once; it is stored only as a hash) and its info.

        Call `save` to write it to the file.
        """
        name = name.strip()
        if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise ConfigError(
                f"key name {name!r}: use 1 to {MAX_NAME_LENGTH} printable characters, e.g. the"
                " client's name (scorer, ingest-bot)"
            )
        wanted = parse_scopes(scopes)
        key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
        while key_id in self._keys:
            key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
        token = f"{PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
        info = KeyInfo(key_id=key_id, name=name, scopes=wanted, created_at=_utc_now())
        self._keys = {**self._keys, key_id: _Entry(info, digest(token))}
        return token, info

    def revoke(self, key_id: str) -> KeyInfo:
        """Mark a key revoked (it stays listed); call `save` to write it to the file."""
        entry = self._keys.get(key_id)
        if entry is None:
            where = f" in {self.path}" if self.path is not None else ""
            raise ConfigError(
                f"no API key {key_id!r}{where}; see the key ids with `ebbtide keys list`"
            )
        if entry.info.revoked:
            return entry.info
        info = KeyInfo(
            key_id=key_id,
            name=entry.info.name,
            scopes=entry.info.scopes,
            created_at=entry.info.created_at,
            revoked=True,
        )
        self._keys = {**self._keys, key_id: _Entry(info, entry.digest)}
        return info

    def list(self) -> list[KeyInfo]:
        """Every key, revoked ones included, oldest first."""
        infos = [entry.info for entry in self._keys.values()]
        return sorted(infos, key=lambda info: (info.created_at, info.key_id))

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, token: str | None) -> KeyInfo:
        """The key `token` belongs to, else `Unauthenticated` (missing, malformed, unknown or
        revoked: one message for all).

        Costs the same whether or not the key id exists: the token's hash is always compared,
        in constant time (`hmac.compare_digest`), against the stored one or a dummy.
        """
        keys = self._keys  # one read: a reload swaps the whole dict
        token = token or ""
        key_id = _key_id_of(token)
        entry = keys.get(key_id) if key_id is not None else None
        expected = entry.digest if entry is not None else _DUMMY_DIGEST
        matches = hmac.compare_digest(digest(token), expected)
        if not matches or entry is None or entry.info.revoked:
            raise Unauthenticated(UNAUTHENTICATED)
        return entry.info


def _read(path: Path) -> tuple[dict[str, _Entry], tuple[int, int, int]]:
    """The entries of a keys file and the (mtime, size, inode) of what was read."""
    with open(path, encoding="utf-8") as file:
        stat = os.fstat(file.fileno())
        text = file.read()
    signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    try:
        data = json.loads(text)
        if data.get("format") != "ebbtide-keys" or data.get("hash") != "sha256":
            raise ValueError("not an ebbtide keys file")
        keys = {}
        for item in data["keys"]:
            key_id = str(item["key_id"])
            stored = bytes.fromhex(item["sha256"])
            if len(key_id) != KEY_ID_LENGTH or not set(key_id) <= _HEX or len(stored) != 32:
                raise ValueError(f"bad key id or hash in the entry of {key_id!r}")
            info = KeyInfo(
                key_id=key_id,
                name=str(item["name"]),
                scopes=parse_scopes(item["scopes"]),
                created_at=datetime.fromisoformat(item["created_at"].replace("Z", "+00:00")),
                revoked=bool(item["revoked"]),
            )
            keys[key_id] = _Entry(info, stored)
    except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
        raise ConfigError(
            f"{path} is not a readable API keys file ({exc}); restore it from a backup or"
            " move it away and create new keys with `ebbtide keys create`"
        ) from None
    return keys, signature


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (where the system allows opening a folder)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def authorize(info: KeyInfo, scope: Scope) -> None:
    """`Forbidden`, naming the missing scope, unless the key has `scope` (or admin)."""
    if not info.allows(scope):
        raise Forbidden(
            f"this API key lacks the scope {scope.value}; use a key created with"
            f" `ebbtide keys create NAME --scope {scope.value}` (or with admin)"
        )


class RateLimiter:
    """A token bucket per key: `rate` requests per second on average, `burst` at once.

    `allow` is O(1) and thread-safe. `clock` (monotonic seconds) is for tests.
    """

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ConfigError(f"rate limit {rate!r}: use a positive number of requests per second")
        if not burst >= 1:
            raise ConfigError(f"rate limit burst {burst!r}: use a whole number of 1 or more")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, list[float]] = {}  # key id -> [tokens, time of last refill]

    def allow(self, key_id: str) -> tuple[bool, float]:
        """(True, 0.0) and one request taken from the key's bucket, or (False, seconds until
        the next request would be allowed)."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = [self.burst, now]
            else:
                bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
                bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return True, 0.0
            return False, (1.0 - bucket[0]) / self.rate


#: Who a request is when keys are turned off (loopback only, `check_bind`): allowed anything.
LOCAL = KeyInfo(
    key_id="local",
    name="keys off (loopback only)",
    scopes=frozenset({Scope.ADMIN}),
    created_at=datetime(1970, 1, 1, tzinfo=UTC),
)


@dataclass
class Guard:
    """What checks a request: the key ring (None: keys off) and the rate limiter (None: none).

    With keys off every request passes as `LOCAL` and nothing is rate-limited (the limits
    are per key).
    """

    keys: KeyRing | None
    limiter: RateLimiter | None = None

    @property
    def auth_enabled(self) -> bool:
        return self.keys is not None

    def check(self, token: str | None, scope: Scope) -> KeyInfo:
        """The request's key, else `Unauthenticated`, `Forbidden` or `RateLimited`."""
        if self.keys is None:
            return LOCAL
        self.keys.reload_if_changed()
        info = self.keys.authenticate(token)
        authorize(info, scope)
        if self.limiter is not None:
            allowed, wait = self.limiter.allow(info.key_id)
            if not allowed:
                raise RateLimited(
                    f"this API key is over its rate limit of {self.limiter.rate:g} requests/s"
                    f" (bursts of {self.limiter.burst:g}); retry after {wait:.2f} s, or spread"
                    " the requests out (batch events into fewer requests)",
                    retry_after=wait,
                )
        return info


def check_bind(host: str, auth_enabled: bool) -> None:
    """`ConfigError` if keys are off on a host other machines can reach.

    >>> check_bind("127.0.0.1", auth_enabled=False)
    >>> check_bind("0.0.0.0", auth_enabled=True)
    """
    if auth_enabled or is_loopback(host):
        return
    raise ConfigError(
        f"API keys can be turned off only on a loopback address (127.0.0.1, ::1, localhost),"
        f" and {host!r} is reachable from other machines; keep keys on and create one with"
        " `ebbtide keys create NAME --scope scores:read`, or bind to 127.0.0.1"
    )


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


# --- HTTP -------------------------------------------------------------------------------------

#: The ``error`` field of a JSON error body, by status code.
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    413: "payload_too_large",
    429: "rate_limited",
}


def error_body(status: int, detail: str) -> dict[str, str]:
    """``{"error": CODE, "detail": MESSAGE}`` for a status code."""
    code = ERROR_CODES.get(status)
    if code is None:
        try:
            code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
        except ValueError:
            code = "error"
    return {"error": code, "detail": detail}


def api_token(headers: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer TOKEN``, else of ``X-API-Key``, else None.

    `headers` must look up names case-insensitively (Starlette's `Headers` do).
    """
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return headers.get("x-api-key")


#: Where `require` finds the `Guard` when none is given to it: ``app.state.guard``.
STATE_ATTRIBUTE = "guard"


def require(scope: Scope | str, guard: Guard | None = None) -> Callable[..., Awaitable[KeyInfo]]:
    """A FastAPI dependency that lets a request through only with a key that has `scope`.

    Reads the token from ``Authorization: Bearer`` (or ``X-API-Key``), checks it with
    `guard` (default: ``request.app.state.guard``) and answers 401 (with
    ``WWW-Authenticate: Bearer``), 403 or 429 (with ``Retry-After``) by raising
    `fastapi.HTTPException`; `http_error_handler` turns those into JSON error bodies. The
    dependency returns the `KeyInfo` and sets ``request.state.key_id`` (safe to log).
    It is ``async`` and blocks on nothing, so it runs on the event loop, not a thread.
    """
    from fastapi import HTTPException, Request

    wanted = Scope(scope)

    async def dependency(request: Request) -> KeyInfo:
        checker = guard
        if checker is None:
            checker = getattr(request.app.state, STATE_ATTRIBUTE, None)
            if checker is None:
                raise RuntimeError(
                    f"no Guard on the app: set app.state.{STATE_ATTRIBUTE} = Guard(...) before"
                    " serving, or pass one to require(scope, guard)"
                )
        try:
            info = checker.check(api_token(request.headers), wanted)
        except Unauthenticated as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
        except Forbidden as exc:
            raise HTTPException(403, str(exc)) from None
        except RateLimited as exc:
            seconds = str(max(1, math.ceil(exc.retry_after)))
            raise HTTPException(429, str(exc), headers={"Retry-After": seconds}) from None
        request.state.key_id = info.key_id
        return info

    # The annotation must be the class itself: FastAPI resolves string annotations in the
    # module's globals, where `Request` is not (fastapi is imported on first use only).
    dependency.__annotations__ = {"request": Request, "return": KeyInfo}
    return dependency


async def http_error_handler(request: Any, exc: Any) -> Any:
    """A FastAPI exception handler for `HTTPException`: ``{"error", "detail"}`` bodies,
    with the exception's headers (``WWW-Authenticate``, ``Retry-After``) kept."""
    from starlette.responses import JSONResponse

    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return JSONResponse(
        error_body(exc.status_code, detail), status_code=exc.status_code, headers=exc.headers
    )


class BodySizeLimit:
    """Pure ASGI middleware: 413 for a request body over `max_bytes`.

    A declared ``Content-Length`` over the limit is refused before any of the body is read.
    A body without one (``Transfer-Encoding: chunked``) is read here, up to the limit, before
    the app sees it: past the limit the request is refused and nothing more is read; under
    it the app receives the body as one message. The refusal closes the connection (the
    rest of the body is never read).

    ``app.add_middleware(BodySizeLimit, max_bytes=...)`` or ``BodySizeLimit(app, max_bytes)``.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        if not max_bytes >= 1:
            raise ConfigError(f"body size limit {max_bytes!r}: use a positive number of bytes")
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                await _send_error(send, 400, "Content-Length is not a number of bytes")
            elif declared > self.max_bytes:
                await self._too_large(send)
            else:
                await self.app(scope, receive, send)
            return
        if not chunked:
            await self.app(scope, receive, send)
            return
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        given = False

        async def replay() -> Any:
            nonlocal given
            if not given:
                given = True
                return whole
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        await _send_error(
            send,
            413,
            f"the request body is over the limit of {self.max_bytes:,} bytes; send fewer events"
            " per request (split the batch into smaller ones)",
        )


async def _send_error(send: Any, status: int, detail: str) -> None:
    body = json.dumps(error_body(status, detail)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
