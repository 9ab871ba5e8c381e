"""Enhanced mail system status codes (RFC 3463, IANA registry of RFC 5248)
and SMTP basic reply codes: finding them in text and what they mean.

The meaning table maps a code's subject.detail to the reason it states. Codes
whose meaning is too broad to name a reason on their own (x.0.0, x.7.1
"delivery not authorized", ...) are left out on purpose: for those the
diagnostic text decides.
"""

from __future__ import annotations

import re
from typing import Final

from parsers.bounce import reasons as R

# A status code not embedded in a longer dotted number (IP addresses, versions).
STATUS_RE: Final = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
# A reply code at the start of a reply line, optionally followed by "-" or a status.
REPLY_AT_START_RE: Final = re.compile(r"^\s*([245]\d\d)(?=[\s\-:;,.)]|$)")
# A reply code anywhere, as written by MTAs: "550 5.1.1", "said: 550", "(550)".
REPLY_ANYWHERE_RE: Final = re.compile(
    r"(?<![\w.#/+-])([45][0-5]\d)(?=[\s\-:;,)\]]|$)(?!\s*(?:bytes|days|hours|minutes|seconds)\b)")

# subject.detail -> reason, for details specific enough to name one.
_DETAIL_REASON: Final[dict[str, str]] = {
    "1.1": R.USERUNKNOWN,  # bad destination mailbox address
    "1.2": R.HOSTUNKNOWN,  # bad destination system address
    "1.3": R.USERUNKNOWN,  # bad destination mailbox address syntax
    "1.6": R.HASMOVED,  # destination mailbox has moved, no forwarding address
    "1.7": R.REJECTED,  # bad sender's mailbox address syntax
    "1.8": R.REJECTED,  # bad sender's system address
    "1.10": R.NOTACCEPT,  # recipient address has null MX (RFC 7505)
    # x.2.0: the mailbox exists, but something about it refused this message
    # (RFC 3463 "other or undefined mailbox status"): the recipient side's filter
    "2.0": R.FILTERED,
    "2.1": R.SUSPEND,  # mailbox disabled, not accepting messages
    "2.2": R.MAILBOXFULL,
    "2.3": R.EXCEEDLIMIT,  # message length exceeds administrative limit
    "3.1": R.SYSTEMFULL,
    "3.2": R.NOTACCEPT,  # system not accepting network messages
    "3.3": R.SYSTEMERROR,  # system not capable of selected features
    "3.4": R.MESGTOOBIG,
    "3.5": R.SYSTEMERROR,  # system incorrectly configured
    # 4.1 "no answer from host" and 4.2 "bad connection" are left to the text:
    # servers also quote them in replies they did send (5.4.1 "access denied").
    "4.3": R.SYSTEMERROR,  # directory server failure
    "4.4": R.HOSTUNKNOWN,  # unable to route
    "4.5": R.SYSTEMERROR,  # mail system congestion
    "4.6": R.NETWORKERROR,  # routing loop detected
    "4.7": R.EXPIRED,  # delivery time expired
    "5.1": R.SYNTAXERROR,  # invalid command
    "5.2": R.SYNTAXERROR,  # syntax error
    "5.4": R.SYNTAXERROR,  # invalid command arguments
    "5.5": R.SYNTAXERROR,  # wrong protocol version
    "5.6": R.SYNTAXERROR,  # authentication exchange line too long
    "6.0": R.CONTENTERROR,
    "6.1": R.CONTENTERROR,  # media not supported
    "6.2": R.CONTENTERROR,
    "6.3": R.CONTENTERROR,
    "6.5": R.CONTENTERROR,  # conversion failed
    "6.6": R.CONTENTERROR,
    "6.7": R.CONTENTERROR,  # non-ASCII addresses not permitted
    "6.8": R.CONTENTERROR,
    "6.9": R.CONTENTERROR,
    "6.10": R.CONTENTERROR,
    "7.3": R.SECURITYERROR,
    "7.4": R.SECURITYERROR,
    "7.5": R.SECURITYERROR,
    "7.6": R.SECURITYERROR,
    "7.7": R.POLICYVIOLATION,  # message integrity failure; providers use it for content policy
    "7.8": R.SECURITYERROR,  # authentication credentials invalid
    "7.9": R.POLICYVIOLATION,  # "mechanism too weak" in RFC 4954, but Yahoo/AOL use it for policy blocks
    "7.10": R.FAILEDSTARTTLS,  # encryption needed
    "7.11": R.FAILEDSTARTTLS,  # encryption required for the auth mechanism
    "7.12": R.SECURITYERROR,
    "7.13": R.SUSPEND,  # user account disabled
    "7.14": R.SECURITYERROR,  # trust relationship required
    "7.17": R.HASMOVED,  # mailbox owner has changed
    "7.18": R.HASMOVED,  # domain owner has changed
    "7.20": R.AUTHFAILURE,  # no passing DKIM signature
    "7.21": R.AUTHFAILURE,
    "7.22": R.AUTHFAILURE,
    "7.23": R.AUTHFAILURE,  # SPF validation failed
    "7.24": R.AUTHFAILURE,  # SPF validation error
    "7.25": R.REQUIREPTR,  # reverse DNS validation failed
    "7.26": R.AUTHFAILURE,  # multiple authentication checks failed
    "7.27": R.NOTACCEPT,  # sender address has null MX
    "7.29": R.AUTHFAILURE,  # ARC validation failure
    "7.30": R.FAILEDSTARTTLS,  # REQUIRETLS support required
}


