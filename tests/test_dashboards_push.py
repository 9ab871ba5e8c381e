"""`repmon dashboards push` against a local stand-in for Grafana's HTTP API.

No Grafana server can run here, so the stand-in of tests/fixtures/grafana.py
answers the calls repmon makes the way Grafana does (folder list / create,
POST /api/dashboards/db with versions, 401 for a bad token) and records
every request; the tests check what grafana-client actually sent.
"""

from __future__ import annotations

import json
from pathlib import Path

from monitor.cli import main
from tests.fixtures._configs import write_config
from tests.fixtures._ports import free_port
from tests.fixtures.grafana import TOKEN, FakeGrafana


def grafana_toml(tmp_path: Path, url: str, **grafana: str) -> Path:
    return write_config(tmp_path, {"grafana": {"url": url, **grafana}})


def push(config: Path, *extra: str) -> int:
    return main(["dashboards", "push", "--config", str(config), *extra])


def test_push_creates_the_folder_and_every_dashboard(grafana: FakeGrafana, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("REPMON_GRAFANA_TOKEN", TOKEN)
    config = grafana_toml(tmp_path, grafana.url, token_env="REPMON_GRAFANA_TOKEN", folder="Deliverability",
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
    config = grafana_toml(tmp_path, grafana.url, token_file="grafana.token")  # relative to the config
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
    config = grafana_toml(tmp_path, grafana.url, token=TOKEN, folder="Mail", folder_uid="repmon-mail")
    assert push(config) == 0
    assert grafana.requests[1]["path"] == "/grafana/api/folders"
    assert grafana.requests[1]["json"] == {"title": "Mail", "uid": "repmon-mail"}
    assert {r["path"] for r in grafana.requests[2:]} == {"/grafana/api/dashboards/db"}


def test_push_files_of_a_folder(grafana: FakeGrafana, tmp_path) -> None:
    own = tmp_path / "mine"
    own.mkdir()
    exported = {"dashboard": {"uid": "team-mail", "title": "Team mail", "panels": [], "id": 42}, "meta": {}}
    (own / "team.json").write_text(json.dumps(exported))
    config = grafana_toml(tmp_path, grafana.url, token=TOKEN)
    assert push(config, "--dir", str(own)) == 0
    assert list(grafana.dashboards) == ["team-mail"]
    assert grafana.dashboards["team-mail"]["payload"]["dashboard"]["id"] is None

    (own / "broken.json").write_text("{not json")
    assert push(config, "--dir", str(own)) == 2


def test_a_refused_token_says_so_without_showing_it(grafana: FakeGrafana, tmp_path, capsys) -> None:
    config = grafana_toml(tmp_path, grafana.url, token="glsa_wrong-token-999")
    assert push(config) == 1
    out, err = capsys.readouterr()
    assert "401 Unauthorized" in err and "token" in err and grafana.url in err
    assert "glsa_wrong-token-999" not in out + err
    assert grafana.requests[0]["headers"]["Authorization"] == "Bearer glsa_wrong-token-999"
    assert not grafana.dashboards


def test_a_server_error_is_reported_with_grafanas_message(grafana: FakeGrafana, tmp_path, capsys) -> None:
    grafana.fail_dashboards = 503
    config = grafana_toml(tmp_path, grafana.url, token=TOKEN)
    assert push(config) == 1
    err = capsys.readouterr().err
    assert "HTTP 503" in err and "database is locked" in err and "repmon / Overview" in err


def test_unreachable_grafana_and_missing_token(tmp_path, monkeypatch, capsys) -> None:
    port = free_port()  # nothing listens there
    config = grafana_toml(tmp_path, f"http://127.0.0.1:{port}", token=TOKEN)
    assert push(config) == 1
    assert "cannot reach Grafana" in capsys.readouterr().err

    monkeypatch.delenv("NOT_SET_TOKEN", raising=False)
    config = grafana_toml(tmp_path, f"http://127.0.0.1:{port}", token_env="NOT_SET_TOKEN")
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
