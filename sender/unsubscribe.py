"""One-click unsubscribe (RFC 8058): the List-Unsubscribe URL and its endpoint.

The URL carries an opaque token: the address and campaign, base64url, and an
HMAC over both, so the endpoint needs no lookup and a guessed or edited URL
unsubscribes nobody. A POST with `List-Unsubscribe=One-Click` puts the
address on the suppression list (reason opt_out). A GET only shows a page
with a button: RFC 8058 forbids unsubscribing on GET, because link scanners
fetch every URL in a message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import logging
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy.engine import Engine

from monitor.core.config import ConfigError, resolve_secret
from monitor.core.db import session_scope
from monitor.core.http import HardenedServer, HttpLimits, read_form
from monitor.storage.suppression import OPT_OUT, suppress
from sender.settings import UnsubscribeConfig

log = logging.getLogger("repmon.sender.unsubscribe")

# Public: anyone who got a message can reach it. A click is one small request.
LIMITS = HttpLimits(header_timeout_s=10.0, body_timeout_s=10.0, max_connections=256, max_body_bytes=4096)


class UnsubscribeConfigError(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(slots=True, frozen=True)
class TokenMaker:
    secret: bytes

    def make(self, address: str, campaign: str) -> str:
        payload = f"{address.lower()}\n{campaign}".encode()
        mac = hmac.new(self.secret, payload, hashlib.sha256).digest()[:16]
        return f"{_b64(payload)}.{_b64(mac)}"

    def read(self, token: str) -> tuple[str, str] | None:
        """(address, campaign) of a genuine token, else None."""
        payload_text, sep, mac_text = token.partition(".")
        if not sep:
            return None
        try:
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except (ValueError, TypeError):
            return None
        expected = hmac.new(self.secret, payload, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            return None
        address, _, campaign = payload.decode("utf-8", "replace").partition("\n")
        return (address, campaign) if "@" in address else None


def token_maker(config: UnsubscribeConfig) -> TokenMaker:
    try:
        secret = resolve_secret("sender.unsubscribe secret", config.secret, config.secret_env)
    except ConfigError as exc:
        raise UnsubscribeConfigError(str(exc)) from None
    if not secret:
        raise UnsubscribeConfigError("sender.unsubscribe: give secret or secret_env "
                                     "(the HMAC key of unsubscribe links)")
    return TokenMaker(secret.encode("utf-8"))


def header_builder(config: UnsubscribeConfig):
    """callable(address, campaign) -> the List-Unsubscribe value."""
    maker = token_maker(config)

    def build(address: str, campaign: str) -> str:
        value = f"<{config.url}/{maker.make(address, campaign)}>"
        if config.mailto:
            value += f", <mailto:{config.mailto}?subject=unsubscribe>"
        return value

    return build


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body><p>{text}</p>{form}</body></html>"""


def make_app(engine: Engine, maker: TokenMaker, limits: HttpLimits = LIMITS) -> web.Application:
    async def post(request: web.Request) -> web.Response:
        found = maker.read(request.match_info["token"])
        if found is None:
            return web.Response(status=404, text="unknown unsubscribe link\n")
        data = await read_form(request, limits)
        # RFC 8058 body; a plain form button (from the GET page) posts the same field.
        if data.get("List-Unsubscribe") != "One-Click":
            return web.Response(status=400, text="expected List-Unsubscribe=One-Click\n")
        address, campaign = found
        await asyncio.get_running_loop().run_in_executor(None, _suppress, engine, address, campaign)
        log.info("one-click unsubscribe", extra={"campaign": campaign})
        return web.Response(text=_PAGE.format(text="You are unsubscribed.", form=""), content_type="text/html")

    async def get(request: web.Request) -> web.Response:
        if maker.read(request.match_info["token"]) is None:
            return web.Response(status=404, text="unknown unsubscribe link\n")
        form = ('<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
                '<button type="submit">Unsubscribe</button></form>')
        return web.Response(text=_PAGE.format(text=html.escape("Stop receiving these messages?"), form=form),
                            content_type="text/html")

    app = web.Application(client_max_size=limits.max_body_bytes)
    app.router.add_post("/{token}", post)
    app.router.add_get("/{token}", get)
    # The configured URL may have a path prefix (https://host/unsubscribe/<token>).
    app.router.add_post("/{prefix:.*}/{token}", post)
    app.router.add_get("/{prefix:.*}/{token}", get)
    return app


def _suppress(engine: Engine, address: str, campaign: str) -> None:
    with session_scope(engine) as session:
        suppress(session, address, OPT_OUT, "list-unsubscribe", detail=f"campaign {campaign}"[:255])


async def serve(engine: Engine, config: UnsubscribeConfig, stopping: asyncio.Event,
                limits: HttpLimits = LIMITS, started: asyncio.Future[HardenedServer] | None = None) -> None:
    """Run the endpoint until `stopping` is set (monitor/core/http.py's
    hardened server: header timeout, connection cap, rate-limited logs).
    `started`, when given, gets the running server (tests read its port)."""
    host, _, port = config.listen.rpartition(":")
    server = HardenedServer(make_app(engine, token_maker(config), limits), (host or "127.0.0.1").strip("[]"),
                            int(port), limits, name="unsubscribe")
    await server.start()
    log.info("unsubscribe endpoint listening on %s", config.listen)
    if started is not None and not started.done():
        started.set_result(server)
    try:
        await stopping.wait()
    finally:
        await server.stop()
