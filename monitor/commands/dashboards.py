"""`repmon dashboards push --config FILE [--dir DIR]`: upload the Grafana dashboards.
`repmon dashboards write [--out DIR]`: write them as JSON files (dashboards/ in the repository)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("dashboards", help="Grafana dashboards: push them to Grafana or write the JSON")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    push = actions.add_parser("push", help="create or update the dashboards in Grafana ([grafana] section)")
    push.add_argument("--config", required=True, metavar="FILE", help="repmon TOML configuration")
    push.add_argument("--dir", type=Path, metavar="DIR",
                      help="push the *.json dashboards of this folder instead of the built-in ones")
    push.add_argument("--message", default=None, help="version note shown in Grafana's dashboard history")
    push.set_defaults(handler=run_push)

    write = actions.add_parser("write", help="write the built-in dashboards as JSON files")
    write.add_argument("--out", type=Path, default=Path("dashboards"), metavar="DIR",
                       help="folder to write to (default: ./dashboards)")
    write.set_defaults(handler=run_write)


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def run_write(args: argparse.Namespace) -> int:
    from monitor.metrics.dashboards import all_dashboards, file_name

    args.out.mkdir(parents=True, exist_ok=True)
    for dashboard in all_dashboards():
        document = dashboard.to_json()
        path = args.out / file_name(document)
        path.write_text(render(document), encoding="utf-8")
        print(f"wrote {path}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    import asyncio  # 40 ms: not for `repmon --help`

    from monitor import metrics
    from monitor.config import load_config
    from monitor.core.logs import register_secret
    from monitor.metrics.dashboards import all_dashboards
    from monitor.metrics.grafana import PushError, load_dashboard_files, push, require_settings, resolve_token

    config = load_config(args.config)
    settings = require_settings(config.grafana)
    register_secret(resolve_token(settings, config.base_dir))
    if args.dir is not None:
        dashboards = load_dashboard_files(args.dir)
    else:
        dashboards = [d.to_json() for d in all_dashboards()]
    message = args.message or f"pushed by repmon {metrics.version()}"
    try:
        results = asyncio.run(push(settings, dashboards, message=message, base_dir=config.base_dir))
    except PushError as exc:
        print(f"repmon: {exc}", file=sys.stderr)
        return 1
    for result in results:
        version = f" (version {result.version})" if result.version is not None else ""
        print(f"pushed {result.title}: {result.url}{version}")
    return 0
