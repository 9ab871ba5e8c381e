"""`repmon dnsbl check [--json] [--config FILE] [TARGET...]`: ask the blocklists now.

Targets are IPs or domains (default: the configured [dnsbl] ips, ranges and
domains). Each zone's RFC 5782 test points are checked first; a zone that
fails them reports `error` for every target instead of a verdict.

Exit status: 0 nothing listed and every check answered, 1 something is
listed, 3 nothing listed but some checks ended in error (unknown), 2 bad
configuration or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.config import RepmonConfig
    from monitor.signals.dnsbl import CheckResult


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("dnsbl", help="DNS blocklist checks")
    actions = parser.add_subparsers(dest="dnsbl_command", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="check targets against the configured blocklists now",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("targets", nargs="*", metavar="TARGET", help="IP addresses or domains (default: configured)")
    check.add_argument("--config", metavar="FILE", help="repmon TOML configuration")
    check.add_argument("--json", action="store_true", help="JSON Lines: one object per target and zone")
    check.add_argument("--resolver", metavar="IP:PORT", help="override [dns] resolver")
    check.add_argument("--zone", action="append", metavar="NAME", help="only these zones (repeatable)")
    check.set_defaults(handler=run)


def _config(args: argparse.Namespace) -> RepmonConfig:
    from pydantic import ValidationError

    from monitor.config import load_config, parse_config
    from monitor.core.errors import ConfigError
    from monitor.signals.settings import DnsConfig

    config = load_config(args.config) if args.config else parse_config({})
    if args.resolver:
        try:
            config.dns = DnsConfig.model_validate({**config.dns.model_dump(), "resolver": args.resolver})
        except ValidationError as exc:
            raise ConfigError(f"--resolver: {exc.errors()[0]['msg']}") from None
    return config


def run(args: argparse.Namespace) -> int:
    import asyncio  # 40 ms: not for `repmon --help`

    from monitor.core.errors import ConfigError
    from monitor.signals.blocklists import check_now, configured_targets
    from monitor.signals.targets import TargetError, parse_target
    from monitor.signals.zones import build_zones

    config = _config(args)
    try:
        targets = [parse_target(t) for t in args.targets] if args.targets else configured_targets(config.dnsbl)
    except TargetError as exc:
        raise ConfigError(str(exc)) from None
    if not targets:
        raise ConfigError("nothing to check: give targets or configure [dnsbl] ips / domains")
    try:
        zones = build_zones(config.dnsbl)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.zone:
        wanted = {z.lower().rstrip(".") for z in args.zone}
        zones = [z for z in zones if z.display.lower() in wanted or z.name.lower() in wanted]
        if not zones:
            raise ConfigError(f"no configured zone matches {', '.join(args.zone)}")
    result = asyncio.run(check_now(config.dns, config.dnsbl, targets, zones))
    if args.json:
        _print_json(result)
    else:
        _print_table(result)
    statuses = {o.status for o in result.observations}
    if "listed" in statuses:
        return 1
    return 3 if "error" in statuses else 0


def _print_json(result: CheckResult) -> None:
    out = sys.stdout
    for o in result.observations:
        record = {"target": o.target, "zone": o.zone, "status": o.status, "codes": list(o.codes),
                  "reason": o.reason, "meanings": list(o.meanings), "txt": o.txt, "delist_url": o.delist_url}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _print_table(result: CheckResult) -> None:
    out = sys.stdout
    for health in result.health.values():
        if not health.ok:
            print(f"zone {health.zone}: {health.status}: {health.detail}", file=sys.stderr)
    rows = [(o.target, o.zone, o.status, ",".join(o.codes) or "-", _reason(o)) for o in result.observations]
    headers = ("TARGET", "ZONE", "STATUS", "CODES", "REASON")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers[:4])]
    out.write("  ".join(h.ljust(w) for h, w in zip(headers[:4], widths, strict=True)) + "  " + headers[4] + "\n")
    for row in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(row[:4], widths, strict=True)) + "  " + row[4] + "\n")
    listed = sum(1 for o in result.observations if o.status == "listed")
    errors = sum(1 for o in result.observations if o.status == "error")
    out.write(f"\n{len(rows)} checks: {listed} listed, {errors} error, {len(rows) - listed - errors} clean\n")


def _reason(o) -> str:
    text = o.reason
    if o.status == "listed" and o.txt:
        text = f"{text} | {o.txt}"
    if o.delist_url:
        text = f"{text} | delist: {o.delist_url}"
    return text
