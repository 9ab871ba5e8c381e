"""The operator page: health states, active actions (cancel), suppression
search, show and remove. Server-rendered HTML, every value escaped, no
script. Signed in with the API token through a login form (a cookie that
holds no token) or with the bearer header; every other request gets 401 and
the login form. Forms POST with a CSRF value."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from monitor.api.auth import COOKIE, TokenGuard, valid_name
from monitor.api.routes import PREFIX, Api, ApiError
from monitor.storage import suppression_admin as admin

log = logging.getLogger("repmon.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOGIN_FAILURES = 10  # wrong tokens from one peer ...
LOGIN_WINDOW_S = 300.0  # ... within this long: the login form refuses it for the rest of the window
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
_STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:75em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}.healthy{color:#070}
.warning{color:#a60}.critical,.blocked{color:#b00;font-weight:bold}.msg{background:#eef;padding:.5em}
.err{background:#fee;padding:.5em}form.inline{display:inline}"""


def h(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _doc(title: str, body: str, status: int = 200, cookie: str | None = None) -> web.Response:
    html = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{h(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")
    return web.Response(text=html, content_type="text/html", status=status, headers=HEADERS)


def login_page(message: str = "", status: int = 401) -> web.Response:
    note = f"<p class=err id=login-error>{h(message)}</p>" if message else ""
    return _doc("repmon: sign in", f"""<h1>repmon</h1>{note}
<form method=post action=/login id=login><p><label>Your name <input name=name required maxlength=64
 pattern="[A-Za-z0-9._@+-]+" autocomplete=username></label></p>
<p><label>API token <input name=token type=password required autocomplete=current-password></label></p>
<p><button type=submit>Sign in</button></p></form>""", status)


class Page:
    def __init__(self, api: Api, guard: TokenGuard, secure_cookie: bool) -> None:
        self.api = api
        self.guard = guard
        self.secure_cookie = secure_cookie
        self._failures: dict[str, list[float]] = {}  # peer -> times of wrong tokens (bounded below)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/login", self.login_form)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_get("/s/{address}", self.show)
        r.add_post("/s/{address}/remove", self.remove)
        r.add_post("/actions/{id}/cancel", self.cancel)

    # -- who is asking ---------------------------------------------------------------------

    def user(self, request: web.Request) -> str | None:
        """The operator name for a signed-in request (cookie), "bearer" for the header, else None."""
        if self.guard.bearer_ok(request.headers.get("Authorization")):
            return "bearer"
        return self.guard.cookie_user(request.cookies.get(COOKIE))

    def middleware(self) -> Callable[..., Any]:
        @web.middleware
        async def signed_in(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith(PREFIX) or request.path == "/login":
                return await handler(request)
            user = self.user(request)
            if user is None:
                return login_page("sign in first" if request.path != "/" else "")
            request["user"] = user
            return await handler(request)

        return signed_in

    async def form(self, request: web.Request) -> dict[str, str]:
        try:
            async with asyncio.timeout(self.api.body_timeout_s):
                data = await request.post()
        except TimeoutError:
            raise ApiError(408, "the form did not arrive in time", "body") from None
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def _csrf_ok(self, request: web.Request, fields: dict[str, str]) -> bool:
        if request.get("user") == "bearer":
            return True
        return self.guard.csrf_ok(request.cookies.get(COOKIE), fields.get("csrf"))

    def _csrf_field(self, request: web.Request) -> str:
        cookie = request.cookies.get(COOKIE)
        return f"<input type=hidden name=csrf value={h(self.guard.csrf(cookie))}>" if cookie else ""

    # -- sign in / out -----------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.Response:
        if self.user(request) is not None:
            raise web.HTTPSeeOther("/")
        return login_page(status=401)

    def _throttled(self, peer: str, now: float, failed: bool) -> bool:
        """True when `peer` gave a wrong token LOGIN_FAILURES times within LOGIN_WINDOW_S."""
        recent = [t for t in self._failures.get(peer, []) if now - t < LOGIN_WINDOW_S]
        if failed:
            recent.append(now)
        if recent:
            if len(self._failures) >= 10000 and peer not in self._failures:
                self._failures.clear()
            self._failures[peer] = recent[-LOGIN_FAILURES:]
        else:
            self._failures.pop(peer, None)
        return len(recent) >= LOGIN_FAILURES

    async def login(self, request: web.Request) -> web.Response:
        fields = await self.form(request)
        name = fields.get("name", "").strip()
        peer, now = request.remote or "?", time.monotonic()
        if self._throttled(peer, now, failed=False):
            return login_page("too many wrong tokens: wait a few minutes", status=429)
        if not self.guard.token_ok(fields.get("token", "")):
            log.warning("operator page: wrong token (name %r)", name[:64])
            self._throttled(peer, now, failed=True)
            return login_page("wrong token")
        if not valid_name(name):
            return login_page("name: letters, digits and ._@+- only", status=400)
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, self.guard.make_cookie(name), max_age=int(self.guard.session_s), httponly=True,
                            samesite="Strict", secure=self.secure_cookie, path="/")
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # -- the page ------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "").strip()[:admin.MAX_SEARCH]
        data = self.api.data
        states = await self.api.db(data.health_states)
        actions = await self.api.db(data.actions, True, None)
        found = await self.api.db(data.list_suppressions, admin.Filters(search=query or None), None, 100)
        body = [self._header(request), _message(request)]
        body.append(self._health_table(states))
        body.append(self._actions_table(request, actions))
        body.append(self._search(query, found.items, found.next_cursor is not None))
        return _doc("repmon", "".join(body))

    def _header(self, request: web.Request) -> str:
        return (f"<h1>repmon</h1><p>Signed in as <b id=user>{h(request.get('user'))}</b> "
                f"<form class=inline method=post action=/logout>{self._csrf_field(request)}"
                "<button type=submit>Sign out</button></form></p>")

    @staticmethod
    def _health_table(states: list[dict[str, Any]]) -> str:
        if not states:
            return "<h2>Health</h2><p id=health-empty>No health states stored yet.</p>"
        rows = "".join(
            f"<tr><td>{h(s['subject'])}</td><td class={h(s['state'])}>{h(s['state'])}</td><td>{h(s['score'])}</td>"
            f"<td>{'<br>'.join(h(r) for r in (s['reasons'] or [])[:5])}</td><td>{h(s['evaluated'])}</td></tr>"
            for s in states)
        return ("<h2>Health</h2><table id=health><tr><th>Subject</th><th>State</th><th>Score</th><th>Reasons</th>"
                f"<th>Evaluated</th></tr>{rows}</table>")

    def _actions_table(self, request: web.Request, actions: list[dict[str, Any]]) -> str:
        if not actions:
            return "<h2>Active actions</h2><p id=actions-empty>No action in force.</p>"
        rows = []
        for a in actions:
            cancel = (f"<form class=inline method=post action=/actions/{int(a['id'])}/cancel>{self._csrf_field(request)}"
                      "<input name=reason placeholder=why maxlength=500 required>"
                      f"<button type=submit id=cancel-{int(a['id'])}>Cancel</button></form>")
            rows.append(f"<tr><td>#{int(a['id'])}</td><td>{h(a['action'])}</td><td>{h(a['subject'])}</td>"
                        f"<td>{h(a['target'] or '')}</td><td>{h(a['rule'])}</td>"
                        f"<td>{'<br>'.join(h(e) for e in a['evidence'][:3])}</td><td>{h(a['started'])}</td>"
                        f"<td>{h(a['expires'] or 'until cleared')}</td><td>{cancel}</td></tr>")
        return ("<h2>Active actions</h2><table id=actions><tr><th>#</th><th>Action</th><th>Subject</th><th>Target</th>"
                "<th>Rule</th><th>Evidence</th><th>Started</th><th>Until</th><th></th></tr>" + "".join(rows) + "</table>")

    @staticmethod
    def _search(query: str, items: list[dict[str, Any]], more: bool) -> str:
        form = (f"<h2>Suppressions</h2><form method=get action=/ id=search><input name=q value=\"{h(query)}\" "
                "placeholder=\"address, domain or detail\" maxlength=200><button type=submit>Search</button></form>")
        if not items:
            return form + "<p id=no-suppressions>Nothing found.</p>"
        rows = "".join(
            f"<tr><td><a href=\"/s/{h(quote(i['address'], safe='@'))}\">{h(i['address'])}</a></td><td>{h(i['reason'])}</td>"
            f"<td>{h(i['detail'] or '')}</td><td>{h(i['source'])}</td><td>{h(i['first_seen'])}</td>"
            f"<td>{h(i['expires'] or 'never')}</td></tr>" for i in items)
        note = "<p>Showing the first 100: narrow the search.</p>" if more else ""
        return (form + "<table id=suppressions><tr><th>Address</th><th>Reason</th><th>Detail</th><th>Source</th>"
                f"<th>First seen</th><th>Expires</th></tr>{rows}</table>{note}")

    async def show(self, request: web.Request) -> web.Response:
        address = request.match_info["address"]
        try:
            found = await self.api.db(self.api.data.show, address)
        except admin.AdminError as exc:
            return _doc("repmon", f"<p class=err>{h(exc)}</p><p><a href=/>back</a></p>", 400)
        if found is None:
            return _doc("repmon", f"<p class=err>{h(address)} is not on the suppression list.</p><p><a href=/>back</a></p>",
                        404)
        error = request.query.get("err", "")[:300]
        note = f"<p class=err id=err>{h(error)}</p>" if error else ""
        return _doc(f"repmon: {found['address']}", note + self._detail(request, found))

    def _detail(self, request: web.Request, found: dict[str, Any]) -> str:
        fields = ("address", "suppressed", "reason", "detail", "source", "first_seen", "last_seen", "count", "expires")
        rows = "".join(f"<tr><th>{h(k)}</th><td id=f-{h(k)}>{h(found.get(k))}</td></tr>" for k in fields)
        event = found.get("event")
        if event:
            message = event.get("message") or {}
            rows += (f"<tr><th>event</th><td id=f-event>#{h(event['id'])} {h(event['kind'])} {h(event['occurred'])} "
                     f"{h(event.get('reason') or event.get('feedback_type') or '')}<br>message: "
                     f"{h(message.get('file') or message.get('source'))} {h(message.get('message_id') or '')}</td></tr>")
        history = "".join(f"<li>{h(a['at'])} {h(a['op'])} by {h(a['actor'])}: {h(a['why'])}</li>"
                          for a in found.get("history", []))
        remove = ""
        if found.get("suppressed"):
            target = h(quote(found["address"], safe="@"))
            remove = (f"<form method=post action=\"/s/{target}/remove\" id=remove>{self._csrf_field(request)}"
                      "<input name=reason placeholder=\"why (kept in the audit)\" maxlength=500 required>"
                      "<button type=submit>Remove from the list</button></form>")
        return (f"<p><a href=/>back</a></p><h1>{h(found['address'])}</h1><table id=detail>{rows}</table>{remove}"
                f"<h2>History</h2><ul id=history>{history or '<li>no change by hand</li>'}</ul>")

    async def remove(self, request: web.Request) -> web.Response:
        fields = await self.form(request)
        if not self._csrf_ok(request, fields):
            return _doc("repmon", "<p class=err>expired form: reload the page</p>", 403)
        address = request.match_info["address"]
        try:
            removed = await self.api.db(self.api.data.remove, address, fields.get("reason", ""), f"web:{request['user']}")
        except admin.AdminError as exc:
            raise web.HTTPSeeOther(f"/s/{quote(address, safe='@')}?" + urlencode({"err": str(exc)})) from None
        note = f"removed {address}" if removed else f"{address} was not on the list"
        raise web.HTTPSeeOther("/?" + urlencode({"msg": note}))

    async def cancel(self, request: web.Request) -> web.Response:
        fields = await self.form(request)
        if not self._csrf_ok(request, fields):
            return _doc("repmon", "<p class=err>expired form: reload the page</p>", 403)
        ident = request.match_info["id"]
        if not ident.isdigit() or len(ident) > 18:
            raise ApiError(400, "id: an action number", "id")
        try:
            await self.api.db(self.api.data.cancel_action, int(ident), f"web:{request['user']}",
                              fields.get("reason", "")[:500])
            note = f"action #{ident} cancelled"
        except ValueError as exc:
            note = str(exc)
        raise web.HTTPSeeOther("/?" + urlencode({"msg": note}))


def _message(request: web.Request) -> str:
    msg = request.query.get("msg", "")[:300]
    return f"<p class=msg id=msg>{h(msg)}</p>" if msg else ""
