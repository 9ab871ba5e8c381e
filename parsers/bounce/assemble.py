"""parse_bounce: find the reports in a message, classify them, build events."""

from __future__ import annotations

import re
from typing import Final

from parsers import tracking
from parsers.autoreply import is_challenge, is_challenge_text
from parsers.bounce import reasons as R
from parsers.bounce import vendors
from parsers.bounce.address import address as parse_address
from parsers.bounce.classify import Classification, Confidence, classify, hard_or_soft
from parsers.bounce.dsn import read_dsn, reports_of_blocks
from parsers.bounce.original import Original, from_parts, from_text
from parsers.bounce.plaintext import Notice, TextRecipient, cut_original, original_start, read_notice, session_of
from parsers.bounce.report import RecipientReport
from parsers.bounce.status import STATUS_RE, find_reply_code, find_status, pick_status
from parsers.events import BounceEvent, DeliverySuccessEvent, Tracking
from parsers.html import strip_tags
from parsers.mime import ENCLOSING_TYPES, FIELD_BLOCK_TYPES, MailPart, field_blocks, parse_message

DSN_TYPES: Final = frozenset({"message/delivery-status", "message/global-delivery-status"})

# Who sends bounces, and how they title them.
BOUNCE_FROM_RE: Final = re.compile(
    r"mailer[-_ ]?daemon|postmaster|post_master|mail delivery|mail administrator|delivery subsystem|"
    r"mail system|smtp gateway|mmdf|\bmta\b",
    re.IGNORECASE,
)
# A mailing list's administrative address, which its manager writes error
# notices from ("Loop Alert", "not a member"); a sign only with a list header.
LIST_ADMIN_FROM_RE: Final = re.compile(r"\bowner-[\w.-]+@|[\w.]-(?:owner|admin|request)@", re.IGNORECASE)
LIST_HEADERS: Final = ("X-MLServer", "X-ML-Name", "List-Id")
BOUNCE_SUBJECT_RE: Final = re.compile(
    r"undeliver|non-?deliver|delivery (?:status|fail|notification|problem|report|has failed|error)|returned mail|"
    r"failure notice|failed delivery|mail delivery failed|could not be delivered|not (?:be )?delivered|"
    r"mail system error|returned to sender|delayed mail|message delayed|delivery delayed|"
    r"\bdelayed\b|\bbounced?\b|mail failure|delivery failure|warning: message|rejected|"
    r"undelivered|message status|error sending|"
    r"\bloop (?:alert|detected)\b|duplicated? message-id|"
    r"unable to deliver|nondeliverable|non-?delivery|"
    # the same titles in other languages (German, French, Italian, Spanish, Portuguese, Dutch, Scandinavian)
    r"unzustellbar|nicht zustellbar|non remis|non distribu|non recapitabile|no entregado|no se pudo entregar|"
    r"n[ãa]o entregue|onbestelbaar|kan ikke leveres|kunde inte levereras",
    re.IGNORECASE,
)
# Phrases of a notice that says a message was not delivered.
NOTICE_RE: Final = re.compile(
    r"could not be delivered|couldn't be delivered|wasn't able to deliver|was not delivered|not been delivered|"
    r"undeliverable|delivery (?:has )?failed|permanent (?:fatal )?error|did not reach|unable to deliver|"
    r"delivery to the following recipients?|failed permanently|following address(?:\(es\)|es)? (?:failed|had)|"
    r"could not deliver|error (?:occurred )?(?:while|during) (?:trying to )?deliver|delivery problems?|"
    r"was rejected|not delivered|failed to deliver|delivery attempts|"
    r"sorry to have to inform you|following addresses had|qmail-send program|message could not be sent|"
    r"did not reach (?:the following|its destination)|returned to (?:you|sender)|could not be forwarded|"
    # the same notices in other languages (German, French, Spanish, Italian, Dutch, Scandinavian)
    r"nicht zugestellt|unzustellbar|pas pu (?:être|etre) (?:remis|distribu)|non remis|no se pudo entregar|"
    r"no pudo ser entregado|non (?:è|e) stato possibile recapitare|non recapitabile|niet (?:worden )?afgeleverd|"
    r"kunne ikke leveres|kunde inte levereras",
)
# An SMTP reply quoted in a notice: "550 5.1.1 ...", "Remote host said: 554 ...".
SMTP_REPLY_LINE_RE: Final = re.compile(r"(?:^|said:|>>>|<<<|\]:)[ \t]*[45]\d\d[ \t-]+(?:[45]\.\d{1,3}\.\d{1,3}\b)?", re.MULTILINE)
EMBEDDED_DSN_RE: Final = re.compile(r"^[ \t]*(?:Reporting-MTA|Final-Recipient|Original-Recipient):", re.MULTILINE | re.IGNORECASE)
# A destination that never answered (not a conversation that broke off).
NO_CONNECTION_RE: Final = re.compile(
    r"timed? ?out|not reachable|unreachable|(?:could not|couldn't|unable to|failed to|wasn't able to|was not able to) "
    r"(?:connect|establish)|requests to connect|could not find a gateway",
    re.IGNORECASE)
