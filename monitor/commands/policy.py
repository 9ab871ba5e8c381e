"""`repmon policy replay --config FILE --since 7d [--step 1h] [--json]`:
which actions the policy would have taken on the stored history, without
taking them. `repmon policy rules --config FILE` lists the rules in force."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.config import RepmonConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("policy", help="replay the policy on stored history; list its rules")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    replay = verbs.add_parser("replay", help="what the policy would have done, without doing it")
    replay.add_argument("--config", required=True, metavar="FILE")
    replay.add_argument("--since", default="7d", help="how far back (e.g. 24h, 7d; default 7d)")
    replay.add_argument("--step", default="1h", help="time between assessments (default 1h; at least 5m)")
    replay.add_argument("--json", action="store_true", help="JSON Lines: one object per action")
    rules = verbs.add_parser("rules", help="the rules in force, yours then the shipped defaults")
    rules.add_argument("--config", required=True, metavar="FILE")
    rules.add_argument("--json", action="store_true")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.core.db import make_engine
    from monitor.core.units import format_duration, parse_duration
    from monitor.health.clock import SystemClock, iso
    from monitor.loop import health_rollup, health_service
    from monitor.parts import upgrade_schema
    from monitor.policy.replay import Replay

    config = load_config(args.config)
    if args.verb == "rules":
        return _rules(config, args.json)
    since_s, step = parse_duration(args.since), max(300.0, parse_duration(args.step))
    engine = make_engine(config.database_url)
    try:
        upgrade_schema(engine)
        now = SystemClock().now()
        service = health_service(config, engine)
        health_rollup(config, engine, service).run(now)
        with engine.connect() as conn:
            actions = Replay(conn, config.policy, service).run(now - since_s, now, step)
    finally:
        engine.dispose()
    if args.json:
        for action in actions:
            sys.stdout.write(json.dumps(action.as_json(), ensure_ascii=False) + "\n")
        return 0
    if not actions:
        print(f"no action would have been taken in the last {args.since} (assessed every {format_duration(step)})")
        return 0
    print(f"would have taken {len(actions)} action(s) in the last {args.since} "
          f"(assessed every {format_duration(step)}):")
    for a in actions:
        end = (f"ended {iso(a.ended)} ({a.end_reason})" if a.ended
               else f"until {iso(a.expires)}" if a.expires else "still in force")
        where = f" [{', '.join(a.destinations)}]" if a.destinations else ""
        print(f"{iso(a.started)}  {a.action:<8} {a.subject}{where}  rule {a.rule}, {end}")
        for line in a.evidence[:3]:
            print(f"{'':20}  {line}")
    return 0


def _rules(config: RepmonConfig, as_json: bool) -> int:
    from monitor.core.units import format_duration, format_rate
    from monitor.policy.rules import compile_rules

    for rule in compile_rules(config.policy):
        record = {"name": rule.name, "origin": rule.origin, "subjects": list(rule.subjects), "action": rule.action,
                  "scope": rule.scope, "state": list(rule.state) if rule.state else None, "metric": rule.metric,
                  "window": rule.window if rule.metric else None, "above": rule.above, "below": rule.below,
                  "listed_on": list(rule.listed_on) if rule.listed_on else None,
                  "rate": format_rate(rule.rate) if rule.rate else None,
                  "duration": format_duration(rule.duration) if rule.duration else "until clear"}
        if as_json:
            sys.stdout.write(json.dumps(record) + "\n")
        else:
            cond = " and ".join(filter(None, [
                f"state in {record['state']}" if record["state"] else None,
                f"{rule.metric} over {rule.window} "
                + (f">= {rule.above:g}" if rule.above is not None else f"< {rule.below:g}")
                if rule.metric else None,
                f"listed on {record['listed_on']}" if record["listed_on"] else None]))
            print(f"{rule.name} ({rule.origin}): {'/'.join(rule.subjects)} when {cond} -> {rule.action}"
                  + (f" {record['rate']}" if record["rate"] else "") + f" ({record['duration']}, scope {rule.scope})")
    return 0
