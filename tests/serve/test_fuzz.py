"""A property-based client (Schemathesis) drives every route of the OpenAPI document with
generated input, valid and not: no answer is a server error, and every refusal says why."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from ebbtide.serve.app import create_app
from ebbtide.serve.replay import Replay
from ebbtide.serve.security import Guard, KeyRing, RateLimiter, Scope
from ebbtide.serve.service import Service, ServiceConfig


@pytest.fixture
def api(live: Replay, tmp_path):
    keys = KeyRing(tmp_path / "keys.json")
    token, _ = keys.create("fuzz", [Scope.ADMIN])
    keys.save()
    service = Service(ServiceConfig(db=live.db, model_dir=live.model_dir))
    app = create_app(service, Guard(keys, RateLimiter(1e6, 10**6)), max_body_bytes=64_000)
    with TestClient(app):  # runs the lifespan: the state is built from the store
        app.state.token = token
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_input_makes_a_server_error(case) -> None:
    if case.path == "/v1/alerts":  # a stream that never ends; its refusals are covered
        case.headers = {**(case.headers or {}), "authorization": "Bearer nope"}
    else:
        token = case.operation.schema.app.state.token
        case.headers = {**(case.headers or {}), "authorization": f"Bearer {token}"}
    response = case.call()
    assert response.status_code < 500, (case.path, response.text)
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        assert response.json().get("detail"), response.text
