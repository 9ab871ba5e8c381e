"""What every bounce reader extracts: one `RecipientReport` per recipient,
before classification. Readers fill what their format states; the package
entry point classifies and turns reports into events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(slots=True)
class RecipientReport:
    recipient: str | None
    action: str | None = None  # failed | delayed | delivered | relayed | expanded
    status: str | None = None  # c.s.d as stated by the message
    reply_code: int | None = None
    diagnostic: str = ""
    diagnostic_type: str | None = None  # DSN Diagnostic-Code type: smtp, x-unix, ...
    remote_mta: str | None = None
    arrival_date: datetime | None = None
    command: str | None = None  # SMTP command the failure answered: MAIL, RCPT, DATA, CONN, HELO
    category: str | None = None  # the sending MTA's own bounce category (PowerMTA's X-PowerMTA-BounceCategory)
    remote_reply: bool = False  # the diagnostic is a DSN's Diagnostic-Code: a remote server's words, code or not
    # the diagnostic was taken from the notice's prose because the DSN record gave
    # none: it may be a disclaimer or a quote, and must not outrank the record's status
    diagnostic_from_notice: bool = False
