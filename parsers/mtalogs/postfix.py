"""Postfix delivery logs: syslog lines (a `maillog_file`, /var/log/mail.log,
`journalctl -o short-iso`) and journald JSON records (`journalctl -o json`).

Postfix logs one line per recipient and delivery attempt from its delivery
agents (smtp, lmtp, local, virtual, pipe, error, retry):

    Dec  2 16:24:37 mx1 postfix/smtp[1234]: 3F1A2B3C4D: to=<u@example.com>,
      relay=mx.example.com[192.0.2.1]:25, delay=1.2, delays=0.1/0/0.5/0.6,
      dsn=5.1.1, status=bounced (host mx.example.com[192.0.2.1] said: 550 5.1.1
      <u@example.com>: User unknown (in reply to RCPT TO command))

(one line in the log). The envelope sender is on an earlier qmgr line of the
same queue id (`3F1A2B3C4D: from=<bounces@example.org>, size=..., nrcpt=1`), so
the reader remembers the senders of the queue ids it saw (at most
`MAX_QUEUE_IDS`, oldest forgotten first) until qmgr logs `removed`. Postfix
does not log the local address it sent from: the caller supplies it per
syslog name (`postfix-ip2/smtp` for a master.cf service with its own
`syslog_name` and `smtp_bind_address`), or one default.

Parsing is `str.partition` and `str.find` only (no regular expression), so each
line costs time linear in its length. Lines of other programs, and Postfix
lines that are not delivery outcomes, give None; a delivery line that cannot be
read gives a `BadRecord` with the reason.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import UTC, datetime, tzinfo

from parsers.mtalogs.events import BadRecord, DeliveryRecord, MtaRecord, Status, clip, domain_of
from parsers.mtalogs.times import from_bsd, from_epoch, from_iso

MTA = "postfix"
MAX_QUEUE_IDS = 200_000  # senders remembered per reader (about 30 MB at most)
_STATUS: dict[str, Status] = {"sent": "sent", "deferred": "deferred", "bounced": "bounced", "expired": "bounced"}
# status=deliverable / undeliverable are address verification probes, not mail
_PROBES = frozenset({"deliverable", "undeliverable"})
_COMMANDS = {"RCPT TO": "RCPT", "MAIL FROM": "MAIL", "end of DATA": "DATA", "DATA": "DATA", "HELO": "HELO",
             "EHLO": "HELO", "STARTTLS": "HELO", "XFORWARD": "HELO", "LHLO": "HELO", "RSET": "DATA", "BDAT": "DATA"}
def _is_queue_id(text: str) -> bool:
    return 5 <= len(text) <= 20 and text.isascii() and text.isalnum()


Stamp = tuple[str, ...]  # the time as written: (iso,) or (month, day, clock)


class PostfixReader:
    """Reads Postfix log lines one at a time, remembering queue ids' senders.

    now: the time year-less syslog stamps are placed against (they are never
    more than a day in the future); None: the clock at each new stamp (a
    reader that lives for months); tz: the zone those stamps are in. Times
    are worked out only for delivery lines, and the last one is remembered
    (a busy log has many lines per second).
    """

    def __init__(self, *, now: datetime | None = None, tz: tzinfo = UTC) -> None:
        self.now = now
        self.tz = tz
        self.senders: OrderedDict[str, str] = OrderedDict()
        self._last_stamp: Stamp = ()
        self._last_when: datetime | None = None

    # -- entry points ------------------------------------------------------------------

    def feed(self, line: str) -> MtaRecord | None:
        """One syslog line (trailing newline allowed)."""
        if "status=" not in line and "from=<" not in line and ": removed" not in line:
            return None  # the common case: nothing about deliveries at all
        line = line.rstrip("\r\n")
        header = _split_syslog(line)
        if header is None:
            if "status=" in line and "postfix" in line:
                return BadRecord(MTA, "unreadable syslog header (time, host, program)", clip(line) or "")
            return None
        stamp, program, message = header
        return self.message(stamp, program, message, line)

    def feed_journal(self, line: str) -> MtaRecord | None:
        """One `journalctl -o json` record."""
        if "status=" not in line and "from=<" not in line and "removed" not in line:
            return None
        try:
            record = json.loads(line)
        except ValueError:
            return BadRecord(MTA, "not a JSON journal record", clip(line) or "")
        if not isinstance(record, dict):
            return BadRecord(MTA, "journal record is not a JSON object", clip(line) or "")
        message = record.get("MESSAGE")
        program = record.get("SYSLOG_IDENTIFIER")
        if not isinstance(message, str) or not isinstance(program, str):
            return None  # binary MESSAGE (a byte array) or no identifier: not a Postfix text line
        when = from_epoch(record.get("__REALTIME_TIMESTAMP") or "")
        if when is None:
            return BadRecord(MTA, "journal record without a usable __REALTIME_TIMESTAMP", clip(line) or "")
        return self.message(when, program, message, line)

    def message(self, when: datetime | Stamp, program: str, message: str, line: str) -> MtaRecord | None:
        """A log message of `program` (e.g. postfix/smtp) logged at `when`."""
        queue_id, sep, body = message.partition(": ")
        if not sep or not _is_queue_id(queue_id):
            return None
        agent = program.rpartition("/")[2]
        if agent == "qmgr" or agent == "cleanup":
            self._note_sender(queue_id, body)
            return None
        if not body.startswith("to=<"):
            return None
        at = when if isinstance(when, datetime) else self._time(when)
        if at is None:
            return BadRecord(MTA, "unreadable syslog time", clip(line) or "")
        return _delivery(at, program, queue_id, body, self.senders.get(queue_id), line)

    # -- state -------------------------------------------------------------------------

    def _time(self, stamp: Stamp) -> datetime | None:
        if stamp != self._last_stamp:
            if len(stamp) == 1:
                self._last_when = from_iso(stamp[0], self.tz)
            else:
                self._last_when = from_bsd(stamp[0], stamp[1], stamp[2], self.now or datetime.now(UTC), self.tz)
            self._last_stamp = stamp
        return self._last_when

    def _note_sender(self, queue_id: str, body: str) -> None:
        if body.startswith("from=<"):
            end = body.find(">", 6)
            if end < 0:
                return
            self.senders[queue_id] = body[6:end][:320]
            self.senders.move_to_end(queue_id)
            while len(self.senders) > MAX_QUEUE_IDS:
                self.senders.popitem(last=False)
        elif body == "removed":
            self.senders.pop(queue_id, None)


def _split_syslog(line: str) -> tuple[Stamp, str, str] | None:
    """(stamp, program, message) of "STAMP HOST PROGRAM[PID]: MESSAGE"."""
    if line[:1].isdigit():  # ISO 8601: 2026-12-02T16:24:37.123456+00:00
        iso, _, rest = line.partition(" ")
        stamp: Stamp = (iso,)
    else:  # BSD: "Dec  2 16:24:37 " (the day padded with a space)
        month, _, rest = line.partition(" ")
        day, _, rest = rest.lstrip(" ").partition(" ")
        clock, _, rest = rest.partition(" ")
        if len(month) != 3 or not day or not clock:
            return None
        stamp = (month, day, clock)
    _host, _, rest = rest.partition(" ")
    tag, sep, message = rest.partition(": ")
    if not sep:
        return None
    return stamp, tag.partition("[")[0], message


def _delivery(when: datetime, program: str, queue_id: str, body: str, sender: str | None,
              line: str) -> MtaRecord | None:
    fields_text, sep, after = body.partition(", status=")
    if not sep:
        return BadRecord(MTA, "delivery line without status=", clip(line) or "")
    word, _, diagnostic = after.partition(" ")
    word = word.rstrip(",")
    if word in _PROBES:
        return None
    status = _STATUS.get(word)
    if status is None:
        return BadRecord(MTA, f"unknown status {word[:40]!r}", clip(line) or "")
    fields = _fields(fields_text)
    recipient = fields.get("to", "").strip("<>") or None
    relay = fields.get("relay", "")
    host, ip = _host_and_ip(relay)
    diagnostic = _unwrap(diagnostic)
    if host is None and diagnostic:
        host, ip = _connect_target(diagnostic)
    return DeliveryRecord(
        mta=MTA, timestamp=when, status=status, recipient=clip(recipient, 320), queue_id=queue_id,
        sender=clip(sender, 320), sender_domain=domain_of(sender), destination_host=host, destination_ip=ip,
        dsn=clip(fields.get("dsn"), 16), reply_code=_reply_code(diagnostic), diagnostic=clip(diagnostic),
        command=_command(diagnostic), agent=clip(program, 64),
    )


def _fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(", "):
        key, sep, value = part.partition("=")
        if sep and key not in out:
            out[key] = value
    return out


def _host_and_ip(relay: str) -> tuple[str | None, str | None]:
    """relay=mx.example.com[192.0.2.1]:25 -> (host, ip); none / local -> (None, None) / ("local", None)."""
    if not relay or relay == "none":
        return None, None
    host, sep, rest = relay.partition("[")
    ip = rest.partition("]")[0] if sep else None
    host = host.lower().rstrip(".")
    return (host[:255] or None), (ip[:64] if ip else None)


def _connect_target(diagnostic: str) -> tuple[str | None, str | None]:
    """"connect to mx.example.com[192.0.2.1]:25: Connection refused" -> the host tried."""
    start = diagnostic.find("connect to ")
    if start < 0:
        return None, None
    target = diagnostic[start + 11:].partition(" ")[0].rstrip(":")
    return _host_and_ip(target)


def _unwrap(diagnostic: str) -> str:
    """The text inside "(...)" after the status word."""
    diagnostic = diagnostic.strip()
    if diagnostic.startswith("(") and diagnostic.endswith(")"):
        return diagnostic[1:-1]
    return diagnostic


def _reply_code(diagnostic: str) -> int | None:
    """The remote reply's code: after "said: ", or at the start (sent: "250 2.0.0 OK")."""
    start = diagnostic.find(" said: ")
    text = diagnostic[start + 7:] if start >= 0 else diagnostic
    code = text[:3]
    if len(code) == 3 and code.isdigit() and code[0] in "245" and (len(text) == 3 or text[3] in " -"):
        return int(code)
    return None


def _command(diagnostic: str) -> str | None:
    """The command of "(in reply to RCPT TO command)"; CONN for a refused greeting."""
    start = diagnostic.rfind("(in reply to ")
    if start >= 0:
        end = diagnostic.find(" command)", start)
        if end > start:
            return _COMMANDS.get(diagnostic[start + 13:end], diagnostic[start + 13:end][:16])
    if " refused to talk to me: " in diagnostic:
        return "CONN"
    return None