REMOTE_HOST_RE: Final = re.compile(
    r"(?=[hw\d])"  # the first letters of the alternatives: a fast skip of other positions
    r"(?:\bhost[:\s]+([a-z0-9][a-z0-9.-]*\.[a-z]{2,})\b|\bhost[:\s]+\[?(\d{1,3}(?:\.\d{1,3}){3})\]?"
    r"|\bwhile talking to ([a-z0-9][a-z0-9.-]*\.[a-z]{2,})|(\d{1,3}(?:\.\d{1,3}){3}) (?:does not like|failed after))",
    re.IGNORECASE)
# Where a further message of an mbox file begins: its "From sender date" line
# (ctime date; some writers omit the blank line before it).
MBOX_SEPARATOR_RE: Final = re.compile(
    rb"\r?\n(?=From \S+ +[A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d\d:\d\d(?::\d\d)? (?:[A-Z]{3,4} )?\d{4}[ \t]*\r?\n)")
WORDS_RE: Final = re.compile(r"[A-Za-z]{3}")
RECEIVED_BY_RE: Final = re.compile(r"\bby\s+([A-Za-z0-9][A-Za-z0-9.-]{0,253}\.[A-Za-z]{2,63})\b")
_BINARY_TYPES: Final = ("image/", "application/", "audio/", "video/")
_BR_RE: Final = re.compile(r"<br\s*/?>|</p>|</div>|</tr>", re.IGNORECASE)


def parse_bounce(msg: MailPart, data: bytes) -> list[BounceEvent | DeliverySuccessEvent] | None:
    """Events for a bounce or DSN, or None when the message is not one.

    A mailbox file (mbox: messages each opening with a "From sender date"
    line) that starts with a bounce yields the events of every bounce in it.
    A message whose lines end in a bare CR (classic Mac OS; Sisimai keeps its
    samples in that form too) is read with LF line ends."""
    if b"\r" in data and b"\n" not in data:
        data = data.replace(b"\r", b"\n")
        msg = parse_message(data)
    if not data.startswith(b"From "):
        return _parse_one(msg, data)
    pieces = MBOX_SEPARATOR_RE.split(data)
    events = _parse_one(msg, pieces[0])
    if events is not None:
        for piece in pieces[1:]:
            events.extend(_parse_one(parse_message(piece), piece) or [])
    return events


def _parse_one(msg: MailPart, data: bytes) -> list[BounceEvent | DeliverySuccessEvent] | None:
    special = vendors.special_reports(msg)
    if special is not None and not special[0]:
        return None  # a provider notification of another kind (e.g. an SES complaint)
    dsn_parts = dsn_parts_of(msg)
    notice_text = notice_text_of(msg)
    if special is None and not dsn_parts and not looks_like_bounce(msg, notice_text):
        return None
    if special is None and not dsn_parts and (is_challenge_text(notice_text) or is_challenge(msg, notice_text)):
        return None  # a challenge-response system's request: an auto-reply (parsers/autoreply.py)
    embedded = [] if dsn_parts or special is not None else _embedded_dsn(notice_text)
    marker = EMBEDDED_DSN_RE.search(notice_text) if embedded else None
    if marker:  # the machine-readable fields are read as a DSN, not as notice prose
        notice_text = notice_text[:marker.start()]
    boundary = original_start(notice_text)
    quoted = notice_text[boundary[1]:] if boundary else ""
    notice_text = notice_text[: boundary[0]] if boundary else notice_text
    if special is not None:
        original = special[1]
    else:
        original = from_parts(msg) or (from_text(quoted) if quoted else None) or Original()
    notice = _read_notice(msg, notice_text, original)
    if special is not None:
        reports = special[0]
    else:
        reports = []
        for part in dsn_parts:
            reports.extend(read_dsn(part))
        reports = _merge(reports or embedded, notice, msg, original)
    if not reports:
        reports = [_report_from_text(None, notice)]
    agent = vendors.SES_AGENT if special is not None else vendors.detect_agent(msg, notice.boilerplate)
    bounce_host = bounce_host_of(msg)
    # every token starts "v1."; most bounces carry none, so skip the full scan
    found_tracking = tracking.find_in_bytes(data) if b"v1." in data or b"V1." in data else None
    events = [_event(report, original, agent, found_tracking, bounce_host) for report in reports]
    undecided = [r for r, e in zip(reports, events, strict=True) if isinstance(e, BounceEvent) and e.reason == R.ONHOLD]
    if undecided and special is None and _explain_from_returned_bounce(undecided, msg):
        events = [_event(report, original, agent, found_tracking, bounce_host) for report in reports]
    return events


