"""`repmon lanes --config FILE` lists the sender's lanes with their state;
`repmon lanes pause|slow|resume --config FILE --ip IP --destination NAME ...`
sets a directive that running senders apply within a second."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.config import RepmonConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lanes", help="list the sender's lanes, or pause / slow / resume one",
        description="Without an action: list lanes (source IP x destination) with state, limits, today's counters "
                    "and the rule actions in force. pause, slow and resume store a directive that running senders "
                    "apply within a second; resume also clears rule suspensions and halts.")
    parser.add_argument("action", nargs="?", choices=("list", "pause", "slow", "resume"), default="list")
    parser.add_argument("--config", required=True, metavar="FILE")
    parser.add_argument("--ip", default="*", help="source IP of the lane ('*': every IP; default *)")
    parser.add_argument("--destination", "--provider", default="*", dest="destination",
                        help="provider (google, yahoo, ...), 'relay' or 'mx:<host>' ('*': all; default *)")
    parser.add_argument("--rate", help="slow: the rate, e.g. 10/min, 1/s")
    parser.add_argument("--reason", default="", help="why (shown in listings and logs)")
    parser.add_argument("--for", dest="duration", metavar="DURATION", help="pause/slow: end by itself after, e.g. 2h")
    parser.add_argument("--json", action="store_true", help="list as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.core.db import make_engine
    from monitor.parts import upgrade_schema

    config = load_config(args.config)
    engine = make_engine(config.database_url)
    try:
        upgrade_schema(engine)
        if args.action == "list":
            return _list(engine, config, args.json)
        return _set(engine, args)
    finally:
        engine.dispose()


def _set(engine, args: argparse.Namespace) -> int:
    from monitor.core.errors import ConfigError
    from monitor.core.units import format_rate, parse_duration, parse_rate
    from sender.control import add_directive

    if args.ip == "*" and args.destination == "*" and args.action != "resume":
        print("repmon lanes: name a lane with --ip and/or --destination (refusing to act on every lane implicitly)",
              file=sys.stderr)
        return 2
    try:
        rate = parse_rate(args.rate) if args.rate else None
        expires = time.time() + parse_duration(args.duration) if args.duration else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.action == "slow" and rate is None:
        print("repmon lanes slow: give --rate (e.g. 10/min)", file=sys.stderr)
        return 2
    with engine.begin() as conn:
        result = add_directive(conn, args.action, args.ip, args.destination, rate=rate, reason=args.reason,
                               created_by="operator", expires_at=expires)
    what = {"pause": "paused", "slow": f"slowed to {format_rate(rate)}", "resume": "resumed"}[args.action]
    extra = ""
    if args.action == "resume":
        extra = f" ({result.ended_directives} directives and {result.ended_actions} rule actions ended)"
    print(f"lane {args.ip} -> {args.destination}: {what}{extra}")
    return 0


def _fmt_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def lane_rows(engine, config: RepmonConfig) -> list[dict]:
    """Every lane the database knows or the config implies, with its state."""
    from sqlalchemy import text

    from sender import control
    from sender.lanes import DEFAULT_SOURCE, Lane, build_overlay, lane_key, lane_settings
    from sender.queue import utc_day
    from sender.routing import RELAY

    now = time.time()
    with engine.connect() as conn:
        known = {r[0]: r for r in conn.execute(text(
            "SELECT lane, source_ip, destination, day, delivered_today, deferred_today, bounced_today, "
            "delivered_total, last_reply FROM sender_lane"))}
        queued = {r[0]: r[1] for r in conn.execute(text(
            "SELECT lane, COUNT(*) FROM sender_message WHERE state IN ('queued', 'inflight') GROUP BY lane"))}
        directives = control.active_directives(conn)
        actions = control.active_actions(conn)
    sender = config.sender
    if sender.relay is not None:
        for ip in sender.ips or []:
            key = lane_key(ip.address, RELAY)
            known.setdefault(key, (key, ip.address, RELAY, None, 0, 0, 0, 0, None))
        if not sender.ips:
            key = lane_key(DEFAULT_SOURCE, RELAY)
            known.setdefault(key, (key, DEFAULT_SOURCE, RELAY, None, 0, 0, 0, 0, None))
    # A lane paused or slowed by name before it ever sent (the first hour: pause
    # it before the campaign starts) has no sender_lane row yet: list it too.
    for d in directives:
        if d["source_ip"] != "*" and d["destination"] != "*":
            key = lane_key(d["source_ip"], d["destination"])
            known.setdefault(key, (key, d["source_ip"], d["destination"], None, 0, 0, 0, 0, None))
    today = utc_day(now)
    rows = []
    for key in sorted(known):
        _, ip, destination, day, delivered, deferred, bounced, total, last_reply = known[key]
        if day != today:
            delivered = deferred = bounced = 0
        lane = Lane(key, ip, None, "", destination, lane_settings(sender, destination), 0.0)
        lane.set_overlay(build_overlay(lane, directives, actions, now), now)
        blocked = lane.blocked(now)
        o = lane.overlay
        state = ("halted" if o.halted else "paused" if o.paused else
                 "suspended" if blocked and o.suspended_until else "slowed" if o.slowed_by else "active")
        rows.append({
            "lane": key, "source_ip": ip, "destination": destination, "state": state,
            "why": blocked or ("; ".join(o.slowed_by) if o.slowed_by else None),
            "until": _fmt_time(o.suspended_until) if state == "suspended" else None,
            "rate": lane.describe_rate(), "connections": lane.effective_connections(),
            "deliveries_per_connection": lane.deliveries_per_connection(), "daily_cap": lane.settings.daily_cap,
            "queued": queued.get(key, 0), "delivered_today": delivered, "deferred_today": deferred,
            "bounced_today": bounced, "delivered_total": total, "last_reply": last_reply,
        })
    return rows


def _list(engine, config: RepmonConfig, as_json: bool) -> int:
    from sqlalchemy import text

    from monitor.core.units import format_rate
    from sender import control

    rows = lane_rows(engine, config)
    with engine.connect() as conn:
        actions = control.active_actions(conn)
        directives = [d for d in control.active_directives(conn) if d["kind"] != "resume"]
        unrouted = conn.execute(text("SELECT COUNT(*) FROM sender_message WHERE state = 'queued' AND lane = ''")).scalar()
    if as_json:
        for a in actions:
            for k in ("created_at", "expires_at", "ended_at"):
                a[k] = _fmt_time(a[k])
        for d in directives:
            for k in ("created_at", "expires_at", "ended_at"):
                d[k] = _fmt_time(d[k])
        print(json.dumps({"lanes": rows, "actions": actions, "directives": directives, "unrouted": unrouted},
                         indent=2))
        return 0
    if not rows:
        print("no lanes yet (nothing sent, no [sender.relay])")
    header = f"{'LANE':40} {'STATE':10} {'RATE':>10} {'CONN':>4} {'QUEUED':>7} {'SENT':>7} {'DEFER':>6} {'BOUNCE':>6}  WHY"
    if rows:
        print(header)
    for r in rows:
        why = r["why"] or ""
        if r["until"]:
            why = f"until {r['until']}: {why}"
        print(f"{r['source_ip'] + ' -> ' + r['destination']:40} {r['state']:10} {r['rate']:>10} {r['connections']:>4} "
              f"{r['queued']:>7} {r['delivered_today']:>7} {r['deferred_today']:>6} {r['bounced_today']:>6}  {why[:120]}")
    if unrouted:
        print(f"{unrouted} messages wait for routing")
    if directives:
        print("\ndirectives in force:")
        for d in directives:
            until = _fmt_time(d["expires_at"]) or "until resumed"
            what = d["kind"] + (f" to {format_rate(d['rate'])}" if d["kind"] == "slow" and d["rate"] else "")
            why = f": {d['reason'][:120]}" if d["reason"] else ""
            print(f"  #{d['id']} {what} {d['source_ip']} -> {d['destination']} by {d['created_by']} ({until}){why}")
    if actions:
        print("\nrule actions in force:")
        for a in actions:
            until = _fmt_time(a["expires_at"]) or "until cleared (repmon lanes resume)"
            print(f"  #{a['id']} {a['action']} {a['source_ip']} -> {a['destination']} by rule {a['rule']} "
                  f"({until}) on: {a['response'][:160]}")
    return 0
