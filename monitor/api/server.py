"""The aiohttp server of the API and the operator page, safe against slow
and greedy clients (monitor/core/http.py's hardened server, shared with the
metrics and unsubscribe endpoints; log records of bad requests are rate
limited there too):

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

import logging
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from monitor.api.auth import TokenGuard
from monitor.api.data import ApiData
from monitor.api.page import Page
from monitor.api.routes import Api, bearer_required, errors_as_json
from monitor.api.settings import ApiConfig, split_listen
from monitor.core.http import HardenedServer, HttpLimits

log = logging.getLogger("repmon.api")


class ApiServer:
    def __init__(self, settings: ApiConfig, data: ApiData, token: str) -> None:
        self.settings = settings
        self.data = data
        self.host, self.port = split_listen(settings.listen)
        self.guard = TokenGuard(token, settings.session_hours * 3600)
        self.pool = ThreadPoolExecutor(settings.db_threads, thread_name_prefix="repmon-api")
        self.api = Api(data, self.guard, self.pool, settings.body_timeout_s)
        self.page = Page(self.api, self.guard, settings.secure_cookie)
        self._server: HardenedServer | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes,
                              middlewares=[errors_as_json, bearer_required(self.guard), self.page.middleware()])
        self.api.add_routes(app)
        self.page.add_routes(app)
        return app

    def limits(self) -> HttpLimits:
        s = self.settings
        return HttpLimits(header_timeout_s=s.header_timeout_s, body_timeout_s=s.body_timeout_s,
                          max_connections=s.max_connections, max_body_bytes=s.max_body_bytes)

    async def start(self) -> None:
        """Bind and serve; raises OSError when the address is taken."""
        server = HardenedServer(self.app(), self.host, self.port, self.limits(), name="api")
        await server.start()
        self._server = server
        self.port = server.port

    @property
    def refused(self) -> int:
        """Connections turned away at the cap (503)."""
        return self._server.refused if self._server is not None else 0

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
        self.pool.shutdown(wait=False, cancel_futures=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
