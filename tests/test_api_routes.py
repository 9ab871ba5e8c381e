"""The HTTP API (/api/v1) against a real server on loopback: the token on
every request, suppressions (list, show, put, delete), check, the event
feed, health states, policy actions and their cancel, the OpenAPI document,
and 400s that name the field."""

from __future__ import annotations

import logging
from urllib.parse import quote

import aiohttp
import pytest

from tests.fixtures._api import AUTH, TOKEN, add_events, add_health_state, api_server, operator_suppress_action

P = "/api/v1"


async def test_every_request_without_the_token_is_401(tmp_path):
    async with api_server(tmp_path) as api, aiohttp.ClientSession(api.url) as http:
        for method, path in (("GET", P + "/suppressions"), ("GET", P + "/check?address=a@b.example"),
                             ("PUT", P + "/suppressions/a@b.example"), ("DELETE", P + "/suppressions/a@b.example"),
                             ("GET", P + "/events"), ("GET", P + "/health"), ("GET", P + "/actions"),
                             ("POST", P + "/actions/1/cancel"), ("GET", P + "/openapi.json"), ("GET", P + "/nope"),
                             ("GET", "/"), ("GET", "/s/a@b.example"), ("GET", "/elsewhere")):
            for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}):
                async with http.request(method, path, headers=headers) as response:
                    assert response.status == 401, (method, path, headers)
                    if path.startswith(P):
                        assert (await response.json())["error"]
                        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_suppressions_put_get_list_delete(tmp_path):
    async with api_server(tmp_path) as api, aiohttp.ClientSession(api.url, headers=AUTH) as http:
        for i in range(5):
            async with http.put(f"{P}/suppressions/user{i}@example.net", json={"reason": "asked by phone"},
                                headers={"X-Repmon-Actor": "alice"}) as r:
                assert r.status == 200, await r.text()
                body = await r.json()
                assert body["reason"] == "manual" and body["source"] == "api:alice"
        async with http.put(f"{P}/suppressions/{quote('@spam.example')}", json={"reason": "trap domain"}) as r:
            assert r.status == 200 and (await r.json())["kind"] == "domain"
        seen, cursor = [], None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            async with http.get(f"{P}/suppressions", params=params) as r:
                page = await r.json()
            seen += [i["address"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"user{i}@example.net" for i in range(5)] + ["@spam.example"]
        async with http.get(f"{P}/suppressions", params={"search": "user3"}) as r:
            assert [i["address"] for i in (await r.json())["items"]] == ["user3@example.net"]
        async with http.get(f"{P}/suppressions/USER1@example.net") as r:
            shown = await r.json()
            assert shown["suppressed"] and shown["history"][0]["actor"] == "api:alice"
        async with http.delete(f"{P}/suppressions/user1@example.net", params={"reason": "wrong address"}) as r:
            removed = await r.json()
            assert r.status == 200 and removed["op"] == "remove" and removed["removed"]["reason"] == "manual"
        async with http.delete(f"{P}/suppressions/user2@example.net", json={"reason": "body reason"}) as r:
            assert r.status == 200 and (await r.json())["why"] == "body reason"
        async with http.delete(f"{P}/suppressions/user1@example.net", params={"reason": "again"}) as r:
            assert r.status == 404 and (await r.json())["field"] == "address"
        async with http.get(f"{P}/check", params={"address": "user1@example.net"}) as r:
            assert (await r.json())["suppressed"] is False
        async with http.get(f"{P}/check", params={"address": "User4@Example.net"}) as r:
            answer = await r.json()
            assert answer["suppressed"] is True and answer["reason"] == "manual"
        async with http.get(f"{P}/check", params={"address": "x@spam.example"}) as r:
            assert (await r.json())["kind"] == "domain"


@pytest.mark.parametrize(("method", "path", "kwargs", "field", "status"), [
    ("GET", "/suppressions", {"params": {"limit": "0"}}, "limit", 400),
    ("GET", "/suppressions", {"params": {"limit": "abc"}}, "limit", 400),
    ("GET", "/suppressions", {"params": {"reason": "bogus"}}, "reason", 400),
    ("GET", "/suppressions", {"params": {"since": "yesterday-ish"}}, "since", 400),
    ("GET", "/suppressions", {"params": {"cursor": "zz"}}, "cursor", 400),
    ("GET", "/suppressions", {"params": {"include_expired": "maybe"}}, "include_expired", 400),
    ("GET", "/suppressions/not-an-address", {}, "address", 400),
    ("PUT", "/suppressions/a@example.net", {"json": {}}, "reason", 400),
    ("PUT", "/suppressions/a@example.net", {"data": b"{nope", "headers": {"Content-Type": "application/json"}}, "body",
     400),
    ("PUT", "/suppressions/a@example.net", {"json": ["reason"]}, "body", 400),
    ("PUT", "/suppressions/a@example.net", {"json": {"reason": "x" * 600}}, "reason", 400),
    ("PUT", "/suppressions/a@example.net", {"json": {"reason": "ok"}, "headers": {"X-Repmon-Actor": "bad name!"}},
     "X-Repmon-Actor", 400),
    ("DELETE", "/suppressions/a@example.net", {}, "reason", 400),
    ("GET", "/check", {}, "address", 400),
    ("GET", "/check", {"params": {"address": "nope"}}, "address", 400),
    ("GET", "/events", {"params": {"cursor": "-1"}}, "cursor", 400),
    ("GET", "/events", {"params": {"limit": "5000"}}, "limit", 400),
    ("GET", "/actions", {"params": {"active": "perhaps"}}, "active", 400),
    ("POST", "/actions/abc/cancel", {}, "id", 400),
    ("POST", "/actions/999/cancel", {"json": {"reason": "x"}}, "id", 404),
])
async def test_bad_input_is_a_400_naming_the_field(tmp_path, method, path, kwargs, field, status):
    async with api_server(tmp_path) as api, aiohttp.ClientSession(api.url, headers=AUTH) as http:
        async with http.request(method, P + path, **kwargs) as r:
            body = await r.json()
            assert r.status == status, body
            assert body["field"] == field and body["error"]


async def test_oversized_body_is_refused(tmp_path):
    async with api_server(tmp_path, max_body_bytes=2048) as api, aiohttp.ClientSession(api.url, headers=AUTH) as http:
        async with http.put(f"{P}/suppressions/a@example.net", json={"reason": "x" * 5000}) as r:
            assert r.status == 413 and "error" in await r.json()


async def test_event_feed_is_ordered_and_resumable(tmp_path):
    async with api_server(tmp_path) as api, aiohttp.ClientSession(api.url, headers=AUTH) as http:
        add_events(api.engine, 25)
        ids, cursor = [], "0"
        for _ in range(3):
            async with http.get(f"{P}/events", params={"cursor": cursor, "limit": "10"}) as r:
                page = await r.json()
            ids += [e["id"] for e in page["items"]]
            cursor = page["next_cursor"]
        assert ids == list(range(1, 26)) and cursor == "25"
        async with http.get(f"{P}/events", params={"cursor": cursor}) as r:
            assert (await r.json()) == {"items": [], "next_cursor": "25"}
        add_events(api.engine, 3, start=25)
        async with http.get(f"{P}/events", params={"cursor": cursor}) as r:
            page = await r.json()
        assert [e["id"] for e in page["items"]] == [26, 27, 28] and page["items"][0]["recipient"] == "r25@example.net"


async def test_health_actions_and_cancel(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with api_server(tmp_path) as api, aiohttp.ClientSession(api.url, headers=AUTH) as http:
        async with http.get(f"{P}/health") as r:
            assert (await r.json()) == {"items": []}
        add_health_state(api.engine, "ip:192.0.2.10", "critical", 20, ["complaint rate 0.5% over 24h"])
        add_health_state(api.engine, "domain:example.com", "healthy", 100, [])
        async with http.get(f"{P}/health") as r:
            states = {s["subject"]: s for s in (await r.json())["items"]}
        assert states["ip:192.0.2.10"]["state"] == "critical"
        assert states["ip:192.0.2.10"]["reasons"] == ["complaint rate 0.5% over 24h"]
        assert states["domain:example.com"]["score"] == 100
        action_id = operator_suppress_action(api.engine, "victim@example.net")
        async with http.get(f"{P}/check", params={"address": "victim@example.net"}) as r:
            assert (await r.json())["suppressed"] is True
        async with http.get(f"{P}/actions", params={"active": "true"}) as r:
            actions = (await r.json())["items"]
        assert [a["id"] for a in actions] == [action_id] and actions[0]["action"] == "suppress"
        async with http.post(f"{P}/actions/{action_id}/cancel", json={"reason": "mistake"},
                             headers={"X-Repmon-Actor": "dave"}) as r:
            ended = await r.json()
            assert r.status == 200 and ended["ended"] and "dave" in ended["end_reason"] and "mistake" in ended["end_reason"]
        async with http.post(f"{P}/actions/{action_id}/cancel") as r:
            assert r.status == 409 and (await r.json())["field"] == "id"
        async with http.get(f"{P}/check", params={"address": "victim@example.net"}) as r:
            assert (await r.json())["suppressed"] is False  # cancelling lifted the policy's suppression
        async with http.get(f"{P}/actions", params={"active": "true"}) as r:
            assert (await r.json())["items"] == []
    assert TOKEN not in caplog.text


async def test_openapi_describes_every_route(tmp_path):
    async with api_server(tmp_path) as api, aiohttp.ClientSession(api.url, headers=AUTH) as http:
        async with http.get(f"{P}/openapi.json") as r:
            spec = await r.json()
    assert spec["openapi"].startswith("3.1")
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert routes == {("GET", "/suppressions"), ("GET", "/suppressions/{address}"), ("PUT", "/suppressions/{address}"),
                      ("DELETE", "/suppressions/{address}"), ("GET", "/check"), ("GET", "/events"), ("GET", "/health"),
                      ("GET", "/actions"), ("POST", "/actions/{id}/cancel"), ("GET", "/openapi.json")}
    for ops in spec["paths"].values():
        for op in ops.values():
            assert "401" in op["responses"]


async def test_login_form_throttles_wrong_tokens(tmp_path):
    async with api_server(tmp_path) as api, aiohttp.ClientSession(api.url) as http:
        for _ in range(10):
            async with http.post("/login", data={"name": "mallory", "token": "guess-guess-guess"}) as r:
                assert r.status == 401
        async with http.post("/login", data={"name": "mallory", "token": TOKEN}) as r:
            assert r.status == 429  # even the right token, for the rest of the window
        async with http.get("/api/v1/health", headers=AUTH) as r:
            assert r.status == 200  # the API's bearer token is not throttled
