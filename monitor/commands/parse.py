"""`repmon parse [--json] [--no-sources] PATH...`: run the parsers over files and folders.

Files are opened without blocking and checked on the opened descriptor, so a
FIFO, a device (/dev/zero) or a socket is refused with a clear message instead
of hanging or reading forever; regular files are read at most
MAX_INPUT_BYTES + 1 bytes. DMARC aggregate records are given where their mail
came from (parsers/reports/sources.py, offline) unless --no-sources says not to.

`--json` output is written event by event and, for an aggregate report, record
by record, so a 100,000-record report is never held as one JSON string.

Like every command module, this one imports only the standard library at its
top (monitor/cli.py loads all of them for every command); the parsers are
imported when the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import stat
import sys
from collections.abc import Iterator
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

if TYPE_CHECKING:
    from parsers.events import AnyEvent, DmarcAggregateEvent, DmarcRecord
    from parsers.reports.sources import IpEnricher

_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str).encode


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("parse", help="parse feedback messages and reports, print their events")
    _add_arguments(parser)
    parser.set_defaults(handler=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (searched recursively)")
    parser.add_argument("--json", action="store_true", help="JSON Lines, one object per event")
    parser.add_argument("--no-sources", dest="sources", action="store_false",
                        help="leave the source_* fields (country, AS, service) of DMARC records empty")


def main(argv: list[str] | None = None) -> int:
    """`python -m monitor.commands.parse ...`: this command alone, without
    importing the other commands' modules (database, scheduler, HTTP clients)."""
    parser = argparse.ArgumentParser(prog="repmon parse", description="Parse feedback messages and reports.")
    _add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except BrokenPipeError:  # e.g. `... | head`
        return 0


def iter_files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and not child.name.startswith("."):
                yield child
    else:
        yield path


