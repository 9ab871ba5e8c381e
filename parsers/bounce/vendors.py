"""Format-specific knowledge: notifications that are not mail-shaped
(Amazon SES JSON), the SMTP command a failure answered, and which MTA or
provider family produced a bounce (reported as `smtp_agent`)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Final

from parsers.bounce.address import address as parse_address
from parsers.bounce.dsn import strip_type
from parsers.bounce.original import Original
from parsers.bounce.report import RecipientReport
from parsers.bounce.status import find_reply_code, parse_status
from parsers.mime import MailPart

# --- SMTP command of a failure ---------------------------------------------
# Evidence, strongest first: the MTA saying which command it was ("in reply
# to RCPT TO command", "after end of data"), the transcript of the session
# (">>> DATA" / "<<< 550 ..."), then wording that only hints at a stage
# ("does not like recipient", a reply echoing the recipient's address).

# (each pattern here opens with a lookahead on the first letters of its
# alternatives: the regex engine then skips most positions at once)
_STATED_COMMAND_RE: Final = re.compile(
    r"(?=[aidfes\[rcgb])(?:"
    r"(?:after|in reply to|did not like our|for|failed on|error (?:in|at|on)(?: the)?) "
    r"(?:final |end of )?(?P<cmd>rcpt to|rcpt|mail from|mail|data|end of data|text|initial connection|ehlo|helo)\b"
    r"|(?P<mail>sender was rejected|\[mail_from\])"
    r"|(?P<data>failed after i sent the message|\[data\])"
    r"|(?P<rcpt>\[rcpt_to\]|smtp:rcpt)"
    r"|(?P<conn>refused to talk to me|connection (?:was )?(?:refused|rejected)|(?:greeting|banner)(?! message)))",
)
_HINTED_RCPT_RE: Final = re.compile(
    # qmail's and Oracle Messaging Server's words for a refused RCPT TO
    r"does not like recipient|(?:server|host) (?:has )?rejected (?:the )?(?:recipient )?address"
    # RFC 5321's own text of a 550 to RCPT TO; Exchange Online's directory lookup of the recipient
    r"|requested action not taken: mailbox unavailable|recipient address rejected: access denied"
)
# Not hints: a reply echoing the recipient's address, or Postfix's "Recipient
# address rejected", is also what servers answer after DATA (filters name the
# recipient they refuse, and Postfix applies recipient restrictions there too).
_CANONICAL: Final[dict[str, str]] = {
    "rcpt to": "RCPT", "rcpt": "RCPT", "mail from": "MAIL", "mail": "MAIL", "data": "DATA", "end of data": "DATA",
    "text": "DATA", "initial connection": "CONN", "ehlo": "HELO", "helo": "HELO",
}
# [ \t], not \s: "^\s*" under MULTILINE runs across blank lines from every
# line start, quadratic on a text of many newlines
_TRANSCRIPT_RE: Final = re.compile(
    r"^[ \t]*(?:>>>|sent <<<)[ \t]*([a-z]+(?: (?:to|from))?)|^[ \t]*(?:<<<|received >>>)[ \t]*[45]\d\d\b", re.MULTILINE)


def command_of_transcript(text: str) -> str | None:
    """In an SMTP transcript (">>> RCPT TO:<a@b>" / "<<< 550 ..."), the last
    command sent before the first failure reply."""
    if ">>>" not in text:
        return None
    last = None
    for match in _TRANSCRIPT_RE.finditer(text.lower()):
        if match.group(1) is None:
            return _CANONICAL.get(last) if last else None
        last = match.group(1)
    return None


def stated_command(text: str) -> str | None:
    """The SMTP command a failure answered where the text names it."""
    match = _STATED_COMMAND_RE.search(text.lower()) if text else None
    if not match:
        return None
    if match.group("cmd"):
        return _CANONICAL[match.group("cmd")]
    for group, command in (("mail", "MAIL"), ("data", "DATA"), ("rcpt", "RCPT"), ("conn", "CONN")):
        if match.group(group):
            return command
    return None


def infer_command(context: str, transcript: str) -> str | None:
    """The SMTP command of a failure as RCPT, MAIL, DATA, HELO or CONN:
    `context` is the text about the recipient, `transcript` the whole notice."""
    return (stated_command(context) or command_of_transcript(context) or command_of_transcript(transcript)
            or ("RCPT" if _HINTED_RCPT_RE.search(context.lower()) else None))


# --- Amazon SES / SNS JSON notifications -------------------------------------

SES_AGENT: Final = "AmazonSES"
_SNS_WRAP_RE: Final = re.compile(r"!\r?\n ")


def _load_json(text: str) -> Any:
    start = text.find("{")
    if start < 0:
        return None
    body = text[start:]
    end = body.rfind("}")
    body = body[: end + 1]
    for candidate in (body, _SNS_WRAP_RE.sub("", body)):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def ses_notification(msg: MailPart) -> dict[str, Any] | None:
    """The SES event of an SNS e-mail notification, or None."""
    if msg.children or not msg.content_type.startswith("text/"):
        return None
    text = msg.text()
    head = text[:400]
    if "notificationType" not in head and '"Type"' not in head and "eventType" not in head:
        return None
    data = _load_json(text)
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("Message"), str):  # the SNS envelope around the SES event
        inner = _load_json(data["Message"])
        if isinstance(inner, dict):
            data = inner
    return data if (data.get("notificationType") or data.get("eventType")) else None


def ses_reports(event: dict[str, Any]) -> list[RecipientReport]:
    """Reports of an SES Bounce or Delivery event; [] for any other type
    (complaints are feedback, not bounces)."""
    kind = event.get("notificationType") or event.get("eventType")
    mail = event.get("mail") or {}
    if kind == "Bounce":
        bounce = event.get("bounce") or {}
        arrival = _iso_date(mail.get("timestamp"))
        reports = []
        for item in bounce.get("bouncedRecipients") or []:
            diagnostic = strip_type(item.get("diagnosticCode") or "")[1]
            reports.append(RecipientReport(
                recipient=parse_address(item.get("emailAddress")),
                action=item.get("action") or "failed",
                status=parse_status(item.get("status")),
                reply_code=find_reply_code(diagnostic),
                diagnostic=diagnostic,
                remote_mta=strip_type(bounce.get("reportingMTA") or "")[1] or None,
                arrival_date=arrival,
            ))
        return reports
    if kind == "Delivery":
        delivery = event.get("delivery") or {}
        response = delivery.get("smtpResponse") or ""
        return [RecipientReport(
            recipient=parse_address(address), action="delivered", status=parse_status(response) or "2.0.0",
            reply_code=find_reply_code(response), diagnostic=response,
            remote_mta=delivery.get("remoteMtaIp") or delivery.get("reportingMTA"),
        ) for address in delivery.get("recipients") or []]
    return []


def _iso_date(value: Any) -> datetime | None:
    """SES timestamps: ISO 8601 with a Z."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def ses_original(event: dict[str, Any]) -> Original:
    """The sent message an SES event is about: its Message-ID and sender."""
    mail = event.get("mail") or {}
    common = mail.get("commonHeaders") or {}
    message_id = common.get("messageId")
    if not isinstance(message_id, str):
        message_id = next((h.get("value") for h in mail.get("headers") or []
                           if isinstance(h, dict) and str(h.get("name", "")).lower() == "message-id"), None)
    source = mail.get("source")
    return Original(message_id=message_id if isinstance(message_id, str) else None,
                    mail_from=parse_address(source) if isinstance(source, str) else None)


