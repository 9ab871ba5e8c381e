"""`repmon parse [--json] PATH...`: run the parsers over files and folders."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from parsers import parse_bytes
from parsers.events import AnyEvent


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("parse", help="parse feedback messages and reports, print their events")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (searched recursively)")
    parser.add_argument("--json", action="store_true", help="JSON Lines, one object per event")
    parser.set_defaults(handler=run)


def iter_files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and not child.name.startswith("."):
                yield child
    else:
        yield path


def describe(event: AnyEvent) -> str:
    """One human line per event: the fields a deliverability engineer scans for."""
    d = event.to_dict()
    kind = d["kind"]
    if kind == "bounce":
        code = " ".join(str(x) for x in (d["reply_code"], d["status"]) if x)
        return f"bounce {d['hard_or_soft']:4} {d['reason']:15} {d['recipient'] or '-'}  {code}  {(d['diagnostic'] or '')[:100]}"
    if kind == "feedback":
        return f"feedback {d['feedback_type']:10} {d['recipient'] or '-'}  source_ip={d['source_ip'] or '-'} domain={d['reported_domain'] or '-'}"
    if kind == "dmarc_aggregate":
        total = sum(r["count"] for r in d["records"])
        failing = sum(r["count"] for r in d["records"] if r["dkim"] != "pass" and r["spf"] != "pass")
        return (f"dmarc_aggregate {d['org_name']} for {d['domain']} p={d['policy']} {d['begin']}..{d['end']}: "
                f"{len(d['records'])} rows, {total} messages, {failing} failing DMARC")
    if kind == "dmarc_failure":
        return f"dmarc_failure {d['reported_domain']} from {d['source_ip']} auth_failure={d['auth_failure']}"
    if kind == "tls_report":
        parts = [f"{p['policy_domain']} ok={p['successful_session_count']} failed={p['failed_session_count']}" for p in d["policies"]]
        return f"tls_report {d['organization_name']}: " + "; ".join(parts)
    if kind == "unparseable":
        return f"unparseable: {d['error']}"
    rest = {k: v for k, v in d.items() if k != "kind" and v not in (None, [], {})}
    return f"{kind} " + " ".join(f"{k}={v}" for k, v in rest.items())


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    status = 0
    for given in args.paths:
        root = Path(given)
        if not root.exists():
            print(f"repmon parse: {given}: no such file or folder", file=sys.stderr)
            status = 1
            continue
        for path in iter_files(root):
            shown = str(path) if root.is_dir() else given
            try:
                data = path.read_bytes()
            except OSError as exc:
                print(f"repmon parse: {shown}: {exc.strerror}", file=sys.stderr)
                status = 1
                continue
            for event in parse_bytes(data):
                if args.json:
                    record = {"file": shown, **event.to_dict()}
                    out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                else:
                    out.write(f"{shown}: {describe(event)}\n")
    return status