def dsn_parts_of(msg: MailPart) -> list[MailPart]:
    """The bounce's own delivery-status parts; those of a returned or
    forwarded message only when it has none (a bounce forwarded as an
    attachment is still that bounce)."""
    own: list[MailPart] = []
    enclosed: list[MailPart] = []
    _collect_dsn(msg, own, enclosed, inside=False)
    return own or enclosed


def _collect_dsn(part: MailPart, own: list[MailPart], enclosed: list[MailPart], inside: bool) -> None:
    if part.content_type in DSN_TYPES:
        (enclosed if inside else own).append(part)
    inside = inside or part.content_type in ENCLOSING_TYPES
    for child in part.children:
        _collect_dsn(child, own, enclosed, inside)


def _read_notice(msg: MailPart, text: str, original: Original) -> Notice:
    """The notice's recipients, ignoring the addresses of the bounce's author
    and of the original's sender (notices greet or quote them) unless
    nothing else is named."""
    excluded = _sender_addresses(msg, original)
    notice = read_notice(text, excluded)
    if notice.recipients or not excluded:
        return notice
    return read_notice(text, frozenset(), only_strong=True)


def notice_text_of(msg: MailPart) -> str:
    """The human-readable text of a bounce: its text parts outside the
    returned original (HTML only when there is no plain text)."""
    plain: list[str] = []
    html: list[str] = []
    _collect_text(msg, plain, html)
    text = "\n".join(plain) if plain else "\n".join(_html_to_text(h) for h in html)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _collect_text(part: MailPart, plain: list[str], html: list[str]) -> None:
    if part.content_type in ENCLOSING_TYPES or part.content_type in FIELD_BLOCK_TYPES:
        return
    if part.children:
        for child in part.children:
            _collect_text(child, plain, html)
        return
    if part.content_type == "text/html":
        html.append(part.text())
    elif part.content_type.startswith("text/") or not part.content_type.startswith(_BINARY_TYPES):
        plain.append(part.text())


def _html_to_text(html: str) -> str:
    text = _BR_RE.sub("\n", html)
    text = strip_tags(text)
    return text.replace("&nbsp;", " ").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def looks_like_bounce(msg: MailPart, text: str) -> bool:
    """Two independent signs of a non-delivery notice: who sent it, its
    subject, an empty Return-Path, a notice phrase, an SMTP reply in the text.
    One is not enough: people write "undeliverable" too, and mailer-daemons
    also send digests and auto-replies."""
    if msg.header("X-Failed-Recipients"):
        return True
    author = msg.header("From") or ""
    signs = (
        bool(BOUNCE_FROM_RE.search(author))
        or bool(LIST_ADMIN_FROM_RE.search(author) and any(msg.header(name) for name in LIST_HEADERS)),
        bool(BOUNCE_SUBJECT_RE.search(msg.header("Subject") or "")),
        (msg.header("Return-Path") or "").strip() == "<>",
    )
    count = sum(signs)
    if count >= 2:
        return True
    head = text[:5000]
    count += bool(NOTICE_RE.search(head.lower()))
    return count >= 2 or (count == 1 and bool(SMTP_REPLY_LINE_RE.search(head)))


def _sender_addresses(msg: MailPart, original: Original) -> frozenset[str]:
    """Addresses of the bounce's author and addressee and of the original's
    sender: never the failed recipient."""
    out = {original.mail_from.lower()} if original.mail_from else set()
    out.update(a.lower() for a in original.senders)
    for name in ("From", "To", "Reply-To", "Sender"):
        address = parse_address(msg.header(name))
        if address:
            out.add(address.lower())
    return frozenset(out)


def remote_host_of(text: str) -> str | None:
    """The remote server a notice names: "host mx.example.com[192.0.2.1] said",
    "host mx.example.com [192.0.2.1]:", "192.0.2.1 does not like recipient"."""
    match = REMOTE_HOST_RE.search(text) if text else None
    if not match:
        return None
    return next(group for group in match.groups() if group)


