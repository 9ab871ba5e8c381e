"""`repmon actions`: what the policy (and operators) did to lanes, IPs and
recipients, with the rule, the evidence, start, expiry and end; and doing it
by hand.

    repmon actions --config FILE [--json] [--active] [--since 7d]
    repmon actions cancel ID [--reason TEXT] [--hold 2h] [--no-ramp] --config FILE
    repmon actions pause ip:ADDR|lane:ADDR/DEST [--for 2h] [--reason TEXT] --config FILE
    repmon actions slow  ip:ADDR|lane:ADDR/DEST --rate 10/min [--for 2h] --config FILE
    repmon actions resume ip:ADDR|lane:ADDR/DEST [--no-ramp] [--hold 2h] --config FILE
    repmon actions suppress ADDRESS|@DOMAIN [--for 30d] [--reason TEXT] --config FILE
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from monitor.policy.evaluate import PolicyEngine, PolicyReport


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("actions", help="list, cancel and take pause/slow/suppress actions")
    parser.add_argument("--config", metavar="FILE", help="repmon TOML configuration")
    parser.add_argument("--json", action="store_true", help="JSON Lines: one object per action")
    parser.add_argument("--active", action="store_true", help="only actions still in force")
    parser.add_argument("--since", default="7d", help="actions started or ended within this long (default 7d)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    cancel = verbs.add_parser("cancel", help="end an action now (an override: the rule needs new evidence)")
    cancel.add_argument("id", type=int)
    _override_options(cancel)

    for name, what in (("pause", "pause a lane or every lane of an IP"), ("slow", "slow a lane or an IP to a rate")):
        sub = verbs.add_parser(name, help=what)
        sub.add_argument("subject", help="ip:ADDR or lane:ADDR/DESTINATION")
        if name == "slow":
            sub.add_argument("--rate", required=True, help='e.g. "10/min", "1/s"')
        sub.add_argument("--for", dest="duration", help="how long (e.g. 2h); default: until cancelled")
        sub.add_argument("--reason", default="", help="recorded as the evidence")
        _sub_common(sub)

    resume = verbs.add_parser("resume", help="end every pause, slow and ramp of a lane or IP")
    resume.add_argument("subject", help="ip:ADDR or lane:ADDR/DESTINATION")
    _override_options(resume)

    suppress = verbs.add_parser("suppress", help="suppress a recipient address or every queued recipient of @DOMAIN")
    suppress.add_argument("target", help="address@example.net or @example.net")
    suppress.add_argument("--for", dest="duration", help="how long (e.g. 30d); default: until cancelled")
    suppress.add_argument("--reason", default="")
    _sub_common(suppress)
    from monitor.commands import actions_export  # stdlib only at its top, like this module

    actions_export.add_verb(verbs)
    parser.set_defaults(handler=run)


def _sub_common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--config", dest="sub_config", metavar="FILE", help="repmon TOML configuration")
    sub.add_argument("--json", dest="sub_json", action="store_true", help="print the action as JSON")


def _override_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--reason", default="")
    sub.add_argument("--hold", help="the rule may not fire again on this subject for this long (e.g. 2h)")
    sub.add_argument("--no-ramp", dest="ramp", action="store_false",
                     help="resume at full speed instead of with the [policy.ramp]")
    _sub_common(sub)


def _user() -> str:
    try:
        return os.environ.get("REPMON_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def run(args: argparse.Namespace) -> int:
    from monitor.alerts.notify import AlertCenter
    from monitor.config import load_config
    from monitor.core.db import make_engine
    from monitor.core.errors import ConfigError
    from monitor.health.clock import SystemClock, iso
    from monitor.loop import announce, health_service
    from monitor.parts import upgrade_schema
    from monitor.policy import manual
    from monitor.policy.actions import action_json, describe_target
    from monitor.policy.evaluate import PolicyEngine, PolicyReport

    config_path = getattr(args, "sub_config", None) or args.config
    if not config_path:
        raise ConfigError("give the configuration with --config FILE")
    as_json = bool(getattr(args, "sub_json", False) or args.json)
    config = load_config(config_path)
    engine = make_engine(config.database_url)
    try:
        upgrade_schema(engine)
        if args.verb is None:
            return _list(engine, args, as_json)
        policy = PolicyEngine(config.policy, health_service(config, engine))
        alerts = AlertCenter(config.alerts)
        now = SystemClock().now()
        user = _user()
        try:
            with engine.begin() as conn:
                report = PolicyReport()
                rows = _do(policy, conn, args, user, now, report)
                announce(alerts, conn, report.changes)
        except (manual.ManualError, ValueError) as exc:
            print(f"repmon actions: {exc}", file=sys.stderr)
            return 2
        for row in rows:
            if as_json:
                sys.stdout.write(json.dumps(action_json(row), ensure_ascii=False) + "\n")
            else:
                state = f"ended ({row.end_reason})" if row.ended_at else (
                    f"until {iso(row.expires_at)}" if row.expires_at else "until cancelled")
                what = describe_target(row.subject, row.action, list(row.destinations or []), row.target)
                print(f"#{row.id} {row.action} {what}"
                      f" {state}")
        if not rows and args.verb == "resume":
            print("nothing to resume: no pause, slow or ramp in force there", file=sys.stderr)
        return 0
    finally:
        engine.dispose()


def _do(policy: PolicyEngine, conn: Connection, args: argparse.Namespace, user: str, now: float,
        report: PolicyReport) -> list[Any]:  # the policy's action rows (read through action_json)
    from monitor.core.units import parse_duration, parse_rate
    from monitor.policy import manual

    hold = parse_duration(args.hold) if getattr(args, "hold", None) else None
    if args.verb == "cancel":
        return [manual.cancel(policy, conn, args.id, user=user, now=now, reason=args.reason, hold=hold, ramp=args.ramp,
                              report=report)]
    if args.verb == "resume":
        return manual.resume(policy, conn, args.subject, user=user, now=now, reason=args.reason, hold=hold,
                             ramp=args.ramp, report=report)
    duration = parse_duration(args.duration) if args.duration else None
    if args.verb in ("pause", "slow"):
        rate = parse_rate(args.rate) if args.verb == "slow" else None
        return [manual.operator_action(policy, conn, args.verb, args.subject, user=user, now=now, rate=rate,
                                       duration=duration, reason=args.reason, report=report)]
    return [manual.operator_action(policy, conn, "suppress", args.target, user=user, now=now, duration=duration,
                                   reason=args.reason, report=report)]


def _list(engine: Engine, args: argparse.Namespace, as_json: bool) -> int:
    from monitor.core.units import format_rate, parse_duration
    from monitor.health.clock import SystemClock, iso
    from monitor.policy import manual
    from monitor.policy.actions import action_json, describe_target

    since = datetime.fromtimestamp(SystemClock().now() - parse_duration(args.since), UTC)
    with engine.connect() as conn:
        rows = manual.list_actions(conn, since=since, active_only=args.active)
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(action_json(row), ensure_ascii=False) + "\n")
        return 0
    if not rows:
        print("no actions" + (" in force" if args.active else f" in the last {args.since}"))
        return 0
    print(f"{'ID':>5}  {'ACTION':<8}  {'TARGET':<40}  {'RULE':<28}  {'STARTED':<20}  {'UNTIL / ENDED':<22}")
    for row in rows:
        target = describe_target(row.subject, row.action, list(row.destinations or []), row.target)
        rate = (row.params or {}).get("rate")
        action = row.action + (f" {format_rate(rate)}" if rate and row.action in ("slow", "ramp") else "")
        if row.ended_at is not None:
            end = f"ended {iso(row.ended_at)}"
        else:
            end = (f"until {iso(row.expires_at)}" if row.expires_at
                   else "until clear" if row.until == "clear" else "until cancelled")
        print(f"{row.id:>5}  {action:<8}  {target[:40]:<40}  {row.rule[:28]:<28}  {iso(row.started_at):<20}  {end}")
        for line in row.evidence[:3]:
            print(f"{'':>5}  {'':<8}  {line}")
        if row.ended_at is not None and row.end_reason:
            print(f"{'':>5}  {'':<8}  ended: {row.end_reason}")
    return 0
