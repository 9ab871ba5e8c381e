"""`repmon delivery-logs`: the MTA delivery-log sources ([[delivery_logs]]).

    repmon delivery-logs status --config FILE [--json]        files, offsets, lines, outcomes, rejects
    repmon delivery-logs read --config FILE [--source NAME]   one pass over the file sources now
    journalctl -u postfix -o json -f | repmon delivery-logs pipe --config FILE --source NAME
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.config import RepmonConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("delivery-logs", help="delivery logs of the MTA you run (Postfix, PowerMTA, KumoMTA)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    status = verbs.add_parser("status", help="files read, offsets, outcomes stored and lines rejected")
    status.add_argument("--json", action="store_true")
    read = verbs.add_parser("read", help="read what is new in the file sources now (one pass)")
    read.add_argument("--source", help="only this [[delivery_logs]] name")
    pipe = verbs.add_parser("pipe", help="read `journalctl -o json` from stdin into a postfix-journal source")
    pipe.add_argument("--source", required=True, help="the [[delivery_logs]] name (kind postfix-journal)")
    for sub in (status, read, pipe):
        sub.add_argument("--config", required=True, metavar="FILE", help="repmon TOML configuration")
    parser.set_defaults(handler=run)


def load_config(path: str) -> RepmonConfig:
    """monitor.config.load_config, imported when called (tests replace this one)."""
    from monitor.config import load_config as load

    return load(path)


def _sections(config: Any) -> list[Any]:
    from monitor.core.errors import ConfigError

    sections = getattr(config, "delivery_logs", None)
    if sections is None:
        raise ConfigError("this repmon has no [[delivery_logs]] support in its configuration model")
    return list(sections)


def run(args: argparse.Namespace) -> int:
    from monitor.core.db import make_engine
    from monitor.core.errors import ConfigError
    from monitor.mtalogs.ingest import JournalPipe, SourceReader
    from monitor.parts import upgrade_schema

    config = load_config(args.config)
    sections = _sections(config)
    engine = make_engine(config.database_url)
    try:
        upgrade_schema(engine)
        if args.verb == "status":
            return _status(engine, sections, args.json)
        if args.verb == "read":
            chosen = [s for s in sections if args.source in (None, s.display_name) and str(s.path) != "-"]
            if args.source and not chosen:
                raise ConfigError(f"no file source named {args.source!r} in [[delivery_logs]]")
            for section in chosen:
                result = SourceReader(engine, section).run_pass()
                stored = result.stored
                print(f"{result.source}: {result.lines} lines from {result.files} files, {stored.deliveries} outcomes, "
                      f"{stored.complaints} complaints, {stored.events} events, {stored.suppressions} suppressions, "
                      f"{stored.rejected} rejected{' (more left)' if result.more else ''}")
            return 0
        section = next((s for s in sections if s.display_name == args.source), None)
        if section is None or section.kind != "postfix-journal":
            raise ConfigError(f"--source {args.source!r}: give a [[delivery_logs]] name of kind postfix-journal")
        result = JournalPipe(engine, section).run(sys.stdin.fileno())
        print(f"{result.source}: {result.lines} journal records, {result.stored.deliveries} outcomes, "
              f"{result.stored.rejected} rejected", file=sys.stderr)
        return 0
    finally:
        engine.dispose()


def _status(engine: Any, sections: list[Any], as_json: bool) -> int:
    from monitor.mtalogs.reading import file_status, reject_counts

    with engine.connect() as conn:
        files = file_status(conn)
        rejects = reject_counts(conn)
    if as_json:
        for f in files:
            sys.stdout.write(json.dumps({"source": f.source, "path": f.path, "offset": f.offset, "lines": f.lines,
                                         "records": f.records, "rejected": f.rejected,
                                         "updated_at": f.updated_at.isoformat()}) + "\n")
        return 0
    if not sections:
        print("no [[delivery_logs]] configured")
    for section in sections:
        name = section.display_name
        ours = [f for f in files if f.source == name]
        print(f"{name} ({section.kind}, {section.path}): {len(ours)} files tracked, {rejects.get(name, 0)} lines rejected")
        for f in ours:
            print(f"  {f.path}  offset {f.offset:,}  lines {f.lines:,}  stored {f.records:,}  rejected {f.rejected:,}"
                  f"  updated {f.updated_at:%Y-%m-%d %H:%M:%S}Z")
    return 0
