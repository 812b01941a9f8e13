"""The HTTP face of the live service (FastAPI): routes, errors as JSON, metrics, docs.

Every route is a thin translation to `Service`; answers are written with orjson and
returned as responses directly (FastAPI validates nothing on the way out), because a
read must cost well under a millisecond. The response models below exist for the OpenAPI
document (``/openapi.json``, ``/docs``), so clients see every field.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from ebbtide.cli.options import parse_duration
from ebbtide.errors import EbbtideError, InputFormatError
from ebbtide.serve.security import BodySizeLimit, Guard, Scope, http_error_handler, require
from ebbtide.serve.service import MAX_RECOMMENDATIONS, Service

#: The longest id a path may carry (bytes of UTF-8), as the ingest rules allow.
MAX_ID_BYTES = 256
#: Default largest request body: 1,000 events of about 1 KiB.
MAX_BODY_BYTES = 1 << 20


class PostAnswer(BaseModel):
    rows: int
    accepted: int
    duplicates: int
    rejected: int
    duplicate_lines: list[int]
    rejected_rows: list[dict[str, Any]]


class CategoryAnswer(BaseModel):
    category_id: str
    p_engage: float
    level: float
    long_run_level: float
    excitation: float
    half_life_days: float


class InterestAnswer(BaseModel):
    user_id: str
    at: float
    horizon_days: float
    interest_vs_usual: float | None
    interest_change: float | None
    categories: list[CategoryAnswer]


class ScoresAnswer(BaseModel):
    user_id: str
    at: float
    horizon_days: float
    p_return: float
    p_buy: float | None
    expected_return_days: float
    segment: str
    reason: str
    interest_vs_usual: float | None
    interest_change: float | None


class RecommendedItem(BaseModel):
    item_id: str
    score: float


class RecommendationsAnswer(BaseModel):
    user_id: str
    as_of: float
    items: list[RecommendedItem]


class ErrorAnswer(BaseModel):
    error: str
    detail: str


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _error(status: int, error: str, detail: str) -> Response:
    return _json({"error": error, "detail": detail}, status)


def _horizon(text: str) -> float:
    return parse_duration(text, "horizon") / timedelta(days=1)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


UserId = Annotated[str, PathParam(min_length=1, max_length=MAX_ID_BYTES)]
Horizon = Annotated[str, Query(max_length=32, description="e.g. 90m, 24h, 1d, 1w")]
At = Annotated[
    float | None,
    Query(description="epoch seconds of the read (default: now); not before the latest event"),
]


def create_app(
    service: Service,
    guard: Guard,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    background: Sequence[Callable[[], Coroutine]] = (),
) -> FastAPI:
    """The FastAPI application serving `service`; `guard` checks keys, scopes and rates.

    `background` coroutines (e.g. a replay) start once the state is built and are
    cancelled at shutdown, with the segment watch."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(service.start)
        tasks = [
            asyncio.create_task(service.watch_segments()),
            asyncio.create_task(service.refresh_recommendations_forever()),
        ]
        tasks += [asyncio.create_task(factory()) for factory in background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(service.stop)

    app = FastAPI(
        title="ebbtide live service",
        version="1",
        summary="Events in, each user's interest updated at once, answers in milliseconds.",
        lifespan=lifespan,
    )
    app.state.guard = guard
    app.state.service = service
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(HTTPException, http_error_handler)
    write = Depends(require(Scope.EVENTS_WRITE, guard))
    read = Depends(require(Scope.SCORES_READ, guard))
    admin = Depends(require(Scope.ADMIN, guard))
    errors = {
        400: {"model": ErrorAnswer},
        401: {"model": ErrorAnswer},
        403: {"model": ErrorAnswer},
        404: {"model": ErrorAnswer},
        413: {"model": ErrorAnswer},
        422: {"model": ErrorAnswer},
        429: {"model": ErrorAnswer},
    }

    @app.exception_handler(InputFormatError)
    async def bad_body(request: Request, exc: InputFormatError) -> Response:
        return _error(400, "bad request body", str(exc))

    @app.exception_handler(EbbtideError)
    async def refused(request: Request, exc: EbbtideError) -> Response:
        return _error(422, "cannot answer", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return _error(422, "invalid request", problems)

    app.add_middleware(Timed, observe=service.metrics.requests)

    @app.post(
        "/v1/events",
        dependencies=[write],
        responses={200: {"model": PostAnswer}, **errors},
        summary="Post events (JSON array or NDJSON)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            }
        },
    )
    async def post_events(request: Request) -> Response:
        """Acknowledged only once durable; every row is accepted, a duplicate (already
        seen: retries change nothing) or rejected with the ingest reason."""
        body = await request.body()
        result = await service.post(body, request.headers.get("content-type"))
        return _json(result.to_dict())

    @app.get(
        "/v1/users/{user_id}/scores",
        dependencies=[read],
        responses={200: {"model": ScoresAnswer}, **errors},
        summary="P(return), P(buy), expected days to return, segment and its reason",
    )
    async def scores(user_id: UserId, horizon: Horizon = "1d", at: At = None) -> Response:
        try:
            answer = service.scores(user_id, at, _horizon(horizon))
        except KeyError:
            return _unknown(user_id)
        return _json(answer.to_dict())

    @app.get(
        "/v1/users/{user_id}/interest",
        dependencies=[read],
        responses={200: {"model": InterestAnswer}, **errors},
        summary="Per category: interest now, long-run level, half-life",
    )
    async def interest(user_id: UserId, horizon: Horizon = "1d", at: At = None) -> Response:
        days = _horizon(horizon)
        instant = service.instant(at)
        try:
            answer = service.answer(user_id, instant, days)
        except KeyError:
            return _unknown(user_id)
        categories = [
            {
                "category_id": c.category_id,
                "p_engage": c.p_engage,
                "level": c.level,
                "long_run_level": c.baseline,
                "excitation": c.excitation,
                "half_life_days": c.half_life_days,
            }
            for c in answer.categories
        ]
        return _json(
            {
                "user_id": user_id,
                "at": instant,
                "horizon_days": days,
                "interest_vs_usual": _finite(answer.interest_vs_usual),
                "interest_change": _finite(answer.interest_change),
                "categories": categories,
            }
        )

    @app.get(
        "/v1/users/{user_id}/recommendations",
        dependencies=[read],
        responses={200: {"model": RecommendationsAnswer}, **errors},
        summary="Top-k items for the user (lists refreshed every few minutes; see as_of)",
    )
    async def recommendations(
        user_id: UserId, k: Annotated[int, Query(ge=1, le=MAX_RECOMMENDATIONS)] = 10
    ) -> Response:
        try:
            return _json(service.recommendations(user_id, k))
        except KeyError:
            return _unknown(user_id)

    @app.delete(
        "/v1/users/{user_id}",
        dependencies=[admin],
        responses=errors,
        summary="Forget a user: store, live state and alerts",
    )
    def forget(user_id: UserId) -> Response:
        return _json(service.forget(user_id))

    @app.post("/v1/admin/reload", dependencies=[admin], responses=errors)
    def reload(model_dir: Annotated[str | None, Query(max_length=4096)] = None) -> Response:
        """Swap in a retrained model; the state is rebuilt from the store first."""
        count = service.reload(Path(model_dir) if model_dir else None)
        return _json({"model": str(service.config.model_dir), "events": count})

    @app.get("/v1/alerts", dependencies=[read], summary="Early-warning alerts (server-sent events)")
    async def alerts(request: Request) -> StreamingResponse:
        """A user whose segment just worsened, with the reason; the last 20 first."""
        queue = service.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 3000\n\n"
                for alert in list(service.alerts)[-20:]:
                    yield _event(alert.to_dict())
                while not await request.is_disconnected():
                    try:
                        alert = await asyncio.wait_for(queue.get(), timeout=10)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    yield _event(alert.to_dict())
            finally:
                service.unsubscribe(queue)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/v1/summary", dependencies=[read], summary="Events per second, segments, alerts")
    async def summary() -> Response:
        return _json(
            {
                "now": service.instant(None),
                "latest_event": service.state.latest or None,
                "latest_user": service.latest_user,
                "events_per_second": service.accepted.rate(),
                "events_accepted": service.accepted.total,
                "users": len(service.state),
                "segments": service.watch.sizes(),
                "alerts": [a.to_dict() for a in list(service.alerts)[-20:]],
                "replaying": service.clock.replaying,
            }
        )

    page = monitor_page()

    @app.get("/monitor", include_in_schema=False)
    def monitor() -> Response:
        """The live monitor: a static page that reads the API with the key typed into it."""
        return Response(page.html, media_type="text/html; charset=utf-8", headers=page.headers)

    @app.get("/health", summary="The process answers")
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/ready", summary="The state is built and the log writable")
    async def ready() -> Response:
        if not service.ready:
            return _error(503, "not ready", "the live state is being built from the store")
        detail = {"status": "ready", "users": len(service.state)}
        if service.sink.last_error:
            detail["store"] = "loads are waiting: " + service.sink.last_error
        return _json(detail)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


@dataclass(frozen=True, slots=True)
class MonitorPage:
    html: bytes
    headers: dict[str, str]


def monitor_page() -> MonitorPage:
    """The monitor's HTML, and headers that let it run its own inline script and style,
    reach this server and nothing else."""
    html = (resources.files("ebbtide.serve") / "templates" / "monitor.html").read_bytes()
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
        for body in re.findall(rb"<script>(.*?)</script>", html, flags=re.S)
    )
    policy = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    headers = {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-cache",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    return MonitorPage(html, headers)


class Timed:
    """Request latency by route and status, as a plain ASGI middleware (Starlette's
    ``BaseHTTPMiddleware`` costs a task and a queue per request)."""

    def __init__(self, app: Any, observe: Any) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.observe.labels(route, str(status[0])).observe(time.perf_counter() - started)


def _unknown(user_id: str) -> Response:
    shown = user_id if len(user_id) <= 64 else user_id[:64] + "…"
    return _error(404, "unknown user", f"no events of user {shown!r} in the live state")


def _event(data: dict) -> bytes:
    return b"event: alert\ndata: " + orjson.dumps(data) + b"\n\n"
