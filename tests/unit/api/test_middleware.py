"""`middleware.Hardening` on the ASGI interface: timeouts, limits, ids, headers, safe logs."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from tenantry.api import clientip, middleware

Message = dict[str, Any]


def scope(headers: list[tuple[bytes, bytes]] | None = None, *, path: str = "/v1/x",
          query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "query_string": query,
            "headers": headers or [], "client": ("192.0.2.10", 5555)}


def feeder(*chunks: bytes, delay: float = 0.0) -> Any:
    queue = list(chunks)

    async def receive() -> Message:
        await asyncio.sleep(delay)
        if not queue:
            await asyncio.sleep(3600)
        chunk = queue.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue)}

    return receive


class Recorder:
    def __init__(self, block: bool = False) -> None:
        self.messages: list[Message] = []
        self.block = block

    async def __call__(self, message: Message) -> None:
        if self.block and message["type"] == "http.response.body":
            await asyncio.sleep(3600)
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.messages[0]["headers"]).get(name)


async def echo(scope: Any, receive: Any, send: Any) -> None:
    body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_body_is_replayed_to_the_app_with_headers_added() -> None:
    out = Recorder()
    await middleware.Hardening(echo)(scope(), feeder(b"ab", b"cd"), out)
    assert out.status == 200
    assert out.messages[1]["body"] == b"abcd"
    assert out.header(b"x-content-type-options") == b"nosniff"
    assert out.header(b"cache-control") == b"no-store"


async def test_declared_oversized_body_is_413_before_reading() -> None:
    out = Recorder()
    headers = [(b"content-length", str(2 * 1024 * 1024).encode())]
    await middleware.Hardening(echo)(scope(headers), feeder(), out)
    assert out.status == 413


async def test_streamed_oversized_body_is_413() -> None:
    out = Recorder()
    await middleware.Hardening(echo, max_body=10)(scope(), feeder(b"x" * 6, b"x" * 6), out)
    assert out.status == 413


async def test_bad_content_length_is_400() -> None:
    out = Recorder()
    await middleware.Hardening(echo)(scope([(b"content-length", b"-1")]), feeder(b""), out)
    assert out.status == 400


async def test_slow_body_is_408_after_the_read_timeout() -> None:
    out = Recorder()
    app = middleware.Hardening(echo, read_timeout=0.2)
    await app(scope(), feeder(b"a", b"b", b"c", delay=0.15), out)
    assert out.status == 408


async def test_unread_response_is_abandoned_after_the_write_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tenantry.api.access")
    app = middleware.Hardening(echo, write_timeout=0.2)
    await asyncio.wait_for(app(scope(), feeder(b"x"), Recorder(block=True)), 5)
    [record] = [r for r in caplog.records if r.name == "tenantry.api.access"]
    assert record.fields["error"] == "write timeout"  # type: ignore[attr-defined]


async def test_request_id_is_kept_only_when_safe() -> None:
    kept, minted = Recorder(), Recorder()
    await middleware.Hardening(echo)(scope([(b"x-request-id", b"req-1.a:b")]), feeder(b""), kept)
    await middleware.Hardening(echo)(scope([(b"x-request-id", b'"}\n{"admin":1')]),
                                     feeder(b""), minted)
    assert kept.header(b"x-request-id") == b"req-1.a:b"
    assert minted.header(b"x-request-id") not in (None, b'"}\n{"admin":1')


async def test_app_errors_are_500_and_logged_by_type_only(
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("password=hunter2hunter2")

    caplog.set_level(logging.INFO, "tenantry.api.access")
    out = Recorder()
    await middleware.Hardening(broken)(scope(), feeder(b""), out)
    assert out.status == 500
    assert b"hunter2" not in out.messages[1]["body"]
    assert "hunter2" not in caplog.text
    [record] = [r for r in caplog.records if r.name == "tenantry.api.access"]
    assert record.fields["error"] == "RuntimeError"  # type: ignore[attr-defined]


async def test_log_line_has_the_path_but_never_the_query_or_headers(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tenantry.api.access")
    headers = [(b"authorization", b"Bearer eyJsecret"), (b"x-forwarded-for", b"203.0.113.5")]
    await middleware.Hardening(echo, trusted_proxies=clientip.parse_networks(["192.0.2.0/24"]))(
        scope(headers, query=b"access_token=eyJsecret"), feeder(b'{"password":"pw"}'),
        Recorder())
    [record] = [r for r in caplog.records if r.name == "tenantry.api.access"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["path"] == "/v1/x"
    assert fields["client"] == "203.0.113.5"
    assert fields["status"] == 200
    assert "eyJsecret" not in json.dumps(fields) and "pw" not in json.dumps(fields)
