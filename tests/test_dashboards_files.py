"""The dashboard JSON files: current with their definitions, valid Grafana
models, data source as a variable, and only metrics repmon exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from monitor.commands.dashboards import render
from monitor.metrics.catalog import METRICS
from monitor.metrics.dashboards import SCHEMA_VERSION, all_dashboards, file_name, m, metric_names, panel_queries

DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"


def files() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARDS.glob("*.json"))}


def test_files_are_written_from_the_definitions() -> None:
    built = {file_name(d.to_json()): render(d.to_json()) for d in all_dashboards()}
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS.glob("*.json")}
    assert set(on_disk) == set(built), "run `repmon dashboards write`"
    for name, text in built.items():
        assert on_disk[name] == text, f"dashboards/{name} is stale: run `repmon dashboards write`"


def test_write_command_produces_the_files(tmp_path: Path) -> None:
    from monitor.cli import main

    assert main(["dashboards", "write", "--out", str(tmp_path)]) == 0
    assert {p.name: p.read_text() for p in tmp_path.glob("*.json")} == {
        p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}


@pytest.mark.parametrize("name", sorted(p.name for p in DASHBOARDS.glob("*.json")))
def test_dashboard_model(name: str) -> None:
    dashboard = files()[name]
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert dashboard["uid"].startswith("repmon-") and len(dashboard["uid"]) <= 40
    assert dashboard["id"] is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert "instance" in variables

    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
            assert panel["targets"], panel["title"]

    queries = panel_queries(dashboard)
    assert queries
    for title, _ref, target in queries:
        assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
        names = metric_names(target["expr"])
        assert names, f"{title}: {target['expr']}"
        assert names <= set(METRICS), f"{title}: {names - set(METRICS)} not exported"
        # Every selector is limited to one repmon instance.
        assert target["expr"].count("{") == target["expr"].count('instance=~"$instance"'), title
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"]):
            assert any(label in METRICS[n].labels for n in names), f"{title}: legend label {label}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert metric_names(variable["definition"]) <= set(METRICS)


def test_the_four_dashboards() -> None:
    found = {d["uid"]: d for d in files().values()}
    assert set(found) == {"repmon-overview", "repmon-blocklists", "repmon-dmarc-tls", "repmon-sender"}
    titles = {uid: {p["title"] for p in d["panels"]} for uid, d in found.items()}
    assert {"Complaint rate ($window)", "Bounce rate by reason ($window window)", "Blocklist listings",
            "Suppressed addresses", "Queued messages"} <= titles["repmon-overview"]


def test_selector_helper_refuses_what_is_not_exported() -> None:
    assert m("repmon_dnsbl_listed", zone="~$zone", target="!x") == (
        'repmon_dnsbl_listed{instance=~"$instance",zone=~"$zone",target!="x"}')
    with pytest.raises(KeyError):
        m("repmon_no_such_metric")
    with pytest.raises(KeyError):
        m("repmon_dnsbl_listed", recipient="x")
