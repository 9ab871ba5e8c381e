"""`repmon nodes --config FILE [--json]`: the nodes sharing this database, the
jobs each owns, the leader, and how each lane's budget is split."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("nodes", help="cluster nodes, the jobs each owns, the leader, lane budgets")
    parser.add_argument("--config", required=True, metavar="FILE", help="repmon TOML configuration")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.set_defaults(handler=run)


def collect(config_path: str) -> dict[str, Any]:
    # Lazy: `repmon --help` must not pay for the database layer.
    from monitor.cluster import budget, leases, nodes
    from monitor.config import load_config
    from monitor.core.db import make_engine
    from monitor.parts import upgrade_schema

    config = load_config(config_path)
    engine = make_engine(config.database_url)
    try:
        upgrade_schema(engine)
        now = time.time()
        ttl = config.cluster.lease_ttl_s
        owned: dict[str, list[str]] = {}
        leader = None
        for lease in leases.list_leases(engine):
            if lease.owner is None or lease.expires_at < now:
                continue
            owned.setdefault(lease.owner, []).append(lease.name)
            if lease.name == leases.LEADER:
                leader = lease.owner
        node_rows = [{"id": n.node_id, "host": n.host, "pid": n.pid, "started": n.started_at,
                      "last_heartbeat": n.heartbeat_at, "alive": n.alive(now, ttl),
                      "jobs": sorted(owned.get(n.node_id, []))} for n in nodes.list_nodes(engine)]
        lanes = [{"lane": v.lane, "day": v.day, "sent_today": v.day_count, "connections": v.claims}
                 for v in budget.budget_views(engine, now)]
    finally:
        engine.dispose()
    return {"leader": leader, "nodes": node_rows, "lanes": lanes}


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def run(args: argparse.Namespace) -> int:
    data = collect(args.config)
    if args.json:
        print(json.dumps(data, sort_keys=True))
        return 0
    out = sys.stdout
    out.write(f"leader: {data['leader'] or '(none)'}\n")
    if not data["nodes"]:
        out.write("no nodes have registered (the cluster is off with SQLite, or no `repmon run` is running)\n")
    for node in data["nodes"]:
        state = "alive" if node["alive"] else "silent"
        out.write(f"{node['id']}  {node['host']} pid {node['pid']}  started {_when(node['started'])}  "
                  f"heartbeat {_when(node['last_heartbeat'])} ({state})\n")
        for job in node["jobs"]:
            out.write(f"    owns {job}\n")
    for lane in data["lanes"]:
        split = ", ".join(f"{node}={count}" for node, count in sorted(lane["connections"].items())) or "-"
        out.write(f"lane {lane['lane']}: {lane['sent_today']} sent on {lane['day']}, connections {split}\n")
    return 0
