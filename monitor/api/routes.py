"""The JSON API under /api/v1. Every request needs `Authorization: Bearer
TOKEN` (401 otherwise); errors are JSON `{"error": message, "field": name}`,
and bad input is a 400 naming the field. Database calls run in the server's
database threads, never on the event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web

from monitor.api import openapi
from monitor.api.actions import ActionError
from monitor.api.auth import TokenGuard, valid_name
from monitor.api.data import MAX_LIMIT, ApiData
from monitor.storage import suppression_admin as admin

log = logging.getLogger("repmon.api")

PREFIX = "/api/v1"
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CURSOR_RE = re.compile(r"^\d{1,18}$")


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def error_response(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    headers = {"WWW-Authenticate": 'Bearer realm="repmon"'} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


class Api:
    """Handlers of the JSON API, sharing the data layer, the token and the threads."""

    def __init__(self, data: ApiData, guard: TokenGuard, pool: ThreadPoolExecutor, body_timeout_s: float) -> None:
        self.data = data
        self.guard = guard
        self.pool = pool
        self.body_timeout_s = body_timeout_s

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(PREFIX + "/suppressions", self.list_suppressions)
        r.add_get(PREFIX + "/suppressions/{address}", self.get_suppression)
        r.add_put(PREFIX + "/suppressions/{address}", self.put_suppression)
        r.add_delete(PREFIX + "/suppressions/{address}", self.delete_suppression)
        r.add_get(PREFIX + "/check", self.check)
        r.add_get(PREFIX + "/events", self.events)
        r.add_get(PREFIX + "/health", self.health)
        r.add_get(PREFIX + "/actions", self.actions)
        r.add_post(PREFIX + "/actions/{id}/cancel", self.cancel_action)
        r.add_get(PREFIX + "/openapi.json", self.openapi)

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def json_body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            async with asyncio.timeout(self.body_timeout_s):
                raw = await request.read()
        except TimeoutError:
            raise ApiError(408, "the request body did not arrive in time", "body") from None
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "body: not valid JSON", "body") from None
        if not isinstance(body, dict):
            raise ApiError(400, "body: give a JSON object", "body")
        return body

    # -- suppressions ------------------------------------------------------------------------

    async def list_suppressions(self, request: web.Request) -> web.Response:
        q = request.query
        filters = admin.Filters(reason=q.get("reason") or None, source=q.get("source") or None,
                                search=q.get("search") or None, include_expired=flag(q.get("include_expired"), "include_expired"))
        if q.get("since"):
            filters.since = admin.parse_since(q["since"])
        page = await self.db(self.data.list_suppressions, filters, q.get("cursor") or None, limit(q.get("limit")))
        return web.json_response({"items": page.items, "next_cursor": page.next_cursor})

    async def get_suppression(self, request: web.Request) -> web.Response:
        found = await self.db(self.data.show, request.match_info["address"])
        if found is None:
            raise ApiError(404, "not on the suppression list", "address")
        return web.json_response(found)

    async def put_suppression(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        why = text_field(body, "reason")
        row = await self.db(self.data.add, request.match_info["address"], why, actor(request, "api"))
        return web.json_response(row, status=200)

    async def delete_suppression(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        why = request.query.get("reason") or text_field(body, "reason")
        removed = await self.db(self.data.remove, request.match_info["address"], why, actor(request, "api"))
        if removed is None:
            raise ApiError(404, "not on the suppression list", "address")
        return web.json_response(removed)

    async def check(self, request: web.Request) -> web.Response:
        address = request.query.get("address")
        if not address:
            raise ApiError(400, "address: required", "address")
        return web.json_response(await self.db(self.data.check, address))

    # -- feeds -----------------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.Response:
        cursor = request.query.get("cursor") or "0"
        if not _CURSOR_RE.match(cursor):
            raise ApiError(400, "cursor: give the next_cursor of the previous page (digits)", "cursor")
        items = await self.db(self.data.events, int(cursor), limit(request.query.get("limit")))
        return web.json_response({"items": items, "next_cursor": str(items[-1]["id"]) if items else cursor})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"items": await self.db(self.data.health_states)})

    async def actions(self, request: web.Request) -> web.Response:
        active = flag(request.query.get("active"), "active")
        since = admin.parse_since(request.query.get("since") or "7d")
        return web.json_response({"items": await self.db(self.data.actions, active, since)})

    async def cancel_action(self, request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        if not _CURSOR_RE.match(ident):
            raise ApiError(400, "id: an action number", "id")
        body = await self.json_body(request)
        why = str(body.get("reason") or "")[:500]
        who = actor(request, "api")
        try:
            row = await self.db(self.data.cancel_action, int(ident), who, why)
        except ActionError as exc:
            status = 404 if str(exc).startswith("no action") else 409
            raise ApiError(status, str(exc), "id") from None
        return web.json_response(row)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.spec())


def limit(value: str | None, default: int = 100) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise ApiError(400, f"limit: a number from 1 to {MAX_LIMIT}", "limit")
    return int(value)


def flag(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ApiError(400, f"{name}: true or false", name)


def text_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name}: required (a non-empty string)", name)
    return value


def actor(request: web.Request, channel: str) -> str:
    """"api:NAME" from the X-Repmon-Actor header (who asked), "api" without it."""
    name = request.headers.get("X-Repmon-Actor", "").strip()
    if not name:
        return channel
    if not valid_name(name):
        raise ApiError(400, "X-Repmon-Actor: letters, digits and ._@+- only, at most 64", "X-Repmon-Actor")
    return f"{channel}:{name}"


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ApiError and storage's AdminError as JSON; aiohttp's own errors too (404, 405, 413)."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.field)
    except admin.AdminError as exc:
        return error_response(400, str(exc), exc.field)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith(PREFIX):
            raise
        return error_response(exc.status, exc.reason)
    except Exception as exc:  # a bug or a database failure: logged, a generic 500 out
        log.error("api %s %s failed: %s: %s", request.method, request.path, type(exc).__name__, exc, exc_info=exc)
        return error_response(500, "internal error (logged)")


def bearer_required(guard: TokenGuard) -> Callable[..., Any]:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PREFIX) and not guard.bearer_ok(request.headers.get("Authorization")):
            return error_response(401, "missing or wrong bearer token")
        return await handler(request)

    return check
