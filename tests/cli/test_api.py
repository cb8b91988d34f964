"""The CLI's gateway client: tokens, retries after a 401, and error answers as one line.

The gateway here is a fake (canned answers through httpx's mock transport): these are the
client's own rules, whatever the gateway says; tests/cli/test_auth.py drives the real one."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import cli.api
from cli.api import Api, ApiError, StaticToken

Answer = httpx.Response | Exception


def envelope(status: int, error_type: str, message: str, **details: Any) -> httpx.Response:
    """The gateway's error envelope."""
    return httpx.Response(
        status, json={"error": {"type": error_type, "message": message, "details": details}}
    )


class FakeGateway:
    """Canned answers per (method, path), in order (the last one repeats); records requests."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Answer]] = {}
        self.requests: list[httpx.Request] = []

    def answer(self, method: str, path: str, *answers: Answer) -> None:
        self.routes[(method, path)] = list(answers)

    def seen(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if (r.method, r.url.path) == (method, path)]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return envelope(404, "not_found", f"no route {request.url.path}")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def fake_gateway(monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    """Every ``Api`` the CLI builds talks to a ``FakeGateway`` (only ``cli.api`` is affected)."""
    gateway = FakeGateway()
    real_client: Callable[..., httpx.Client] = httpx.Client

    def client(**kwargs: Any) -> httpx.Client:
        return real_client(transport=httpx.MockTransport(gateway.handle), **kwargs)

    monkeypatch.setattr(cli.api, "httpx", SimpleNamespace(Client=client, HTTPError=httpx.HTTPError))
    return gateway


def test_a_given_token_is_not_refreshed_after_a_401(fake_gateway: FakeGateway) -> None:
    fake_gateway.answer("GET", "/api/v1/databases", envelope(401, "unauthenticated", "expired"))
    assert StaticToken("t0k").refresh() is None
    with pytest.raises(ApiError) as caught:
        Api("http://gw", "t0k").request("GET", "/api/v1/databases")
    assert (caught.value.status, caught.value.error_type) == (401, "unauthenticated")
    sent = fake_gateway.seen("GET", "/api/v1/databases")
    assert len(sent) == 1  # no second try without a new token
    assert sent[0].headers["Authorization"] == "Bearer t0k"


def test_an_answer_that_is_no_envelope_keeps_its_status_and_text(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.answer("GET", "/a", httpx.Response(502, text="<html>Bad Gateway</html>"))
    fake_gateway.answer("GET", "/b", httpx.Response(500, json={"detail": "boom"}))
    fake_gateway.answer("GET", "/c", httpx.Response(400, json=["not", "an", "object"]))
    api = Api("http://gw/", None)
    assert api.base_url == "http://gw"
    for path, status, text in [
        ("/a", 502, "<html>Bad Gateway</html>"),
        ("/b", 500, '{"detail":"boom"}'),
        ("/c", 400, '["not","an","object"]'),
    ]:
        with pytest.raises(ApiError) as caught:
            api.request("GET", path)
        assert (caught.value.status, caught.value.error_type) == (status, "http_error")
        assert caught.value.message == text
        assert caught.value.one_line() == f"error ({status} http_error): {text}"
    assert all("Authorization" not in r.headers for r in fake_gateway.requests)


def test_validation_errors_fold_into_the_line_whatever_their_shape(
    fake_gateway: FakeGateway,
) -> None:
    errors: list[Any] = [
        {"loc": ["body", "port"], "msg": "Input should be a valid integer"},
        "a plain string error",
        {"msg": "Field required"},
        {"loc": ["body", "x"], "msg": "extra"},
        {"loc": ["body", "y"], "msg": "extra"},
    ]
    fake_gateway.answer(
        "POST",
        "/api/v1/databases",
        envelope(422, "validation_error", "the request does not match the schema", errors=errors),
    )
    with pytest.raises(ApiError) as caught:
        Api("http://gw", "t").request("POST", "/api/v1/databases", json={})
    assert caught.value.one_line() == (
        "error (422 validation_error): the request does not match the schema; "
        "port: Input should be a valid integer; a plain string error; body: Field required; "
        "+2 more"
    )


def test_an_answer_without_content_is_none(fake_gateway: FakeGateway) -> None:
    fake_gateway.answer("DELETE", "/api/v1/databases/d1", httpx.Response(204))
    assert Api("http://gw", "t").request("DELETE", "/api/v1/databases/d1") is None


def test_a_lost_connection_is_an_unreachable_error(fake_gateway: FakeGateway) -> None:
    fake_gateway.answer("GET", "/health", httpx.ConnectError("refused"))
    with pytest.raises(ApiError) as caught:
        Api("http://gw", None).request("GET", "/health")
    assert caught.value.one_line() == "error (0 unreachable): http://gw: ConnectError"
