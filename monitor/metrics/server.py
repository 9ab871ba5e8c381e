"""The HTTP endpoint Prometheus scrapes (aiohttp, on the daemon's event loop).

The collection itself queries the database, so it runs in a worker thread:
a slow scrape never stalls the daemon's other jobs. The exposition format
follows the scraper's Accept header (Prometheus text or OpenMetrics) and the
body is gzip-compressed when the scraper asks for it. The server is
monitor/core/http.py's hardened one: header timeout, connection cap, rate
limited logs.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from monitor.core.http import HardenedServer, HttpLimits

log = logging.getLogger("repmon.metrics")

INDEX = b"""<html><head><title>repmon metrics</title></head>
<body><h1>repmon</h1><p><a href="/metrics">/metrics</a></p></body></html>
"""


# A scrape is one short GET: a few Prometheus servers and a browser, never hundreds.
LIMITS = HttpLimits(header_timeout_s=10.0, body_timeout_s=5.0, max_connections=64, max_body_bytes=16 * 1024)


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9478,
                 limits: HttpLimits = LIMITS) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.limits = limits
        self._server: HardenedServer | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_body_bytes)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        return app

    async def start(self) -> None:
        """Bind and serve; raises OSError when the port is taken."""
        server = HardenedServer(self.app(), self.host, self.port, self.limits, name="metrics")
        await server.start()
        self._server = server
        self.port = server.port  # tests ask for any free port: learn which one we got

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    @property
    def refused(self) -> int:
        return self._server.refused if self._server is not None else 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.to_thread(encoder, self.registry)
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()
        return response

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=INDEX, content_type="text/html")
