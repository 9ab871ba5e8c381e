"""`repmon dashboards push` against a local stand-in for Grafana's HTTP API.

No Grafana server can run here, so an aiohttp server on 127.0.0.1 answers
the calls repmon makes the way Grafana does (folder list / create, POST
/api/dashboards/db with versions, 401 for a bad token) and records every
request; the tests check what grafana-client actually sent.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from monitor.cli import main

TOKEN = "glsa_test-token-0123456789"


@dataclass
class FakeGrafana:
    token: str = TOKEN
    prefix: str = ""
    fail_dashboards: int | None = None  # answer POST /api/dashboards/db with this status
    folders: list[dict[str, Any]] = field(default_factory=list)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_authorize])
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        return app

    async def _dispatch(self, request: web.Request) -> web.Response:
        # Routed at request time: a test may serve Grafana under a sub-path.
        routes = {("GET", "/api/folders"): self._list_folders, ("POST", "/api/folders"): self._create_folder,
                  ("POST", "/api/dashboards/db"): self._save_dashboard}
        path = request.path
        handler = routes.get((request.method, path[len(self.prefix):])) if path.startswith(self.prefix) else None
        if handler is None:
            return web.json_response({"message": "Not found"}, status=404)
        return await handler(request)

    @web.middleware
    async def _record_and_authorize(self, request: web.Request, handler):
        body = await request.text()
        self.requests.append({"method": request.method, "path": request.path, "query": dict(request.query),
                              "headers": dict(request.headers), "json": json.loads(body) if body else None})
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"message": "invalid API key", "traceID": ""}, status=401)
        return await handler(request)

    async def _list_folders(self, request: web.Request) -> web.Response:
        return web.json_response([{"id": f["id"], "uid": f["uid"], "title": f["title"]} for f in self.folders])

    async def _create_folder(self, request: web.Request) -> web.Response:
        data = await request.json()
        uid = data.get("uid") or f"f{len(self.folders) + 1:08d}"
        if any(f["uid"] == uid for f in self.folders):
            return web.json_response({"message": "a folder with the same uid already exists"}, status=409)
        folder = {"id": len(self.folders) + 1, "uid": uid, "title": data["title"], "version": 1,
                  "url": f"/dashboards/f/{uid}/"}
        self.folders.append(folder)
        return web.json_response(folder)

    async def _save_dashboard(self, request: web.Request) -> web.Response:
        if self.fail_dashboards:
            return web.json_response({"message": "database is locked"}, status=self.fail_dashboards)
        data = await request.json()
        dashboard = data.get("dashboard") or {}
        if not dashboard.get("title"):
            return web.json_response({"message": "Dashboard title cannot be empty"}, status=400)
        if data.get("folderUid") and not any(f["uid"] == data["folderUid"] for f in self.folders):
            return web.json_response({"message": "folder not found", "status": "not-found"}, status=400)
        uid = dashboard.get("uid")
        old = self.dashboards.get(uid)
        if old is not None and not data.get("overwrite"):
            return web.json_response({"message": "The dashboard has been changed by someone else",
                                      "status": "version-mismatch"}, status=412)
        version = (old["version"] + 1) if old else 1
        self.dashboards[uid] = {"version": version, "payload": data}
        slug = dashboard["title"].lower().replace(" ", "-").replace("/", "")
        return web.json_response({"id": len(self.dashboards), "uid": uid, "url": f"{self.prefix}/d/{uid}/{slug}",
                                  "status": "success", "version": version, "slug": slug})


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    """The fake Grafana on its own event loop in a thread: the CLI under test
    runs its own asyncio.run in the test's thread."""
    fake = FakeGrafana()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(fake.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        fake.port = runner.addresses[0][1]
        state["runner"] = runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    yield fake
    asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def write_config(tmp_path: Path, url: str, **grafana: str) -> Path:
    lines = [f'url = "{url}"'] + [f'{k} = "{v}"' for k, v in grafana.items()]
    path = tmp_path / "repmon.toml"
    path.write_text("[grafana]\n" + "\n".join(lines) + "\n")
    return path


def push(config: Path, *extra: str) -> int:
    return main(["dashboards", "push", "--config", str(config), *extra])


def test_push_creates_the_folder_and_every_dashboard(grafana: FakeGrafana, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("REPMON_GRAFANA_TOKEN", TOKEN)
    config = write_config(tmp_path, grafana.url, token_env="REPMON_GRAFANA_TOKEN", folder="Deliverability",
                          datasource="prom-main")
    assert push(config) == 0
    out, err = capsys.readouterr()

    assert [(r["method"], r["path"]) for r in grafana.requests] == [
        ("GET", "/api/folders"), ("POST", "/api/folders")] + [("POST", "/api/dashboards/db")] * 4
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in grafana.requests)
    assert grafana.requests[1]["json"] == {"title": "Deliverability"}
    folder_uid = grafana.folders[0]["uid"]
    posted = [r["json"] for r in grafana.requests[2:]]
    assert {p["dashboard"]["uid"] for p in posted} == {"repmon-overview", "repmon-blocklists", "repmon-dmarc-tls",
                                                       "repmon-sender"}
    for payload in posted:
        assert payload["folderUid"] == folder_uid
        assert payload["overwrite"] is True
        assert payload["message"].startswith("pushed by repmon")
        assert payload["dashboard"]["id"] is None
        ds = next(v for v in payload["dashboard"]["templating"]["list"] if v["name"] == "DS_PROMETHEUS")
        assert ds["current"]["value"] == "prom-main"
        assert payload["dashboard"]["panels"][1]["datasource"]["uid"] == "${DS_PROMETHEUS}"
    assert f"{grafana.url}/d/repmon-overview/" in out and "(version 1)" in out
    assert TOKEN not in out + err


def test_pushing_again_updates_in_place_in_the_existing_folder(grafana: FakeGrafana, tmp_path, capsys) -> None:
    token_file = tmp_path / "grafana.token"
    token_file.write_text(TOKEN + "\n")
    grafana.folders.append({"id": 7, "uid": "ops-folder", "title": "repmon"})
    config = write_config(tmp_path, grafana.url, token_file="grafana.token")  # relative to the config
    assert push(config) == 0
    assert push(config, "--message", "after the warm-up") == 0
    out = capsys.readouterr().out
    assert ("POST", "/api/folders") not in [(r["method"], r["path"]) for r in grafana.requests]
    assert all(d["payload"]["folderUid"] == "ops-folder" for d in grafana.dashboards.values())
    assert {d["version"] for d in grafana.dashboards.values()} == {2}
    assert grafana.dashboards["repmon-sender"]["payload"]["message"] == "after the warm-up"
    assert "(version 2)" in out


def test_folder_uid_and_sub_path(grafana: FakeGrafana, tmp_path) -> None:
    grafana.prefix = "/grafana"
    config = write_config(tmp_path, grafana.url, token=TOKEN, folder="Mail", folder_uid="repmon-mail")
    assert push(config) == 0
    assert grafana.requests[1]["path"] == "/grafana/api/folders"
    assert grafana.requests[1]["json"] == {"title": "Mail", "uid": "repmon-mail"}
    assert {r["path"] for r in grafana.requests[2:]} == {"/grafana/api/dashboards/db"}


def test_push_files_of_a_folder(grafana: FakeGrafana, tmp_path) -> None:
    own = tmp_path / "mine"
    own.mkdir()
    exported = {"dashboard": {"uid": "team-mail", "title": "Team mail", "panels": [], "id": 42}, "meta": {}}
    (own / "team.json").write_text(json.dumps(exported))
    config = write_config(tmp_path, grafana.url, token=TOKEN)
    assert push(config, "--dir", str(own)) == 0
    assert list(grafana.dashboards) == ["team-mail"]
    assert grafana.dashboards["team-mail"]["payload"]["dashboard"]["id"] is None

    (own / "broken.json").write_text("{not json")
    assert push(config, "--dir", str(own)) == 2


def test_a_refused_token_says_so_without_showing_it(grafana: FakeGrafana, tmp_path, capsys) -> None:
    config = write_config(tmp_path, grafana.url, token="glsa_wrong-token-999")
    assert push(config) == 1
    out, err = capsys.readouterr()
    assert "401 Unauthorized" in err and "token" in err and grafana.url in err
    assert "glsa_wrong-token-999" not in out + err
    assert grafana.requests[0]["headers"]["Authorization"] == "Bearer glsa_wrong-token-999"
    assert not grafana.dashboards


def test_a_server_error_is_reported_with_grafanas_message(grafana: FakeGrafana, tmp_path, capsys) -> None:
    grafana.fail_dashboards = 503
    config = write_config(tmp_path, grafana.url, token=TOKEN)
    assert push(config) == 1
    err = capsys.readouterr().err
    assert "HTTP 503" in err and "database is locked" in err and "repmon / Overview" in err


def test_unreachable_grafana_and_missing_token(tmp_path, monkeypatch, capsys) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp_path, f"http://127.0.0.1:{port}", token=TOKEN)
    assert push(config) == 1
    assert "cannot reach Grafana" in capsys.readouterr().err

    monkeypatch.delenv("NOT_SET_TOKEN", raising=False)
    config = write_config(tmp_path, f"http://127.0.0.1:{port}", token_env="NOT_SET_TOKEN")
    assert push(config) == 2
    assert "NOT_SET_TOKEN" in capsys.readouterr().err


def test_grafana_section_is_validated(tmp_path, capsys) -> None:
    path = tmp_path / "repmon.toml"
    path.write_text('[grafana]\nurl = "ftp://grafana"\ntoken = "x"\n')
    assert push(path) == 2
    assert "grafana.url" in capsys.readouterr().err
    path.write_text('[grafana]\nurl = "https://grafana.example.com"\ntoken = "x"\ntoken_env = "Y"\n')
    assert push(path) == 2
    assert "exactly one of token" in capsys.readouterr().err
    path.write_text("")
    assert push(path) == 2
    assert "no [grafana] section" in capsys.readouterr().err
