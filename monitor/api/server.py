"""The aiohttp server of the API and the operator page, safe against slow
and greedy clients:

- a connection cap: past `max_connections` open connections a new one gets
  a 503 and is closed at once (it never reaches aiohttp);
- a header timeout: a connection must deliver a request's headers within
  `header_timeout_s` of opening or of its previous response (aiohttp's
  keep-alive timer is armed from the start of the connection and closes a
  connection still waiting for a complete request), so slowloris clients
  dribbling header bytes are cut off;
- a body timeout and size limit on every body read (`body_timeout_s`,
  `max_body_bytes`), header line and count limits from aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from monitor.api.auth import TokenGuard
from monitor.api.data import ApiData
from monitor.api.page import Page
from monitor.api.routes import Api, bearer_required, errors_as_json
from monitor.api.settings import ApiConfig, split_listen

log = logging.getLogger("repmon.api")

_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 37\r\n" \
        b"Connection: close\r\n\r\n{\"error\": \"too many open connections\"}"


class _Refuse(asyncio.Protocol):
    """What a connection over the cap talks to: one 503, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class ApiServer:
    def __init__(self, settings: ApiConfig, data: ApiData, token: str) -> None:
        self.settings = settings
        self.data = data
        self.host, self.port = split_listen(settings.listen)
        self.guard = TokenGuard(token, settings.session_hours * 3600)
        self.pool = ThreadPoolExecutor(settings.db_threads, thread_name_prefix="repmon-api")
        self.api = Api(data, self.guard, self.pool, settings.body_timeout_s)
        self.page = Page(self.api, self.guard, settings.secure_cookie)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self.refused = 0
        self._pending = 0  # connections accepted whose handler is not registered yet

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes,
                              middlewares=[errors_as_json, bearer_required(self.guard), self.page.middleware()])
        self.api.add_routes(app)
        self.page.add_routes(app)
        return app

    async def start(self) -> None:
        """Bind and serve; raises OSError when the address is taken."""
        runner = web.AppRunner(self.app(), access_log=None, keepalive_timeout=self.settings.header_timeout_s,
                               max_line_size=8190, max_field_size=8190, max_headers=64, lingering_time=2.0,
                               handler_cancellation=True)
        await runner.setup()
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._factory(runner), self.host, self.port, reuse_address=True,
                                                    backlog=128)
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        for sock in self._server.sockets:
            self.port = sock.getsockname()[1]
            break

    def _factory(self, runner: web.AppRunner) -> Any:
        server = runner.server
        assert server is not None
        cap = self.settings.max_connections

        loop = asyncio.get_running_loop()

        def settle() -> None:
            self._pending -= 1

        def make() -> asyncio.BaseProtocol:
            if len(server.connections) + self._pending >= cap:
                self.refused += 1
                return _Refuse()
            self._pending += 1
            # the transport schedules connection_made (which registers the
            # handler) right after this returns: settle after that
            loop.call_soon(loop.call_soon, settle)
            return server()

        return make

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.pool.shutdown(wait=False, cancel_futures=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
