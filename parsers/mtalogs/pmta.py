"""PowerMTA accounting files (CSV, RFC 4180, a header line first).

Columns are found by the header, never by position: PowerMTA writes the
fields each record type is configured with (`record-fields`), all record types
of a file share one header, and a type leaves the columns it does not have
empty. A header line (first field `type`) may appear again later in a file
(PowerMTA restarted, files concatenated); it replaces the previous one.

Record types read: `d` (delivered) -> sent, `b` (bounced) and `rb` (remote
bounce: a bounce that came back after delivery) -> bounced, `t` (transient
failure) -> deferred, `f` (feedback loop report) -> a complaint. The others
(`r` received, `tq` queue-level transient, `rs` remote status) are not
per-recipient outcomes and give None. Times are epoch seconds (PowerMTA's
default) or "YYYY-MM-DD HH:MM:SS+ZZZZ".

Fields used (case and `-`/`_` ignored): timeLogged, orig, rcpt, dsnStatus,
dsnDiag, dsnMta, dlvSourceIp, dlvDestinationIp, vmta, jobId; for `f` records
feedbackType (or fbType / Feedback-Type), rcpt (or the original recipient),
sourceIp, reportedDomain, userAgent.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, tzinfo

from parsers.mtalogs.events import BadRecord, DeliveryRecord, FeedbackRecord, MtaRecord, Status, clip, domain_of
from parsers.mtalogs.times import any_time

MTA = "pmta"
MAX_COLUMNS = 500
_STATUS: dict[str, Status] = {"d": "sent", "delivery": "sent", "b": "bounced", "bounce": "bounced",
                              "rb": "bounced", "remotebounce": "bounced", "t": "deferred", "transient": "deferred"}
_FEEDBACK = frozenset({"f", "feedback", "feedbackloop"})
_SKIPPED = frozenset({"r", "receipt", "received", "tq", "transientqueue", "rs", "remotestatus"})


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


class PmtaReader:
    """Reads accounting CSV lines one at a time; the header line sets the columns."""

    def __init__(self, *, tz: tzinfo = UTC) -> None:
        self.tz = tz
        self.columns: dict[str, int] | None = None

    def feed(self, line: str) -> MtaRecord | None:
        line = line.rstrip("\r\n")
        if not line.strip():
            return None
        try:
            row = next(csv.reader([line], strict=True))
        except (csv.Error, StopIteration) as exc:
            return BadRecord(MTA, f"not a CSV record: {exc}", clip(line) or "")
        if not row:
            return None
        if len(row) > MAX_COLUMNS:
            return BadRecord(MTA, f"more than {MAX_COLUMNS} columns", clip(line) or "")
        kind = _norm(row[0]).lstrip("#")
        if kind == "type":
            self.columns = {}
            for i, name in enumerate(row):
                self.columns.setdefault(_norm(name).lstrip("#"), i)
            return None
        if self.columns is None:
            return BadRecord(MTA, "record before any header line (type,timeLogged,...)", clip(line) or "")
        if kind in _SKIPPED:
            return None
        if kind in _FEEDBACK:
            return self._feedback(row, line)
        status = _STATUS.get(kind)
        if status is None:
            return BadRecord(MTA, f"unknown record type {row[0][:20]!r}", clip(line) or "")
        return self._delivery(status, row, line)

    def _get(self, row: list[str], *names: str) -> str | None:
        assert self.columns is not None
        for name in names:
            i = self.columns.get(name)
            if i is not None and i < len(row) and row[i].strip():
                return row[i].strip()
        return None

    def _when(self, row: list[str], line: str) -> datetime | BadRecord:
        text = self._get(row, "timelogged", "time")
        when = any_time(text, self.tz) if text else None
        if when is None:
            return BadRecord(MTA, f"no readable timeLogged ({(text or '')[:40]!r})", clip(line) or "")
        return when

    def _delivery(self, status: Status, row: list[str], line: str) -> MtaRecord:
        when = self._when(row, line)
        if isinstance(when, BadRecord):
            return when
        sender = self._get(row, "orig")
        host, mta_ip = _mta(self._get(row, "dsnmta"))
        diagnostic = self._get(row, "dsndiag")
        return DeliveryRecord(
            mta=MTA, timestamp=when, status=status, recipient=clip(self._get(row, "rcpt"), 320),
            queue_id=clip(self._get(row, "jobid", "envid"), 64), sender=clip(sender, 320),
            sender_domain=domain_of(sender), source_ip=clip(self._get(row, "dlvsourceip"), 64),
            destination_host=host, destination_ip=clip(self._get(row, "dlvdestinationip", "dlvdesintationip"), 64)
            or mta_ip, dsn=clip((self._get(row, "dsnstatus") or "").partition(" ")[0], 16),
            reply_code=_reply_code(diagnostic), diagnostic=clip(diagnostic),
            agent=clip(self._get(row, "vmta"), 64),
        )

    def _feedback(self, row: list[str], line: str) -> MtaRecord:
        when = self._when(row, line)
        if isinstance(when, BadRecord):
            return when
        sender = self._get(row, "orig", "originalmailfrom", "headerreturnpath")
        return FeedbackRecord(
            mta=MTA, timestamp=when,
            recipient=clip(self._get(row, "rcpt", "originalrcptto", "origrcpt", "orcpt"), 320),
            feedback_type=(self._get(row, "feedbacktype", "fbtype", "format") or "abuse").lower()[:32],
            sender=clip(sender, 320), sender_domain=domain_of(sender),
            source_ip=clip(self._get(row, "sourceip", "dlvsourceip"), 64),
            reported_domain=clip(self._get(row, "reporteddomain"), 255),
            user_agent=clip(self._get(row, "useragent"), 255),
        )


def _mta(value: str | None) -> tuple[str | None, str | None]:
    """dsnMta "mx.example.com (192.0.2.1)" or "dns;mx.example.com" -> (host, ip)."""
    if not value:
        return None, None
    value = value.strip()
    if value.lower().startswith("dns;"):
        value = value[4:].strip()
    host, _, rest = value.partition(" ")
    ip = rest.strip().strip("()[]") or None
    return (host.lower().rstrip(".")[:255] or None), (ip[:64] if ip else None)


def _reply_code(diagnostic: str | None) -> int | None:
    """dsnDiag "smtp;550 5.1.1 user unknown" -> 550."""
    if not diagnostic:
        return None
    text = diagnostic.partition(";")[2] if ";" in diagnostic[:8] else diagnostic
    text = text.lstrip()
    code = text[:3]
    if code.isdigit() and code[0] in "245" and (len(text) == 3 or text[3] in " -"):
        return int(code)
    return None
