"""One email in, its events out: the order in which the mail parsers look.

1. Reports attached to or carried by the mail (DMARC aggregate, SMTP TLS,
   DMARC failure reports: parsers.reports) and complaints (ARF and the
   providers' own formats: parsers.arf). Both run: an ARF of type
   auth-failure is a DMARC failure report *and* a piece of feedback; the
   feedback events come first.
2. Bounces and delivery notifications (parsers.bounce).
3. Automatic replies (parsers.autoreply). They come after bounces because
   DSNs carry the same "automatic message" headers (Postfix and Exim write
   `Auto-Submitted: auto-replied` on their bounces); the auto-reply detector
   also refuses anything that looks like a delivery report, so a bounce the
   bounce parser could not read is never counted as an auto-reply. An
   auto-reply saying the mailbox is gone comes back as a soft `suspend`
   bounce.
4. Anything else is an ordinary mail (`not_bounce`).

A parser that returns an empty list has found nothing; the next one looks.
"""

from __future__ import annotations

from parsers.arf import parse_arf
from parsers.autoreply import parse_autoreply
from parsers.bounce import parse_bounce
from parsers.events import AnyEvent, NotBounceEvent, UnparseableEvent
from parsers.mime import MimeError, parse_message
from parsers.reports import parse_report_mail


def parse_mail(data: bytes) -> list[AnyEvent]:
    try:
        msg = parse_message(data)
    except MimeError as exc:
        return [UnparseableEvent(error=f"not a mail message: {exc}")]

    reports = parse_report_mail(msg) or []
    complaints = parse_arf(msg, data) or []
    if reports:
        # A DMARC failure report in ARF clothes that the ARF reader could not
        # make sense of is still understood: no quarantine for it.
        complaints = [e for e in complaints if not isinstance(e, UnparseableEvent)]
    if reports or complaints:
        return [*complaints, *reports]
    bounces = parse_bounce(msg, data)
    if bounces:
        return list(bounces)
    replies = parse_autoreply(msg, data)
    if replies:
        return list(replies)
    return [NotBounceEvent(subject=msg.header("subject"), message_id=_message_id(msg.header("message-id")))]


def _message_id(value: str | None) -> str | None:
    return value.strip() or None if value else None