def _embedded_dsn(text: str) -> list[RecipientReport]:
    """DSN fields written into a text part (a broken MIME structure, or a
    provider quoting its "technical report" inline)."""
    match = EMBEDDED_DSN_RE.search(text)
    if not match:
        return []
    blocks = field_blocks(text[match.start():].encode("utf-8", "replace"))
    return reports_of_blocks(blocks)


def _merge(reports: list[RecipientReport], notice: Notice, msg: MailPart, original: Original) -> list[RecipientReport]:
    """DSN records completed from the notice text; the notice's recipients
    where there is no DSN."""
    by_address = {r.address.lower(): r for r in notice.recipients}
    if reports:
        for report in reports:
            text_recipient = by_address.get((report.recipient or "").lower())
            if text_recipient is None and len(reports) == 1 and len(notice.recipients) == 1:
                text_recipient = notice.recipients[0]
                if report.recipient is None:  # e.g. a DSN naming a mailbox file, not an address
                    report.recipient = text_recipient.address
            _complete(report, text_recipient, notice)
        return reports
    text_recipients = list(notice.recipients)
    if not text_recipients:  # Exim names them in a header; its notice may give only local parts
        text_recipients = [TextRecipient(a) for a in _failed_recipients_header(msg)]
    if not text_recipients and original.to:  # the notice names nobody: the original was addressed to them
        text_recipients = [TextRecipient(original.to)]
    return [_report_from_text(r, notice) for r in text_recipients]


def _explain_from_returned_bounce(undecided: list[RecipientReport], msg: MailPart) -> bool:
    """Reports whose text gives no reason, explained by the returned message
    when that is itself a bounce: a gateway passing on a failure it was told
    about ("Unable to deliver message to <a@b>", with the remote MTA's bounce
    attached) has no reason of its own to give. True when one was explained."""
    returned = next((part.children[0] for part in msg.walk()
                     if part is not msg and part.content_type in ENCLOSING_TYPES and part.children), None)
    if returned is None:
        return False
    text = cut_original(notice_text_of(returned))
    if not text or not looks_like_bounce(returned, text):
        return False
    notice = read_notice(text)
    by_address = {r.address.lower(): r for r in notice.recipients}
    explained = False
    for report in undecided:
        text_recipient = by_address.get((report.recipient or "").lower())
        if text_recipient is None:
            continue
        replaced = _report_from_text(text_recipient, notice)
        if classify(replaced.reply_code, replaced.status, replaced.diagnostic, command=replaced.command).reason != R.ONHOLD:
            report.diagnostic, report.status, report.reply_code = replaced.diagnostic, replaced.status, replaced.reply_code
            report.command, report.remote_mta, report.remote_reply = replaced.command, replaced.remote_mta, False
            explained = True
    return explained


def _failed_recipients_header(msg: MailPart) -> list[str]:
    out = []
    for value in msg.header_all("X-Failed-Recipients"):
        for piece in value.split(","):
            address = parse_address(piece)
            if address:
                out.append(address)
    return out


def _complete(report: RecipientReport, text_recipient: TextRecipient | None, notice: Notice) -> None:
    text = _diagnostic_from_text(text_recipient, notice) if text_recipient else ""
    if text and not WORDS_RE.search(report.diagnostic):  # none, or a bare exit code ("X-Unix; 77")
        report.diagnostic = text
        report.remote_reply = False
        report.diagnostic_from_notice = report.status is not None
    if report.command is None:
        context = " ".join(text_recipient.lines + text_recipient.own) if text_recipient else ""
        report.command = vendors.infer_command(f"{context} {report.diagnostic}", notice.text)
    if report.reply_code is None:
        report.reply_code = find_reply_code(report.diagnostic) or (find_reply_code(text) if text else None)
    if report.remote_mta is None:
        report.remote_mta = remote_host_of(report.diagnostic)


def _report_from_text(recipient: TextRecipient | None, notice: Notice) -> RecipientReport:
    diagnostic = _diagnostic_from_text(recipient, notice)
    context = " ".join(recipient.lines + recipient.own) if recipient else ""
    return RecipientReport(
        recipient=recipient.address if recipient else None,
        action="failed",
        status=find_status(diagnostic),
        reply_code=find_reply_code(diagnostic),
        diagnostic=diagnostic,
        remote_mta=remote_host_of(diagnostic),
        command=vendors.infer_command(f"{context} {diagnostic}", notice.text),
    )


