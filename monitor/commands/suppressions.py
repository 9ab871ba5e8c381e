"""`repmon suppressions`: the suppression list, managed.

    repmon suppressions list [--json] [--reason R] [--source S] [--since TIME] [--search TEXT] --config FILE
    repmon suppressions show ADDRESS|@DOMAIN [--json] --config FILE
    repmon suppressions add ADDRESS|@DOMAIN --reason TEXT --config FILE
    repmon suppressions remove ADDRESS|@DOMAIN --reason TEXT --config FILE
    repmon suppressions export --format csv|json|postfix|pmta [--since CURSOR] --config FILE

Adds and removals are audited (who: $REPMON_USER or the login name, why,
when); a removed address is not suppressed again by the evidence it was
removed over. `export` writes the list to stdout and the cursor to stderr;
`--since CURSOR` writes only what changed after that export.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("suppressions", help="list, show, add, remove and export suppressions")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    listing = verbs.add_parser("list", help="suppressions in force, newest last")
    listing.add_argument("--reason", help="hard_bounce, complaint, opt_out, soft_bounce or manual")
    listing.add_argument("--source", help="who decided (bounce, feedback, cli:NAME, policy:ID; a trailing * matches a prefix)")
    listing.add_argument("--since", help="first seen within (7d) or since an ISO date")
    listing.add_argument("--search", help="part of the address, domain or detail")
    listing.add_argument("--include-expired", action="store_true", help="expired soft suppressions too")
    listing.add_argument("--limit", type=int, default=0, help="at most this many (default: all)")
    _common(listing)

    show = verbs.add_parser("show", help="one suppression: why, the event and message behind it, its history")
    show.add_argument("address", help="bob@example.net or @example.net")
    _common(show)

    for name, what in (("add", "suppress an address or a whole @domain by hand"),
                       ("remove", "take an address or @domain off the list (audited)")):
        sub = verbs.add_parser(name, help=what)
        sub.add_argument("address", help="bob@example.net or @example.net")
        sub.add_argument("--reason", required=True, help="why (kept in the audit)")
        _common(sub)

    export = verbs.add_parser("export", help="the list for an MTA: Postfix access map, PowerMTA, CSV, JSON")
    export.add_argument("--format", required=True, choices=("csv", "json", "postfix", "pmta"))
    export.add_argument("--since", metavar="CURSOR", help="only changes after the export that printed this cursor")
    _common(export)
    parser.set_defaults(handler=run)


def _common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--config", required=True, metavar="FILE", help="repmon TOML configuration")
    sub.add_argument("--json", action="store_true", help="JSON output")


def _user() -> str:
    try:
        return os.environ.get("REPMON_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.core.db import make_engine, session_scope
    from monitor.parts import upgrade_schema
    from monitor.storage import suppression_admin as admin

    config = load_config(args.config)
    engine = make_engine(config.database_url)
    try:
        upgrade_schema(engine)
        with session_scope(engine) as session:
            try:
                return VERBS[args.verb](session, args)
            except admin.AdminError as exc:
                print(f"repmon suppressions: {exc}", file=sys.stderr)
                return 2
    finally:
        engine.dispose()


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")


def _list(session: Any, args: argparse.Namespace) -> int:
    from monitor.storage import suppression_admin as admin

    filters = admin.Filters(reason=args.reason, source=args.source, search=args.search,
                            include_expired=args.include_expired)
    if args.since:
        filters.since = admin.parse_since(args.since)
    cursor: str | None = None
    shown = 0
    if not args.json:
        print(f"{'ADDRESS':<40}  {'REASON':<11}  {'SOURCE':<16}  {'FIRST SEEN':<20}  {'COUNT':>5}  EXPIRES / DETAIL")
    while True:
        page = admin.list_suppressions(session, filters, cursor=cursor, limit=admin.MAX_PAGE)
        for item in page.items:
            if args.limit and shown >= args.limit:
                return 0
            shown += 1
            if args.json:
                _print_json(item)
            else:
                tail = " ".join(x for x in (f"until {item['expires']}" if item["expires"] else "", item["detail"] or "") if x)
                print(f"{item['address'][:40]:<40}  {item['reason']:<11}  {item['source'][:16]:<16}  "
                      f"{(item['first_seen'] or '')[:20]:<20}  {item['count']:>5}  {tail}")
        cursor = page.next_cursor
        if cursor is None:
            break
    if not args.json and shown == 0:
        print("no suppressions match")
    return 0


def _show(session: Any, args: argparse.Namespace) -> int:
    from monitor.storage import suppression_admin as admin

    found = admin.show(session, args.address)
    if found is None:
        print(f"{args.address}: not on the suppression list", file=sys.stderr)
        return 1
    if args.json:
        _print_json(found)
        return 0
    state = "suppressed" if found["suppressed"] else "not suppressed"
    print(f"{found['address']}: {state}")
    for key in ("reason", "detail", "source", "first_seen", "last_seen", "count", "expires"):
        if key in found:
            print(f"  {key:<11} {found[key] if found[key] is not None else '-'}")
    event = found.get("event")
    if event:
        message = event.get("message") or {}
        print(f"  event       #{event['id']} {event['kind']} at {event['occurred']}"
              f" ({event.get('reason') or event.get('feedback_type') or '-'})")
        where = message.get("file") or " ".join(str(x) for x in (message.get("source"), message.get("folder"),
                                                                   message.get("uid") and f"UID {message['uid']}") if x)
        print(f"  message     {where or '-'}  Message-ID {message.get('message_id') or '-'}")
    for entry in found.get("history", []):
        print(f"  {entry['at']}  {entry['op']} by {entry['actor']}: {entry['why']}")
    return 0


def _add(session: Any, args: argparse.Namespace) -> int:
    from monitor.storage import suppression_admin as admin

    row = admin.add(session, args.address, why=args.reason, actor=f"cli:{_user()}")
    if args.json:
        _print_json(row)
    else:
        print(f"suppressed {row['address']} ({row['reason']}: {row['detail']})")
    return 0


def _remove(session: Any, args: argparse.Namespace) -> int:
    from monitor.storage import suppression_admin as admin

    removed = admin.remove(session, args.address, why=args.reason, actor=f"cli:{_user()}")
    if removed is None:
        print(f"{args.address}: not on the suppression list", file=sys.stderr)
        return 1
    if args.json:
        _print_json(removed)
    else:
        old = removed.get("removed") or {}
        print(f"removed {removed['target']} (was {old.get('reason')}, source {old.get('source')})")
    return 0


def _export(session: Any, args: argparse.Namespace) -> int:
    from monitor.storage import suppression_admin as admin

    since = admin.ExportCursor.parse(args.since) if args.since else None
    result = admin.export(session, since)
    for chunk in admin.render(result, args.format):
        sys.stdout.write(chunk)
    sys.stdout.flush()
    note = f" ({len(result.removed)} removed since: a full export drops them)" if (
        result.removed and args.format in ("postfix", "pmta")) else ""
    print(f"cursor: {result.cursor}{note}", file=sys.stderr)
    return 0


VERBS = {"list": _list, "show": _show, "add": _add, "remove": _remove, "export": _export}