def special_reports(msg: MailPart) -> tuple[list[RecipientReport], Original] | None:
    """Reports (and the original) of a non-mail-shaped notification; no
    reports for one that is not a bounce (an SES complaint); None when the
    message is not such a notification."""
    event = ses_notification(msg)
    if event is None:
        return None
    return ses_reports(event), ses_original(event)


# --- which MTA / provider wrote the bounce ----------------------------------

# (agent, markers) in order: provider-specific markers before generic MTA
# ones. Markers are lower-case substrings of the bounce's From, Subject,
# Message-ID, X-Mailer and generating Received header and of its notice's
# boilerplate (substring tests, not regular expressions: this runs for every
# bounce).
_AGENT_MARKERS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("AmazonSES", ("amazonses.com", "x-ses-outgoing", "notificationtype")),
    ("GoogleGroups", ("google groups", "googlegroups.com", "groups.google.com")),
    ("Gmail", ("mailer-daemon@googlemail.com", "delivery to the following recipient failed", "mailer-daemon@google.com")),
    ("Office365", ("protection.outlook.com", "office 365", "office365", "exchangelabs.com")),
    ("Outlook", ("hotmail.com", "@outlook.", "msn.com", "live.com")),
    ("Yahoo", ("yahoo", "sorry, we were unable to deliver your message")),
    ("Aol", ("aol.com", "aol.net")),
    ("MailRu", ("mail.ru",)),
    ("Yandex", ("yandex",)),
    ("GMX", ("gmx.net", "gmx.de", "gmx.com")),
    ("Zoho", ("zoho",)),
    ("SendGrid", ("sendgrid",)),
    ("Mimecast", ("mimecast",)),
    ("MessageLabs", ("messagelabs", "symantec")),
    ("MXLogic", ("mxlogic",)),
    ("McAfee", ("mcafee",)),
    ("InterScanMSS", ("interscan", "trend micro")),
    ("PowerMTA", ("powermta", "pmta")),
    ("Exchange2007", ("diagnostic information for administrators", "delivery has failed to these recipients")),
    ("Exchange2003", ("did not reach the following recipient", "msexch", "x-ms-embedded-report")),
    ("Notes", ("lotus notes", "notes mail")),
    ("Domino", ("lotus", "domino")),
    ("Courier", ("courier mail server", "courier-mta")),
    ("OpenSMTPD", ("opensmtpd", "your message could not be delivered to one or more recipients:")),
    ("DragonFly", ("dragonfly mail agent",)),
    ("MessagingServer", ("messaging server", "sun java system", "iplanet", "this report relates to a message you sent")),
    ("FML", ("fml [fml",)),  # the fml mailing-list manager's X-MLServer header
    ("qmail", ("qmail",)),
    ("Exim", ("exim ", "(exim", "this message was created automatically by mail delivery software")),
    ("Postfix", ("postfix", "this is the mail system at host")),
    ("Sendmail", ("sendmail", "----- transcript of session follows -----", "the original message was received at")),
)


