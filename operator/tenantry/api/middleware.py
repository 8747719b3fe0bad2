"""Server hardening as one pure-ASGI middleware: request ids, body limit, timeouts, headers, logs.

Around every HTTP request, in this order:

- **X-Request-ID**: a client's id is kept when it is 1-128 of `[A-Za-z0-9._:-]` (so it cannot
  inject into logs), else one is minted; it is returned on the response and in every log line.
- **Client address** (`clientip`): X-Forwarded-For only from configured proxies.
- **Body limit** (default 1 MiB): a larger Content-Length is refused at once with 413; a body
  that grows past the limit while streaming is cut off with 413 too. The body is read before
  the app runs, within the **read timeout** (15 s for the whole body; 408 after).
- **Write timeout** (15 s): a response the client does not read within it is abandoned (each
  `send` is bounded; uvicorn waits in `send` while the socket's buffer is full).
- **Security headers** on every response (nosniff, no framing, no referrer, a CSP that allows
  nothing, `Cache-Control: no-store` since responses carry tokens, HSTS for TLS deployments).
- **Headers a route asked for on every answer** (`state["response_headers"]`, e.g. the
  RateLimit-* headers, which must be on a 401 too, not only on a success).
- **One structured log line** per request: method, path (never the query string), status,
  duration, client address, request id. Never headers or bodies, so never a password, token
  or key; an exception is logged by its type only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from tenantry import logs
from tenantry.api import clientip

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY = 1024 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_DETAIL = {"application/json": {"schema": {
    "type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}}}
REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed request: an invalid Content-Length, a body that is not "
                         "text, or the client went away", "content": _DETAIL},
    408: {"description": "the request body did not arrive within the read timeout (15 s)",
          "content": _DETAIL},
    413: {"description": "the request body is larger than the limit (1 MiB by default)",
          "content": _DETAIL},
}
"""What this layer (and the framework's body parsing) may answer on any route, before the
route runs: documented on every operation of the OpenAPI document, so clients and the
schema-driven fuzzing know them."""

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)

access_log = logging.getLogger("tenantry.api.access")


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _WriteTimeout(Exception):
    """The client did not take the response within the write timeout."""


def request_id(headers: Sequence[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def _header(headers: Sequence[tuple[bytes, bytes]], wanted: bytes) -> str | None:
    for name, value in headers:
        if name == wanted:
            return value.decode("latin-1")
    return None


class Hardening:
    """The middleware (see module doc)."""

    def __init__(self, app: ASGIApp, *, max_body: int = DEFAULT_MAX_BODY,
                 read_timeout: float = 15.0, write_timeout: float = 15.0,
                 trusted_proxies: Sequence[clientip.Network] = ()) -> None:
        self.app = app
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
        rid = request_id(headers)
        # No peer address only on a Unix socket; 0.0.0.0 keeps the inet columns valid.
        peer = (scope.get("client") or ("0.0.0.0", 0))[0]  # noqa: S104 - not a bind address
        client = clientip.client_ip(peer, _header(headers, b"x-forwarded-for"),
                                    self.trusted_proxies)
        state = scope.setdefault("state", {})
        state["request_id"], state["client_ip"] = rid, client
        # Every log record of this request carries its id (the same id as its ledger entries
        # and the X-Request-ID answer), whatever logger writes it.
        logs.bind(request_id=rid)
        status = {"code": 0, "started": False}
        extra = [*SECURITY_HEADERS, (b"x-request-id", rid.encode())]

        async def send_bounded(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                added = [*extra, *((n.lower().encode(), v.encode())
                                   for n, v in state.get("response_headers", {}).items())]
                names = {name for name, _ in added}
                message["headers"] = [
                    *[(n, v) for n, v in message.get("headers", ()) if n.lower() not in names],
                    *added]
            try:
                await asyncio.wait_for(send(message), self.write_timeout)
            except TimeoutError:
                raise _WriteTimeout from None

        error: str | None = None
        try:
            body = await self._read_body(headers, receive)
            replay = _Replay(body, receive)
            await self.app(scope, replay, send_bounded)
        except _Refused as refused:
            if not status["started"]:
                await _plain(send_bounded, refused.status, refused.detail)
        except _WriteTimeout:
            error = "write timeout"
        except Exception as exc:  # logged by type, answered 500
            error = type(exc).__name__
            if not status["started"]:
                await _plain(send_bounded, 500, "internal error")
        finally:
            record = {"event": "request", "request_id": rid, "method": scope.get("method"),
                      "path": scope.get("path"), "status": status["code"],
                      "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                      "client": client}
            if error:
                record["error"] = error
            access_log.info("request", extra={"fields": record})

    async def _read_body(self, headers: Sequence[tuple[bytes, bytes]],
                         receive: Receive) -> bytes:
        length = _header(headers, b"content-length")
        if length is not None:
            if not length.isdigit():
                raise _Refused(400, "invalid Content-Length")
            if int(length) > self.max_body:
                raise _Refused(413, f"request body larger than {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise _Refused(408, "request body not received in time") from None
            if message["type"] == "http.disconnect":
                raise _Refused(400, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _Refused(413, f"request body larger than {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _Replay:
    """`receive` for the app: the body already read, then the real channel (disconnects)."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive

    async def __call__(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._receive()


async def _plain(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
