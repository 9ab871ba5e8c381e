"""The HTTP API over PostgreSQL: the same answers as on SQLite."""

from __future__ import annotations

import aiohttp
import pytest

from tests.fixtures._api import AUTH, add_events, add_health_state, api_server

pytestmark = pytest.mark.postgres
P = "/api/v1"


async def test_api_on_postgresql(tmp_path, postgres_url):
    async with api_server(tmp_path, url=postgres_url) as api, aiohttp.ClientSession(api.url, headers=AUTH) as http:
        async with http.put(f"{P}/suppressions/pg@example.net", json={"reason": "by hand"}) as r:
            assert r.status == 200
        async with http.get(f"{P}/check", params={"address": "PG@example.net"}) as r:
            assert (await r.json())["suppressed"] is True
        async with http.get(f"{P}/suppressions", params={"search": "pg@"}) as r:
            assert [i["address"] for i in (await r.json())["items"]] == ["pg@example.net"]
        async with http.delete(f"{P}/suppressions/pg@example.net", params={"reason": "done"}) as r:
            assert r.status == 200
        add_events(api.engine, 5)
        async with http.get(f"{P}/events", params={"cursor": "2"}) as r:
            page = await r.json()
        assert [e["id"] for e in page["items"]] == [3, 4, 5] and page["next_cursor"] == "5"
        add_health_state(api.engine, "ip:192.0.2.9", "warning", 70, ["bounce rate 4%"])
        async with http.get(f"{P}/health") as r:
            [state] = (await r.json())["items"]
        assert state["state"] == "warning" and state["reasons"] == ["bounce rate 4%"] and state["evaluated"].endswith("Z")