# PowerMTA's bounce categories (its documented X-PowerMTA-BounceCategory
# values, decided by its own reply patterns): the reason where our reading of
# the reply finds none, and "bad-mailbox" settles whether a "no such user" of
# unknown SMTP stage was about the address.
CATEGORY_REASON: Final[dict[str, str]] = {
    "bad-mailbox": "userunknown", "bad-domain": "hostunknown", "inactive-mailbox": "suspend",
    "quota-issues": "mailboxfull", "spam-related": "spamdetected", "virus-related": "virusdetected",
    "content-related": "contenterror", "policy-related": "policyviolation", "message-expired": "expired",
    "no-answer-from-host": "networkerror", "bad-connection": "networkerror", "routing-errors": "networkerror",
    "invalid-sender": "rejected", "relaying-issues": "norelaying", "protocol-errors": "syntaxerror",
    "bad-configuration": "systemerror",
}


# Formats whose notice means one thing whatever its (often translated) wording.
FORMAT_REASON: Final[dict[str, str]] = {
    "GoogleGroups": "rejected",  # the group refused the post: no such group, or no permission to post
}


def detect_agent(msg: MailPart, boilerplate: str) -> str:
    """The format family that produced the bounce, else RFC3464 for a
    standard DSN, else "unknown". Looks at the bounce's own headers and at
    the notice's boilerplate, not at the remote servers' replies (a Postfix
    bounce quoting Yahoo is Postfix's)."""
    headers = " ".join(value for _, value in msg.fields(_AGENT_HEADERS))
    received = msg.header_all("Received")
    # the last Received is the generating MTA's; those above it are the receiving side's
    signature = f"{headers}\n{received[-1] if received else ''}\n{boilerplate[:3000]}".lower()
    for name, markers in _AGENT_MARKERS:
        for marker in markers:
            if marker in signature:
                return name
    if msg.find("message/delivery-status", "message/global-delivery-status"):
        return "RFC3464"
    return "unknown"


_AGENT_HEADERS: Final = frozenset({"from", "subject", "x-mailer", "message-id", "x-ses-outgoing", "x-mlserver"})
