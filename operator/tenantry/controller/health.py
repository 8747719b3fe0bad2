"""The operator's health port (`--liveness URL`): liveness at the URL's path, `/metrics` beside it.

Why not kopf's own liveness server: it serves exactly one path, so `/metrics` could not share
the port the Deployment already exposes and probes. This server answers on that port from the
start, through every phase of the process:

- standing by for the Lease (`--leader-elect`): liveness 200 `{"standby": true}`;
- acting: liveness is kopf's answer (its probes, after its start-up), fetched from kopf's own
  server on a loopback port only this process uses; 503 while kopf is still starting;
- always: `/metrics` in the Prometheus text format (`tenantry.metrics`).
"""

from __future__ import annotations

import contextlib
import socket
import urllib.parse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from tenantry import metrics

METRICS_PATH = "/metrics"
KOPF_PROBE_TIMEOUT = 5.0


def _loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HealthServer:
    """Serves the health port; `kopf_endpoint` is where kopf should serve its liveness."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or parsed.port is None:
            raise ValueError(f"--liveness {url!r}: expected http://HOST:PORT/PATH")
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port
        self.path = parsed.path or "/"
        self.kopf_endpoint = f"http://127.0.0.1:{_loopback_port()}/healthz"
        self.standby = True
        self._runner: web.AppRunner | None = None

    async def _liveness(self, _: web.Request) -> web.Response:
        if self.standby:
            return web.json_response({"standby": True})
        try:
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=KOPF_PROBE_TIMEOUT)) as session, \
                    session.get(self.kopf_endpoint) as answer:
                return web.Response(body=await answer.read(), status=answer.status,
                                    content_type="application/json")
        except (aiohttp.ClientError, TimeoutError):
            return web.json_response({"starting": True}, status=503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self.path, self._liveness)
        if self.path != METRICS_PATH:
            app.router.add_get(METRICS_PATH, self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def serving(url: str | None) -> AsyncIterator[HealthServer | None]:
    """The health server on `url` for the duration of the block (None: no health port)."""
    if url is None:
        yield None
        return
    server = HealthServer(url)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
