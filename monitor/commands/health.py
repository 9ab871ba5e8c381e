"""`repmon health --config FILE [--json]`: state, score and reasons of every
sending IP, sending domain and lane, computed now from the stored events
(their roll-ups), blocklist states and postmaster data. Read-only apart from
bringing the roll-ups up to date: it takes no action and sends no alert."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from monitor.config import RepmonConfig
    from monitor.health.assess import Assessment

# monitor.health.assess.STATES, repeated so that building the parser imports nothing
# (tests/test_cli_startup.py checks the two agree)
STATES = ("healthy", "warning", "critical", "blocked")
_STATE_ORDER = {state: i for i, state in enumerate(reversed(STATES))}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("health", help="health state, score and reasons per IP, domain and lane")
    parser.add_argument("--config", required=True, metavar="FILE", help="repmon TOML configuration")
    parser.add_argument("--json", action="store_true", help="JSON Lines: one object per subject")
    parser.add_argument("--kind", choices=("ip", "domain", "lane"), action="append",
                        help="only these subjects (repeatable)")
    parser.add_argument("--state", choices=STATES, action="append", help="only subjects in these states (repeatable)")
    parser.set_defaults(handler=run)


def compute(config: RepmonConfig, engine: Engine, now: float | None = None) -> list[Assessment]:
    from monitor.health.clock import SystemClock
    from monitor.health.service import Wanted
    from monitor.loop import health_rollup, health_service

    now = SystemClock().now() if now is None else now
    service = health_service(config, engine)
    health_rollup(config, engine, service).run(now)
    with engine.connect() as conn:
        return service.assess(conn, now, Wanted())


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.core.db import make_engine
    from monitor.parts import upgrade_schema

    config = load_config(args.config)
    engine = make_engine(config.database_url)
    try:
        upgrade_schema(engine)
        assessments = compute(config, engine)
    finally:
        engine.dispose()
    if args.kind:
        assessments = [a for a in assessments if a.subject.kind in args.kind]
    if args.state:
        assessments = [a for a in assessments if a.state in args.state]
    assessments.sort(key=lambda a: (_STATE_ORDER[a.state], a.score, a.subject.kind, a.name))
    if args.json:
        for a in assessments:
            sys.stdout.write(json.dumps(a.as_json(), ensure_ascii=False) + "\n")
        return 0
    print_table(assessments)
    return 0


def print_table(assessments: list[Assessment]) -> None:
    out = sys.stdout
    if not assessments:
        out.write("no subjects: nothing sent, received or monitored in the last 7 days (older data is kept in\n"
                  "the roll-ups and counted by /metrics, but a health state is about the recent windows)\n")
        return
    width = max(24, min(44, max(len(a.name) for a in assessments)))
    columns = shutil.get_terminal_size((120, 20)).columns
    reason_width = max(40, columns - width - 20)
    out.write(f"{'SUBJECT':<{width}}  {'STATE':<8}  {'SCORE':>5}  REASONS\n")
    for a in assessments:
        lines = []
        for reason in a.reasons:
            wrapped = textwrap.wrap(reason, reason_width) or [""]
            lines.append("- " + wrapped[0])
            lines.extend("  " + more for more in wrapped[1:])
        first, rest = lines[0], lines[1:]
        out.write(f"{a.name:<{width}}  {a.state:<8}  {a.score:>5}  {first}\n")
        for line in rest:
            out.write(f"{'':<{width}}  {'':<8}  {'':>5}  {line}\n")
    counts = {s: sum(1 for a in assessments if a.state == s) for s in STATES}
    out.write(", ".join(f"{n} {s}" for s, n in counts.items() if n) + "\n")

