"""The HTTP endpoint Prometheus scrapes (aiohttp, on the daemon's event loop).

The collection itself queries the database, so it runs in a worker thread:
a slow scrape never stalls the daemon's other jobs. The exposition format
follows the scraper's Accept header (Prometheus text or OpenMetrics) and the
body is gzip-compressed when the scraper asks for it.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("repmon.metrics")

INDEX = b"""<html><head><title>repmon metrics</title></head>
<body><h1>repmon</h1><p><a href="/metrics">/metrics</a></p></body></html>
"""


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9478) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        return app

    async def start(self) -> None:
        """Bind and serve; raises OSError when the port is taken."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        if self.port == 0:  # tests ask for any free port: learn which one we got
            self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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