# Details whose meaning holds only as a transient failure: 4.4.1 "no answer from
# host" and 4.4.2 "bad connection" are the sending MTA's own record of a
# connection that failed; the same details under class 5 are often quoted by
# servers that did answer (Exchange Online's "5.4.1 ... Access denied").
_TRANSIENT_REASON: Final[dict[str, str]] = {
    "4.4.1": R.EXPIRED,  # no answer from host, retried until the queue gave up
    "4.4.2": R.NETWORKERROR,  # bad connection
}


def find_status(text: str) -> str | None:
    """The first enhanced status code in `text`, normalised (no leading zeros)."""
    match = STATUS_RE.search(text)
    if not match:
        return None
    return f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"


def last_status(text: str) -> str | None:
    """The last enhanced status code in `text`: in a chain of quoted replies
    ("554 4.4.7 expired <421 4.4.2 connection timed out>") the innermost,
    closest to the cause."""
    found = None
    for match in STATUS_RE.finditer(text):
        found = match
    return f"{found.group(1)}.{int(found.group(2))}.{int(found.group(3))}" if found else None


def pick_status(field: str | None, diagnostic: str) -> str | None:
    """The status of a failure: the remote server's own code in its reply
    (reporting MTAs often write a generic 5.0.0 or 4.4.7 in the Status field),
    unless the reply's code is an "other" (detail 0) where the field is precise."""
    quoted = last_status(diagnostic) if diagnostic else None
    if quoted is None or quoted == field:
        return field
    if field and quoted.endswith(".0") and not field.endswith(".0"):
        return field
    return quoted


def parse_status(value: str | None) -> str | None:
    """A status field value (`5.1.1`, `5.1.1 (user unknown)`) as `c.s.d`, or None."""
    if not value:
        return None
    return find_status(value)


def status_class(status: str | None) -> int | None:
    return int(status[0]) if status else None


def is_generic(status: str | None) -> bool:
    """True when the code names no reason: x.0.0 and the catch-alls of each subject."""
    if not status:
        return True
    return status[2:] not in _DETAIL_REASON


def reason_of_status(status: str | None) -> str | None:
    """The reason a status code states on its own, or None when it is generic."""
    if not status:
        return None
    return _TRANSIENT_REASON.get(status) or _DETAIL_REASON.get(status[2:])


def find_reply_code(text: str) -> int | None:
    """The SMTP basic reply code in a diagnostic text: at the start of a
    reply, else the first plausible one inside it."""
    match = REPLY_AT_START_RE.search(text) or REPLY_ANYWHERE_RE.search(text)
    return int(match.group(1)) if match else None
