"""`repmon dmarc sources [--domain D] [--since 7d] [--failing] [--json] --config FILE`:
who sends mail as our domains, per source (the sending service, else the AS,
else the IP), from the stored DMARC aggregate reports: messages, DMARC pass
rate, DKIM / SPF pass and alignment rates, countries, the IPs behind each
source and whether an IP is one of ours ([[sender.ips]], [dnsbl] ips).

Like every command module, this one imports only the standard library at its
top; the handler imports the database and the query.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.storage.dmarc_sources import SourceSummary

IPS_SHOWN = 5  # per source in the table; --json lists them all


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("dmarc", help="DMARC aggregate data: who sends as our domains")
    actions = parser.add_subparsers(dest="dmarc_action", required=True, metavar="ACTION")
    sources = actions.add_parser("sources", help="per sending source: messages, pass and alignment rates, "
                                                 "countries, IPs")
    sources.add_argument("--config", required=True, metavar="FILE", help="repmon TOML configuration")
    sources.add_argument("--domain", help="only this From domain (default: every domain reported)")
    sources.add_argument("--since", default="7d", help="report periods ending in the last ... (default 7d)")
    sources.add_argument("--failing", action="store_true",
                         help="only sources with mail that failed DMARC, most failing first")
    sources.add_argument("--json", action="store_true", help="one JSON object per source (JSON Lines)")
    sources.set_defaults(handler=run)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _top(counts: dict[str, int], limit: int = 3) -> str:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ",".join(code for code, _ in ordered[:limit])
    return text + (f",+{len(ordered) - limit}" if len(ordered) > limit else "") if text else "-"


def _ips(summary: SourceSummary) -> str:
    ips = sorted(summary.ips.values(), key=lambda i: (-i.messages, i.ip))
    shown = [ip.ip + ("*" if ip.ours else "") for ip in ips[:IPS_SHOWN]]
    more = len(ips) - IPS_SHOWN
    return " ".join(shown) + (f" +{more} more" if more > 0 else "")


def write_table(out: Any, found: list[SourceSummary]) -> None:
    header = ("source", "type", "messages", "dmarc", "dkim", "dkim al", "spf", "spf al", "countries", "ours", "ips")
    rows = [(s.source[:40], (s.source_type or "-")[:20], str(s.messages), _pct(s.rate(s.dmarc_pass)),
             _pct(s.rate(s.dkim_pass)), _pct(s.rate(s.dkim_aligned)), _pct(s.rate(s.spf_pass)),
             _pct(s.rate(s.spf_aligned)), _top(s.countries), "yes" if s.ours else "no", _ips(s)) for s in found]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.rjust(w) if 2 <= i <= 7 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=False))]
        out.write("  ".join(cells) + "  " + row[-1] + "\n")
    out.write("(* one of our IPs)\n")


def run(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from sqlalchemy.exc import SQLAlchemyError

    from monitor.config import load_config
    from monitor.core.config import ConfigError
    from monitor.core.db import make_engine, redact_url
    from monitor.core.dbtypes import utcnow
    from monitor.core.units import parse_duration
    from monitor.parts import upgrade_schema
    from monitor.storage.dmarc_sources import dmarc_sources, networks

    try:
        since_s = parse_duration(args.since)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    config = load_config(args.config)
    ours = networks([ip.address for ip in config.sender.ips] + list(config.dnsbl.ips))
    engine = make_engine(config.database_url)
    try:
        upgrade_schema(engine)
        with engine.connect() as conn:
            found = dmarc_sources(conn, since=utcnow() - timedelta(seconds=since_s), domain=args.domain,
                                  ours=ours, failing=args.failing)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"repmon dmarc sources: cannot read the database {redact_url(config.database_url)}: {reason}",
              file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    out = sys.stdout
    if args.json:
        for summary in found:
            out.write(json.dumps(summary.to_dict(), sort_keys=False) + "\n")
        return 0
    if not found:
        what = "failing DMARC " if args.failing else ""
        out.write(f"no {what}DMARC aggregate data in the last {args.since}"
                  f"{' for ' + args.domain if args.domain else ''}\n")
        return 0
    write_table(out, found)
    return 0
