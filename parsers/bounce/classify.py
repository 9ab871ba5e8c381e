"""Why a delivery failed: reason, hard/soft and confidence from an SMTP
reply code, an enhanced status code, the SMTP stage and the remote
server's text.

Used by the bounce parser for every failed recipient and by the sender for
live SMTP replies, so it must be cheap: the knowledge is read once from the
data files in tables/ (knowledge.py), the text is lower-cased once, and
each phrase rule is tried only when one of its anchor words occurs.

Evidence steps (their order is data: tables/order.toml `evidence`; the
first step that names a reason wins, else "onhold"):
- decisive_status: an enhanced status code whose detail names one narrow
  condition (x.3.1 system full, x.4.5 congestion, x.7.25 no PTR, x.1.10
  null MX, x.7.2x SPF/DKIM): servers that send these mean them, whatever
  words of other reasons their text also uses ("rate", "blocked");
- provider: a provider's documented reply (tables/providers/);
- strong: specific phrases of the text (tier "strong" rules): servers write
  "mailbox full" under 5.7.1 or "user unknown" under 5.0.0, and the text is
  what the remote administrator meant;
- status: the enhanced status code, when its detail names a reason
  (status.py);
- medium: generic conditions of the text (queue expiry, network trouble,
  size, system faults): a status code is more precise than these;
- reference: the plain phrases of the reference tables (tables/reasons/
  `[reference]`), the many ordinary ways MTAs say "no such mailbox";
- command: the SMTP command the reply answered: a refusal of the connection
  or of HELO is aimed at the client host, one of MAIL FROM at the sender; a
  security status (x.7.x) after DATA refuses the content on policy, one
  saying "not authorized" elsewhere is a security refusal;
- reply: the basic reply code where it has one meaning (551, 552, 50x);
- weak: weak hints of the text (tier "weak" rules).
The order was chosen by leave-one-family-out cross-validation on the
shared corpus (bench/eval_bounces.py --cv; README "Accuracy").

Text that is not the failure's own diagnostic (a bounce notice's prose
found where a DSN record gave none: disclaimers, quoted originals) never
outranks the DSN's status: then the status steps come first.

A diagnostic that wraps a server's quoted reply in a relay's own category
label ("5.1.0 - Unknown address error 550-'5.7.1 ... Access denied'") is
judged by the quoted reply first.
Afterwards one refinement (to a provider's documented reply too: Yahoo's
"554 ... doesn't have a yahoo.com account" after DATA is the filter's verdict
its tests expect): a remote server's "user unknown" that did not
answer RCPT TO, without a status calling the address bad (x.1.x), is a
filter's verdict on the message (the server accepted the recipient, or the
bounce cannot say it did not), not proof that the mailbox is missing. A
remote reply is one with a reply code or a DSN's Diagnostic-Code; the
reporting MTA's own words about its own mailboxes, and its local delivery
agent's, are the mailbox lookup itself.

Confidence: "high" when a provider's documented reply, a decisive status,
or a specific phrase that the status code does not contradict decided;
"medium" for a status code alone, a generic or reference phrase; "low" for
the SMTP stage, the bare reply code, weak hints and "onhold".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final, Literal

from parsers.bounce import reasons as R
from parsers.bounce.knowledge import Knowledge, PhraseRule, load
from parsers.bounce.status import find_status, reason_of_status
from parsers.events import HardOrSoft

__all__ = ["Classification", "PhraseRule", "classify", "explain", "hard_or_soft", "reason_from_text"]

Confidence = Literal["high", "medium", "low"]


@dataclass(frozen=True, slots=True)
class Classification:
    reason: str
    hard_or_soft: HardOrSoft
    confidence: Confidence = field(default="low", compare=False)


# Basic reply codes that mean one thing whatever the text.
_REPLY_REASON: Final[dict[int, str]] = {
    500: R.SYNTAXERROR, 501: R.SYNTAXERROR, 502: R.SYNTAXERROR, 503: R.SYNTAXERROR, 504: R.SYNTAXERROR,
    551: R.HASMOVED,  # user not local; please try <forward-path>
    552: R.MAILBOXFULL,  # requested mail action aborted: exceeded storage allocation
}
_NOT_AUTHORIZED_RE: Final = re.compile(r"access denied|not authori[sz]ed|unauthori[sz]ed")
# "5.1.0 - Unknown address error 550-'5.7.1 <a@b>... Access denied'" (Amazon SES)
_QUOTED_REPLY_RE: Final = re.compile(r"\b[45]\d\d[- ]'([^']{3,})'")
# The destination's local delivery agent: its "unknown user" is the mailbox lookup itself.
_LOCAL_DELIVERY_RE: Final = re.compile(r"\bmail\.local\b|\blocal delivery (?:agent|program)\b")
# Where a failure was answered tells who was refused when the text does not.
_COMMAND_REASON: Final[dict[str, str]] = {"CONN": R.BLOCKED, "HELO": R.BLOCKED, "MAIL": R.REJECTED}
# Steps whose evidence is the DSN's own status code, tried first when the
# text is not the failure's own diagnostic.
_STATUS_STEPS: Final = ("decisive_status", "status")
# x.4.7 "delivery time expired": RFC 3463 asks for the actual problem's code
# where known, so a notice naming that problem outranks this one.
_EXPIRED_DETAIL: Final = "4.7"


@dataclass(frozen=True, slots=True)
class _Evidence:
    lowered: str
    reply_code: int | None
    status: str | None
    command: str | None
    remote_host: str | None


def _by_decisive_status(knowledge: Knowledge, ev: _Evidence) -> str | None:
    if ev.status and ev.status[2:] in knowledge.decisive_status:
        return reason_of_status(ev.status)
    return None


def _by_provider(knowledge: Knowledge, ev: _Evidence) -> str | None:
    """A provider's documented reply, when the reply is that provider's: the
    answering host, or a host the reply names, is one of its servers (its
    phrases are its own wording; elsewhere the same words may mean another
    thing, and some rows are short codes such as Facebook's "pol-p1")."""
    for provider in _providers_of(knowledge, ev):
        for reply in knowledge.providers:
            if reply.provider == provider and reply.matches(ev.lowered, ev.reply_code, ev.status):
                return reply.reason
    return None


def _providers_of(knowledge: Knowledge, ev: _Evidence) -> list[str]:
    """The providers whose replies these may be: the answering host's first,
    then those the reply names (a host name, the recipient's domain, a
    marker such as Gmail's "gsmtp")."""
    host = (ev.remote_host or "").lower().rstrip(".")
    answering: list[str] = []
    named: list[str] = []
    for provider, suffixes in knowledge.provider_hosts.items():
        if host and any(host == suffix or host.endswith("." + suffix) for suffix in suffixes):
            answering.append(provider)
        elif any(suffix in ev.lowered for suffix in suffixes) or any(
                marker in ev.lowered for marker in knowledge.provider_markers[provider]):
            named.append(provider)
    return answering + named


def _by_tier(tier: str) -> Callable[[Knowledge, _Evidence], str | None]:
    def step(knowledge: Knowledge, ev: _Evidence) -> str | None:
        return reason_from_text(ev.lowered, knowledge.rules[tier], ev.command, ev.status)
    return step


def _by_status(knowledge: Knowledge, ev: _Evidence) -> str | None:
    return reason_of_status(ev.status)


def _by_reference(knowledge: Knowledge, ev: _Evidence) -> str | None:
    for group in knowledge.reference:
        if group.matches(ev.lowered):
            return group.reason
    return None


def _by_command(knowledge: Knowledge, ev: _Evidence) -> str | None:
    if ev.command in _COMMAND_REASON:
        return _COMMAND_REASON[ev.command]
    if ev.status and ev.status[2:4] == "7.":
        if ev.command == "DATA":
            return R.POLICYVIOLATION  # the content was refused on security/policy grounds
        if _NOT_AUTHORIZED_RE.search(ev.lowered):
            return R.SECURITYERROR  # "5.7.1 delivery not authorized" with nothing more specific
    return None


def _by_reply(knowledge: Knowledge, ev: _Evidence) -> str | None:
    if ev.reply_code is None:
        return None
    if ev.status and ev.status[2:] not in ("0.0", "1.6", "2.0"):
        return None  # a status code more precise than x.0.0 disagrees with the reply's own meaning
    return _REPLY_REASON.get(ev.reply_code)


STEPS: Final[dict[str, Callable[[Knowledge, _Evidence], str | None]]] = {
    "decisive_status": _by_decisive_status,
    "provider": _by_provider,
    "strong": _by_tier("strong"),
    "status": _by_status,
    "medium": _by_tier("medium"),
    "reference": _by_reference,
    "command": _by_command,
    "reply": _by_reply,
    "weak": _by_tier("weak"),
}
STEP_CONFIDENCE: Final[dict[str, Confidence]] = {
    "decisive_status": "high", "provider": "high", "strong": "high", "status": "medium", "medium": "medium",
    "reference": "medium", "command": "low", "reply": "low", "weak": "low", "onhold": "low",
}
_order_override: tuple[str, ...] | None = None


def use_evidence_order(order: tuple[str, ...] | None) -> None:
    """Replace the order of evidence of tables/order.toml (None restores it):
    for the cross-validation in bench/eval_bounces.py, which compares orders."""
    global _order_override
    unknown = set(order or ()) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown evidence steps: {sorted(unknown)}")
    _order_override = order
    _decide.cache_clear()


def evidence_order() -> tuple[str, ...]:
    return _order_override if _order_override is not None else load().evidence


def reason_from_text(lowered: str, rules: tuple[PhraseRule, ...] | None = None, command: str | None = None,
                     status: str | None = None) -> str | None:
    """The first reason (in rank order) whose rule matches the lower-cased
    text; `rules` defaults to the strong tier."""
    for rule in load().rules["strong"] if rules is None else rules:
        if rule.matches(lowered, command, status):
            return rule.reason
    return None


def hard_or_soft(reason: str, reply_code: int | None = None, status: str | None = None) -> HardOrSoft:
    """Hard only for reasons that condemn the address itself."""
    if reason not in R.HARD_REASONS:
        return "soft"
    if reason == R.NOTACCEPT and (reply_code and reply_code < 500 or status and status.startswith("4")):
        return "soft"  # a host not accepting mail *now* may accept it later
    return "hard"


def classify(reply_code: int | None, status: str | None, text: str, *, command: str | None = None,
             remote_reply: bool = False, remote_host: str | None = None,
             text_is_notice: bool = False) -> Classification:
    """Reason, hard/soft and confidence of one failure.

    reply_code: SMTP basic code (550) or None; status: enhanced code (5.1.1)
    or None, then looked for in `text`; text: the server's diagnostic;
    command: the SMTP command the reply answered (CONN, HELO, MAIL, RCPT,
    DATA), when known (pass it for live replies: "user unknown" answering
    RCPT is a missing mailbox, answering DATA a filter); remote_reply: the
    text is a remote server's answer even without a reply code (a DSN's
    Diagnostic-Code field), not the reporting MTA's own notice;
    remote_host: the server that answered, when known (its provider's
    table is tried first); text_is_notice: the text is a bounce notice's
    prose, not the failure's own diagnostic (the status then comes first).
    """
    lowered = (text or "").lower()
    if status is None:
        status = find_status(lowered)
    if status and status.startswith("2"):
        return Classification(R.DELIVERED, "soft", "high")
    reason, step = _decide(lowered, reply_code, status, command, remote_reply, remote_host, text_is_notice)
    return Classification(reason, hard_or_soft(reason, reply_code, status), _confidence(step, reason, status))


def explain(lowered: str, reply_code: int | None, status: str | None, command: str | None,
            remote_reply: bool = False) -> str:
    """The reason by the evidence order of the module docstring."""
    return _decide(lowered, reply_code, status, command, remote_reply, None, False)[0]


def _confidence(step: str, reason: str, status: str | None) -> Confidence:
    confidence = STEP_CONFIDENCE[step]
    stated = reason_of_status(status)
    if confidence == "high" and stated and stated != reason and step != "decisive_status":
        return "medium"  # the text and the status code disagree
    if confidence == "medium" and step != "status" and stated == reason:
        return "high"  # two kinds of evidence agree
    return confidence


@lru_cache(maxsize=2048)  # a bounce's texts are classified more than once (picking its diagnostic, then the event)
def _decide(lowered: str, reply_code: int | None, status: str | None, command: str | None,
            remote_reply: bool, remote_host: str | None, text_is_notice: bool) -> tuple[str, str]:
    """(reason, the evidence step that decided it)."""
    quoted = _QUOTED_REPLY_RE.search(lowered) if "'" in lowered else None
    if quoted:  # a relay's own category label, then the server's reply in quotes: the reply explains
        inner = _decide(quoted.group(1), reply_code, status, command, remote_reply, remote_host, text_is_notice)
        if inner[0] != R.ONHOLD:
            return inner
    knowledge = load()
    evidence = _Evidence(lowered, reply_code, status, command, remote_host)
    order = evidence_order()
    if text_is_notice and not (status and status[2:] == _EXPIRED_DETAIL):
        order = _STATUS_STEPS + tuple(step for step in order if step not in _STATUS_STEPS)
    for step in order:
        reason = STEPS[step](knowledge, evidence)
        if reason is None:
            continue
        if reason == R.USERUNKNOWN and _is_filter_verdict(lowered, reply_code, status, command, remote_reply):
            return R.FILTERED, step  # see "one refinement" in the module docstring
        return reason, step
    return R.ONHOLD, "onhold"


def _is_filter_verdict(lowered: str, reply_code: int | None, status: str | None, command: str | None,
                       remote_reply: bool) -> bool:
    """Whether a "user unknown" wording is a remote server's verdict on the
    message rather than proof that the mailbox is missing: it did not answer
    RCPT TO (the one command that asks whether a mailbox exists), no status
    code calls the address bad (x.1.x), and it is a remote server's reply,
    not the destination's own mailbox lookup (a notice in the reporting
    MTA's own words, or its local delivery agent)."""
    if command == "RCPT" or (status and status[2:4] == "1."):
        return False
    if not (reply_code or remote_reply):
        return False
    return "local" not in lowered or _LOCAL_DELIVERY_RE.search(lowered) is None