def _diagnostic_from_text(recipient: TextRecipient | None, notice: Notice) -> str:
    """The first text that explains the failure (has a status or reply code,
    or names a reason): the recipient's own lines, its own session of a
    transcript of several, the replies quoted for it alone, the paragraphs the notice
    introduces as the server's answer, the other lines that mention the
    recipient, the whole notice; else the first non-empty one."""
    candidates = [" ".join(recipient.own), session_of(recipient.address, notice.text)] if recipient is not None else []
    if recipient is not None and len(notice.recipients) > 1:
        # a reply quoted for this recipient alone ("550 <a@b>... User unknown" in an old
        # Sendmail transcript), before paragraphs that answer for every recipient at once
        candidates.append(" ".join(line for line in recipient.mentions if find_reply_code(line)))
    candidates.append(notice.stated)
    if recipient is not None:
        candidates.append(" ".join(recipient.mentions))
    whole = " ".join(line.strip() for line in notice.text.split("\n") if line.strip())
    candidates.append(whole)
    for candidate in candidates:
        if candidate and (STATUS_RE.search(candidate) or find_reply_code(candidate)
                          or classify(None, None, candidate).reason != R.ONHOLD):
            return candidate
    for candidate in candidates:
        if candidate:
            return candidate
    return ""


def _classify_report(report: RecipientReport, status: str | None, bounce_host: str | None = None) -> Classification:
    """The classifier's verdict; `bounce_host`, the server that wrote the
    bounce, stands for the answering server where the report names none (a
    provider's own bounce of its own mailbox: its documented replies apply)."""
    return classify(report.reply_code, status, report.diagnostic, command=report.command,
                    remote_reply=report.remote_reply, remote_host=report.remote_mta or bounce_host,
                    text_is_notice=report.diagnostic_from_notice)


def bounce_host_of(msg: MailPart) -> str | None:
    """The server that generated the bounce: the receiving host of its
    first (bottom-most) Received header."""
    received = msg.header_all("Received")
    match = RECEIVED_BY_RE.search(received[-1]) if received else None
    return match.group(1).lower() if match else None


def _bounce_reason(report: RecipientReport, status: str | None, agent: str,
                   bounce_host: str | None) -> tuple[str, Confidence]:
    """The classifier's reason and confidence, adjusted by what the bounce as a whole says."""
    verdict = _classify_report(report, status, bounce_host)
    reason = verdict.reason
    if report.diagnostic_type == "x-unix" and reason in (R.ONHOLD, R.USERUNKNOWN, R.FILTERED, R.SUSPEND):
        return R.MAILERERROR, "high"  # the local delivery program failed: its words say nothing of the address
    if reason == R.NETWORKERROR and NO_CONNECTION_RE.search(report.diagnostic):
        # the host never answered during the whole retry period: the message expired in the queue
        return R.EXPIRED, verdict.confidence
    category_reason = vendors.CATEGORY_REASON.get(report.category) if report.category else None
    if category_reason and (reason == R.ONHOLD or (reason == R.FILTERED and category_reason == R.USERUNKNOWN)):
        # the sending MTA classified the reply itself; "bad-mailbox" settles whether
        # a "no such user" was about the address (see classify's refinement)
        return category_reason, "medium"
    if reason == R.ONHOLD and report.action == "delayed":
        return R.EXPIRED, "medium"
    if reason == R.ONHOLD and agent in vendors.FORMAT_REASON:
        return vendors.FORMAT_REASON[agent], "medium"
    return reason, verdict.confidence


def _event(report: RecipientReport, original: Original, agent: str, found_tracking: Tracking | None,
           bounce_host: str | None = None) -> BounceEvent | DeliverySuccessEvent:
    status = pick_status(report.status, report.diagnostic)
    if report.action in ("delivered", "relayed", "expanded") or (status and status.startswith("2") and report.action != "failed"):
        return DeliverySuccessEvent(
            recipient=report.recipient, status=status, remote_mta=report.remote_mta,
            original_message_id=original.message_id, tracking=found_tracking,
        )
    reason, confidence = _bounce_reason(report, status, agent, bounce_host)
    return BounceEvent(
        recipient=report.recipient,
        reason=reason,
        hard_or_soft=hard_or_soft(reason, report.reply_code, status),
        status=status,
        reply_code=report.reply_code,
        diagnostic=report.diagnostic or None,
        remote_mta=report.remote_mta,
        original_message_id=original.message_id,
        action=report.action,
        arrival_date=report.arrival_date,
        smtp_agent=agent,
        original_mail_from=original.mail_from,
        tracking=found_tracking,
        confidence=confidence,
    )