def shown_name(path: str) -> str:
    """A file name as valid UTF-8 text: bytes that are not UTF-8 (kept by
    Python as lone surrogates) are written as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def describe(event: AnyEvent) -> str:
    """One human line per event: the fields a deliverability engineer scans for."""
    from parsers.events import DmarcAggregateEvent

    if isinstance(event, DmarcAggregateEvent):
        return _describe_aggregate(event)
    d = event.to_dict()
    kind = d["kind"]
    if kind == "bounce":
        code = " ".join(str(x) for x in (d["reply_code"], d["status"]) if x)
        diagnostic = (d["diagnostic"] or "")[:100]
        return f"bounce {d['hard_or_soft']:4} {d['reason']:15} {d['recipient'] or '-'}  {code}  {diagnostic}"
    if kind == "feedback":
        return (f"feedback {d['feedback_type']:10} {d['recipient'] or '-'}  "
                f"source_ip={d['source_ip'] or '-'} domain={d['reported_domain'] or '-'}")
    if kind == "dmarc_failure":
        return f"dmarc_failure {d['reported_domain']} from {d['source_ip']} auth_failure={d['auth_failure']}"
    if kind == "tls_report":
        parts = [f"{p['policy_domain']} ok={p['successful_session_count']} failed={p['failed_session_count']}"
                 for p in d["policies"]]
        return f"tls_report {d['organization_name']}: " + "; ".join(parts)
    if kind == "unparseable":
        return f"unparseable: {d['error']}"
    rest = {k: v for k, v in d.items() if k != "kind" and v not in (None, [], {})}
    return f"{kind} " + " ".join(f"{k}={v}" for k, v in rest.items())


def _describe_aggregate(event: DmarcAggregateEvent) -> str:
    from parsers.events import iso_utc

    total = sum(r.count for r in event.records)
    # a record without <policy_evaluated> (dkim/spf None) is not known to fail
    failing = sum(r.count for r in event.records
                  if r.dkim is not None and r.spf is not None and r.dkim != "pass" and r.spf != "pass")
    return (f"dmarc_aggregate {event.org_name} for {event.domain} p={event.policy} "
            f"{iso_utc(event.begin)}..{iso_utc(event.end)}: "
            f"{len(event.records)} rows, {total} messages, {failing} failing DMARC")


def write_json(out: TextIO, shown: str, event: AnyEvent) -> None:
    """One JSON line: {"file": ..., **event.to_dict()}, an aggregate report's
    records encoded one at a time."""
    from parsers.events import DmarcAggregateEvent, iso_utc

    if not isinstance(event, DmarcAggregateEvent):
        out.write(_ENCODE({"file": shown, **event.to_dict()}) + "\n")
        return
    out.write('{"file": ' + _ENCODE(shown) + ', "kind": ' + _ENCODE(event.kind))
    for field in dataclasses.fields(event):
        out.write(", " + _ENCODE(field.name) + ": ")
        if field.name == "records":
            _write_records(out, event.records)
        else:
            value = getattr(event, field.name)
            out.write(_ENCODE(iso_utc(value) if isinstance(value, datetime) else value))
    out.write("}\n")


def _write_records(out: TextIO, records: list[DmarcRecord]) -> None:
    """The records as a JSON list, one record encoded at a time."""
    encode = _RecordEncoder()
    separator = ""
    out.write("[")
    for record in records:
        out.write(separator + encode(record))
        separator = ", "
    out.write("]")


class _RecordEncoder:
    """JSON of one DmarcRecord, the same text json.dumps gives for its dict.

    Apart from source_ip and count, the records of a report repeat a few
    combinations of values: the results (the parser even shares their dicts)
    and the source of the IP. Each part is encoded once per combination and
    reused. Results are keyed by their values and the identity of their dicts,
    which the records keep alive while they are written."""

    _MAX_CACHED = 50_000  # combinations kept per part; past that, the part is encoded each time

    def __init__(self) -> None:
        from parsers.events import DmarcRecord

        # DmarcRecord's fields in output order: source_ip, count, the results (disposition
        # to policy_override_reasons), then the source of the IP (source_country to the end)
        fields = tuple(f.name for f in dataclasses.fields(DmarcRecord))
        first_source = fields.index("source_country")
        self._result_fields = fields[2:first_source]
        self._source_fields = fields[first_source:]
        self._result_values = attrgetter(*self._result_fields)
        self._result_scalars = attrgetter(*(name for name in self._result_fields
                                            if not name.endswith(("_results", "_reasons"))))
        self._source_values = attrgetter(*self._source_fields)
        self._results: dict[tuple[object, ...], str] = {}
        self._sources: dict[tuple[object, ...], str] = {}

    def __call__(self, record: DmarcRecord) -> str:
        key = (self._result_scalars(record), tuple(map(id, record.dkim_results)),
               tuple(map(id, record.spf_results)), tuple(map(id, record.policy_override_reasons)))
        results = self._results.get(key)
        if results is None:
            results = self._part(self._results, key, self._result_fields, self._result_values(record))
        source_values = self._source_values(record)
        sources = self._sources.get(source_values)
        if sources is None:
            sources = self._part(self._sources, source_values, self._source_fields, source_values)
        return ('{"source_ip": ' + _ENCODE(record.source_ip) + ', "count": ' + _ENCODE(record.count) + ", "
                + results + ", " + sources + "}")

    def _part(self, cache: dict[tuple[object, ...], str], key: tuple[object, ...], names: tuple[str, ...],
              values: tuple[object, ...]) -> str:
        """'"name": value, ...' for these fields (a JSON object without its braces)."""
        text = _ENCODE(dict(zip(names, values, strict=True)))[1:-1]
        if len(cache) < self._MAX_CACHED:
            cache[key] = text
        return text


def open_regular(path: Path) -> BinaryIO:
    """The file opened for reading; OSError unless it is a regular file.
    O_NONBLOCK: opening a FIFO would otherwise wait for a writer."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file ({_file_type(mode)}); only files and folders are read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a file"


def _enricher(wanted: bool) -> IpEnricher | None:
    from parsers.reports.sources import default_enricher

    if not wanted:
        return None
    try:
        return default_enricher()
    except (OSError, ValueError) as exc:  # parsedmarc's data missing or unreadable: parse anyway
        print(f"repmon parse: source lookups off: {exc}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    # A large report is hundreds of thousands of small acyclic objects; the default
    # thresholds run the cyclic collector over them thousands of times (10 % of the time).
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        return _parse_all(args)
    finally:
        gc.set_threshold(*thresholds)


def _parse_all(args: argparse.Namespace) -> int:
    from parsers import parse_file
    from parsers.events import DmarcAggregateEvent

    out = sys.stdout
    enricher = _enricher(args.sources)
    status = 0
    for given in args.paths:
        root = Path(given)
        if not root.exists():
            print(f"repmon parse: {shown_name(given)}: no such file or folder", file=sys.stderr)
            status = 1
            continue
        for path in iter_files(root):
            shown = shown_name(str(path) if root.is_dir() else given)
            try:
                with open_regular(path) as handle:
                    events = parse_file(handle)
            except OSError as exc:
                print(f"repmon parse: {shown}: {exc.strerror or exc}", file=sys.stderr)
                status = 1
                continue
            for event in events:
                if enricher is not None and isinstance(event, DmarcAggregateEvent):
                    enricher.enrich(event)
                if args.json:
                    write_json(out, shown, event)
                else:
                    out.write(f"{shown}: {describe(event)}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
