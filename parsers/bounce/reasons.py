"""The bounce reason vocabulary (the names deliverability tools share, as used
by Sisimai 5 and the corpus labels) and which reasons are hard.

A reason is "hard" when the address itself will never work: retrying or
sending from elsewhere cannot help, so the address belongs on the
suppression list at once. Every other failure is "soft": it depends on the
sender, the content, the moment or the receiving system.
"""

from __future__ import annotations

from typing import Final

USERUNKNOWN: Final = "userunknown"
HOSTUNKNOWN: Final = "hostunknown"
HASMOVED: Final = "hasmoved"
MAILBOXFULL: Final = "mailboxfull"
SUSPEND: Final = "suspend"
FILTERED: Final = "filtered"
REJECTED: Final = "rejected"
BLOCKED: Final = "blocked"
BADREPUTATION: Final = "badreputation"
REQUIREPTR: Final = "requireptr"
AUTHFAILURE: Final = "authfailure"
SPAMDETECTED: Final = "spamdetected"
VIRUSDETECTED: Final = "virusdetected"
POLICYVIOLATION: Final = "policyviolation"
CONTENTERROR: Final = "contenterror"
NOTCOMPLIANTRFC: Final = "notcompliantrfc"
SECURITYERROR: Final = "securityerror"
FAILEDSTARTTLS: Final = "failedstarttls"
NORELAYING: Final = "norelaying"
NOTACCEPT: Final = "notaccept"
MESGTOOBIG: Final = "mesgtoobig"
EXCEEDLIMIT: Final = "exceedlimit"
TOOMANYCONN: Final = "toomanyconn"
SPEEDING: Final = "speeding"
NETWORKERROR: Final = "networkerror"
EXPIRED: Final = "expired"
SYSTEMERROR: Final = "systemerror"
SYSTEMFULL: Final = "systemfull"
MAILERERROR: Final = "mailererror"
SYNTAXERROR: Final = "syntaxerror"
ONHOLD: Final = "onhold"  # a failure, but the bounce says too little to judge why
UNDEFINED: Final = "undefined"  # nothing at all to go on
DELIVERED: Final = "delivered"

# Reasons that say the address (or its whole domain) is dead.
HARD_REASONS: Final = frozenset({USERUNKNOWN, HOSTUNKNOWN, HASMOVED, NOTACCEPT})

ALL_REASONS: Final = frozenset({
    USERUNKNOWN, HOSTUNKNOWN, HASMOVED, MAILBOXFULL, SUSPEND, FILTERED, REJECTED, BLOCKED,
    BADREPUTATION, REQUIREPTR, AUTHFAILURE, SPAMDETECTED, VIRUSDETECTED, POLICYVIOLATION,
    CONTENTERROR, NOTCOMPLIANTRFC, SECURITYERROR, FAILEDSTARTTLS, NORELAYING, NOTACCEPT,
    MESGTOOBIG, EXCEEDLIMIT, TOOMANYCONN, SPEEDING, NETWORKERROR, EXPIRED, SYSTEMERROR,
    SYSTEMFULL, MAILERERROR, SYNTAXERROR, ONHOLD, UNDEFINED, DELIVERED,
})
