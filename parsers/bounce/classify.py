"""Why a delivery failed: reason and hard/soft from an SMTP reply code, an
enhanced status code and the remote server's text.

Used by the bounce parser for every failed recipient and by the sender for
live SMTP replies, so it must be cheap: the patterns are compiled once, the
text is lower-cased once, and each rule is tried only when one of its anchor
words occurs in the text (a plain substring test).

Evidence order (the first tier that names a reason wins):
1. specific phrases of the text (STRONG_RULES, in order): servers write
   "mailbox full" under 5.7.1 or "user unknown" under 5.0.0, and the text is
   what the remote administrator meant;
2. the enhanced status code, when its detail names a reason (status.py);
3. generic conditions of the text (MEDIUM_RULES): queue expiry, network
   trouble, size, system faults; a status code is more precise than these;
4. the SMTP command the reply answered: a refusal of the connection or of
   HELO is aimed at the client host, one of MAIL FROM at the sender; a
   security status (x.7.x) after DATA refuses the content on policy, one
   saying "not authorized" elsewhere is a security refusal;
5. the basic reply code where it has one meaning (551, 552, 50x);
6. weak hints of the text (WEAK_RULES);
7. "onhold": a failure the bounce does not explain.
A diagnostic that wraps a server's quoted reply in a relay's own category
label ("5.1.0 - Unknown address error 550-'5.7.1 ... Access denied'") is
judged by the quoted reply first.
Afterwards one refinement: a remote server's "user unknown" that did not
answer RCPT TO, without a status calling the address bad (x.1.x), is a
filter's verdict on the message (the server accepted the recipient, or the
bounce cannot say it did not), not proof that the mailbox is missing. A
remote reply is one with a reply code or a DSN's Diagnostic-Code; the
reporting MTA's own words about its own mailboxes, and its local delivery
agent's, are the mailbox lookup itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from parsers.bounce import reasons as R
from parsers.bounce.status import find_status, reason_of_status
from parsers.events import HardOrSoft


@dataclass(frozen=True, slots=True)
class Classification:
    reason: str
    hard_or_soft: HardOrSoft


@dataclass(frozen=True, slots=True)
class Rule:
    reason: str
    anchors: tuple[str, ...]  # lower-case substrings, one of which must occur
    pattern: re.Pattern[str]

    def matches(self, lowered: str) -> bool:
        for anchor in self.anchors:
            if anchor in lowered:
                return self.pattern.search(lowered) is not None
        return False


def _rule(reason: str, anchors: str, *alternatives: str) -> Rule:
    """anchors: space-separated substrings ("_" stands for a space)."""
    words = tuple(a.replace("_", " ") for a in anchors.split())
    return Rule(reason, words, re.compile("|".join(f"(?:{a})" for a in alternatives)))


# Specific phrases, in priority order. A reason may appear more than once:
# e.g. a precise "host or domain name not found" outranks DNS trouble, which
# outranks a loose "domain not found".
STRONG_RULES: Final[tuple[Rule, ...]] = (
    # SMTP AUTH / TLS on the sending session, before SPF/DKIM wording
    _rule(R.SECURITYERROR, "authenticat",
          r"(?:smtp )?authentication (?:is )?required", r"turn on smtp authentication",
          r"unauthenticated (?:senders?|users?|relay)\b", r"must (?:be )?authenticated?\b",
          r"without authentication", r"authentication (?:credentials )?(?:invalid|rejected)"),
    _rule(R.FAILEDSTARTTLS, "tls ssl encrypt",
          r"must issue a starttls", r"starttls (?:is )?(?:required|failed|negotiation)",
          r"\btls (?:is )?(?:required|needed|mandatory)", r"tls (?:negotiation|handshake) fail",
          r"(?:not using|not sent over|wasn't sent over|without) (?:a )?(?:tls|encrypted|secure) connection",
          r"encryption (?:is )?required", r"requires? (?:a )?(?:tls|secure|encrypted) connection",
          r"(?:does not|doesn't|do not) (?:support|offer) (?:starttls|tls|ssl|encryption)"),
    # malformed messages, before authentication words ("duplicate DKIM-Signature header")
    _rule(R.NOTCOMPLIANTRFC, "rfc duplicate multiple header",
          r"\brfc ?(?:5322|2822|822|5321|2821)\b(?! ?from domain)", r"duplicate(?:d)? header",
          r"multiple (?:addresses|address|from|sender|to|date|subject|message-id)\w* in (?:the )?(?:from|sender|to|date|subject|message-id)",
          r"multiple (?:from|sender|to|date|subject|message-id)[: ]+(?:headers?|fields?|lines?)",
          r"not (?:\w+ )?compliant with (?:rfc|the (?:smtp|mail) standards?)",
          r"header (?:is )?(?:missing|malformed|not rfc)"),
    _rule(R.AUTHFAILURE, "spf dkim dmarc authenticat domainkey sender policy",
          r"\bspf\b[^.;]{0,60}\b(?:fail|softfail|validation|not pass|didn.t pass|doesn.t pass|reject)", r"(?:bad|invalid|failed) spf\b",
          r"\b(?:fail(?:ed|s|ure)?|did ?n[o']t pass|not pass|pass(?:ing)?)\b[^.;]{0,40}\b(?:spf|dkim|dmarc)\b",
          r"\bdmarc\b[^.;]{0,60}\b(?:polic|reject|fail|verification|quarantine)",
          r"\bdkim\b[^.;]{0,40}\b(?:fail|invalid|signature|verification|required)",
          r"\b(?:spf|dkim|dmarc)\b[^.;]{0,20}(?:does not|doesn't|did not|didn't|do not) pass",
          r"per its? spf", r"per it's spf", r"sender policy framework",
          r"unauthenticated (?:e-?)?mail", r"sender is unauthenticated", r"because (?:it|the sender) is unauthenticated",
          r"(?:not have|without|lacks?) authentication information", r"fails? to pass authentication",
          r"authentication (?:checks? )?(?:failed|failure|did not pass)", r"required authentication level",
          r"not authenticated (?:by|with) (?:spf|dkim)"),
    _rule(R.REQUIREPTR, "ptr reverse rdns resolv hostname host_name unverif",
          r"\bptr\b", r"reverse (?:dns|lookup|hostname|resolution|name|mapping)", r"\brdns\b",
          r"(?:client|your|sending) (?:host ?name|ip(?: address)?|host|server)[^.;]{0,20}(?:is not|isn't|cannot be|could not be|can't be) (?:resolved|verified)",
          r"cannot (?:find|resolve) your (?:host ?name|reverse)", r"(?:host ?name|helo)(?: name)? (?:does not|doesn't) resolve",
          r"unresolvable (?:host|ip|address|client)", r"unverif(?:i|y)?(?:able|ed) (?:sending )?(?:ips?|hosts?)",
          r"(?:ip|client)(?: address)? (?:has|have|with) no (?:dns|host ?name|name)"),
    _rule(R.VIRUSDETECTED, "virus malware infect trojan malicious worm",
          r"\bvirus(?:es)?\b", r"\bmalware\b", r"\binfected\b", r"\btrojan\b", r"\bworm\b",
          r"malicious (?:content|code|software|attachment|payload|link)"),
    _rule(R.NORELAYING, "relay verified",
          r"relay(?:ing)? (?:access )?(?:denied|not permitted|not allowed|prohibited|refused|is not permitted)",
          r"(?:not|isn't) (?:permitted|allowed|authori[sz]ed|configured) to relay", r"(?:unable|cannot|can't) (?:to )?relay",
          r"(?:we|i) do not relay", r"no relaying", r"insecure (?:mail )?relay", r"open relay",
          r"relay(?:ing)? (?:mail )?(?:to \S+ )?(?:is )?not (?:allowed|permitted)",
          r"(?:identity|identities|e-?mail address|domain) (?:is |are )?not verified"),
    # Orange's documented code for a message refused by its content filter ("Mail rejete. Mail rejected. OFR_506")
    _rule(R.SPAMDETECTED, "ofr", r"\bofr_506\b"),
    _rule(R.SPAMDETECTED, "url link uribl surbl",
          r"(?:black|block)listed (?:url|link|domain in (?:the )?(?:message|body))", r"\buribl\b", r"\bsurbl\b",
          r"(?:url|link)s? (?:in (?:the |your )?message )?(?:is |are )?(?:black|block)listed"),
    # throttling, worded with words of other reasons ("limit", "unsolicited", "blocked")
    _rule(R.BADREPUTATION, "reputation", r"\breputation\b"),
    _rule(R.SPEEDING, "rate quickly fast limit per_hour per_day",
          r"receiving (?:e-?)?mail (?:too quickly|at a rate)", r"receiving mail too fast", r"\bunusual rate\b",
          r"\brate[- ]?limit(?:ed|ing)?\b", r"limits? (?:for|on) (?:how many|the number of) messages",
          r"messages (?:\w+ ){0,4}per (?:hour|day|minute)"),
    _rule(R.MAILBOXFULL, "full quota storage space exceed insufficient capacity",
          r"mail ?box (?:is |was |seems |appears )?(?:\w+ )?(?:full|over ?quota|exceeded)",
          r"(?:user|recipient|account|folder|inbox)(?:'s)? (?:mail ?box |inbox )?(?:is |has |was )?(?:over|exceeded (?:the |their |his |her |its )?(?:storage |disk |mailbox |size )?)(?:quota|allocation|limit)",
          r"over ?quota", r"quota (?:exceeded|exceed|full|violation|limit)", r"exceeded (?:\w+ ){0,2}quota",
          r"(?:mail ?box|inbox|mailfolder|mail folder|postbox|box) (?:\w+ )?full\b", r"\bfull (?:mail ?box|inbox)",
          r"out of (?:storage )?space", r"storage (?:quota|allocation|limit) (?:exceeded|reached)",
          r"insufficient (?:disk |storage )?(?:space|storage) (?:in|for) (?:the )?(?:mail ?box|user|recipient|account)",
          r"exceeded storage allocation", r"disk quota", r"(?:number|size) of messages in (?:the )?(?:recipient'?s? )?mail ?box exceed",
          r"not enough (?:storage|space) (?:in|for) (?:the )?(?:mail ?box|user|recipient)", r"mailbox (?:has )?(?:not enough|no) (?:space|room)"),
    _rule(R.SYSTEMFULL, "storage space disk full",
          r"insufficient system (?:storage|resources)", r"(?:mail )?system (?:storage )?(?:is )?full", r"no space left on device",
          r"disk (?:is )?full", r"out of disk"),
    _rule(R.SUSPEND, "disabl suspend deactiv inactive locked frozen closed terminat no_longer blocked expired",
          r"(?:account|mail ?box|user|address|recipient|inbox)(?: \S+)? (?:is |has been |was |are )?(?:temporarily |permanently |currently )?"
          r"(?:disabled|suspended|deactivated|locked|frozen|closed|terminated|expired|on hold)\b",
          r"(?:disabled|suspended|deactivated|locked|frozen|closed|expired) (?:e-?mail |mail ?box |user |recipient )?(?:account|mail ?box|user|address|recipient)",
          r"(?:recipient|destinataire)(?:'s)? account (?:is )?blocked", r"(?:account|user|mail ?box|inbox) (?:is )?inactive",
          r"(?:account|mail ?box|inbox|address|e-?mail)(?: \S+)? (?:is |has been )?no longer (?:in use|active|available|used|monitored|maintained)",
          r"mailbox (?:is )?(?:currently )?unavailable for (?:delivery|receiving)"),
    _rule(R.HASMOVED, "moved longer changed",
          r"(?:user|address|recipient|mailbox|account) has moved", r"\bhas moved to\b", r"address (?:has )?changed to",
          r"(?:recipient|user) (?:is )?no longer (?:on|at|with) (?:this |the )?(?:server|host|domain|system)"),
    # the envelope sender refused: before the recipient rules, whose words
    # ("address ... does not exist") such replies share
    _rule(R.REJECTED, "sender destination_domain",
          r"sender (?:address|domain|e-?mail(?: address)?)(?: \S+)? (?:rejected|refused|denied|invalid|unknown|verify failed|verification failed|does not exist|not allowed)",
          r"domain of sender (?:address )?\S* ?(?:does not exist|not found|unknown|invalid)", r"(?:rejected|refused|invalid|unknown|bad) sender\b",
          r"sender verify failed",
          # the destination domain's own block rules refuse this sender (Zoho's wording)
          r"(?:mail|message) rejected by (?:the )?destination domain"),
    # precise "no such domain" wording, before DNS trouble reports
    _rule(R.HOSTUNKNOWN, "host domain",
          r"host or domain name not found", r"\bhost unknown\b", r"couldn't find any host named",
          r"(?:invalid|illegal|unknown|nonexistent|non-existent) (?:host/)?domain(?: name)?\b(?! of sender)",
          r"no such domain", r"domain (?:name )?does not exist", r"(?:unrouteable|unroutable) (?:mail )?domain",
          r"domain \S+ (?:does not|doesn't) exist", r"weren't able to find the recipient domain",
          r"(?:recipient|destination) (?:domain|system) (?:is )?(?:unknown|invalid|does not exist)",
          r"domain is not reachable"),
    _rule(R.HOSTUNKNOWN, "exist", r"(?<![@\w.-])[a-z0-9-]+(?:\.[a-z0-9-]+)+ (?:does not|doesn't) exist"),
    _rule(R.NOTACCEPT, "mx accept smtp_service exchanger",
          r"null mx", r"(?:does not|doesn't|do not) (?:accept|receive) (?:any )?(?:e-?)?mail",
          r"(?:not|no longer) accepting (?:any )?(?:e-?)?mail", r"no mail (?:is )?accepted",
          r"no mx (?:record|host)s?(?: (?:found|for))?", r"(?:couldn't|could not|can't|cannot) find a mail exchanger",
          r"indicated no smtp service", r"no smtp service"),
    # DNS trouble on the sending side: the domain may well exist
    _rule(R.NETWORKERROR, "dns name lookup servfail",
          r"\bdns (?:error|failure|problem|lookup|timeout)", r"name ?service error", r"name server(?: error| failure|:)",
          r"host name lookup failure", r"(?:dns|mx|name) lookup (?:failed|failure|error|timed out)", r"\bservfail\b",
          r"malformed or unexpected name server reply", r"temporary failure in name resolution"),
    _rule(R.HOSTUNKNOWN, "domain host",
          r"domain (?:name )?(?:not found|unknown|is not registered)", r"host (?:not found|unknown)",
          r"(?:recipient|target) domain (?:not found|unknown)"),
    _rule(R.FILTERED, "preference wish refus filter",
          r"recipient(?:'s)? (?:\w+ )?preferences?", r"(?:does not|doesn't) (?:wish|want) to receive",
          r"(?:rejected|blocked|refused) by (?:the )?recipient(?:'s)? (?:\w+ )?(?:filter|rules?|settings?)"),
    # one reason may take several rules in a row: each with anchors of its own
    _rule(R.USERUNKNOWN, "unknown",
          r"user(?:name)? (?:is )?unknown", r"unknown (?:user|recipient|local[- ]?part|mail ?box|e-?mail address|address|alias|account|addressee)",
          r"(?:recipient|addressee|address|alias|account) (?:is )?unknown", r"unknown or illegal"),
    _rule(R.USERUNKNOWN, "no_such no_mail nouser no_valid",
          r"no such (?:user|mail ?box|recipient|account|person|address|local user|alias)\b", r"\bno valid recipients?\b",
          r"no mail ?box (?:here )?by that name", r"no (?:mail ?box|account) (?:for|with|named)"),
    _rule(R.USERUNKNOWN, "exist",
          r"(?:user|recipient|mail ?box|account|address|addressee|alias)(?: (?!not\b|is\b)\S+)? (?:does not|doesn't|did not|didn't|do not|not) exists?",
          r"account (?:that )?you tried to reach (?:does not|doesn't) exist"),
    _rule(R.USERUNKNOWN, "found",
          r"(?:user|recipient|mail ?box|account|address|alias|addressee) (?:was |is |could )?(?:not|n't) (?:be )?found", r"\brecipientnotfound\b",
          r"address (?:couldn't|could not|can't|cannot) be found",
          r"not found in (?:the |our |public )?(?:\w+ )?(?:directory|address book|name ?& ?address book|ldap|recipient table)"),
    _rule(R.USERUNKNOWN, "valid illegal bad_",
          r"not a (?:valid|known) (?:user|recipient|mail ?box|address)",
          r"invalid (?:recipient|mail ?box|user|address|e-?mail address|final delivery userid|addressee)",
          r"(?:recipient|mail ?box|user|address) (?:name )?(?:is )?(?:invalid|not valid|illegal)",
          r"bad (?:destination )?(?:recipient|mail ?box|user)\b"),
    _rule(R.USERUNKNOWN, "listed known registered recogni local_user local_recipient",
          r"(?:not|no) (?:such )?(?:a local|a known|local) (?:user|recipient)", r"no such user here",
          r"(?:user|recipient|account|address|name) (?:is )?(?:not|no longer) (?:listed|known|registered|recogni[sz]ed)",
          r"not listed in (?:the |our |public )?(?:\w+ )?(?:directory|address book|name ?& ?address book|ldap|recipient table)",
          r"not a registered (?:user|recipient)"),
    _rule(R.USERUNKNOWN, "recipient unrouteable mailbox account",
          r"recipient (?:is )?not (?:in|on) (?:the |our )?(?:\w+ )?(?:list|directory|table|database)",
          r"\bunrouteable address\b", r"recipient address rejected: (?:access denied|user|unknown|undeliverable)",
          r"mailbox unavailable", r"(?:doesn't|does not) have an? \S+ account", r"mailbox (?:name )?not allowed",
          r"recipient rejected"),
    _rule(R.SPAMDETECTED, "spam junk unsolicited bulk ube uce content score suspicious",
          r"\bspam\b(?![- ]?(?:trap|haus|cop))", r"\bspam(?:my|-like|y)\b", r"\bjunk (?:e-?)?mail\b", r"\bunsolicited\b(?! ?(?:e-?)?mail originating)",
          r"\bbulk (?:e-?)?mail\b", r"\bu[bc]e\b", r"message content rejected", r"content (?:filter|scan)[^.]{0,30}reject",
          r"(?:looks|appears|considered|classified|detected|identified|scored)[^.]{0,20}(?:as )?(?:spam|junk|unsolicited|bulk)",
          r"spam ?score", r"high (?:spam|probability)", r"suspicious due to the nature of the content",
          r"(?:content|links?) (?:is |are |appears? |looks? )?(?:to be )?suspicious"),
    _rule(R.POLICYVIOLATION, "polic violation presents not_allowed prohibit forbidden attachment banned",
          r"\bpolicy (?:reasons?|violation|rejection|restrictions?)\b", r"(?:against|violat\w+|denied by|due to|per) (?:our |the |local |site |domain )?(?:\w+ )?polic(?:y|ies)",
          r"protocol violation", r"content presents a potential", r"message not allowed",
          r"(?:host|sender|client) network not allowed", r"(?:attachment|file) (?:type )?(?:not allowed|prohibited|forbidden|blocked|rejected)",
          r"(?:prohibited|forbidden|banned|blocked) (?:attachment|file|content)"),
    _rule(R.BADREPUTATION, "reputation complaints",
          r"\breputation\b", r"(?:user|spam) complaints", r"sender score"),
    _rule(R.BLOCKED, "list spamhaus spamcop sorbs barracuda rbl",
          r"\b(?:black|block|deny|ban)[ -]?list(?:ed)?\b", r"\blisted (?:in|on|at|by)\b", r"\bdnsbl\b", r"\brbl\b",
          r"\bspamhaus\b", r"\bspamcop\b", r"\bsorbs\b", r"\bbarracuda(?:central)?\b"),
    _rule(R.BLOCKED, "blocked banned",
          r"blocked (?:using|by|because|due|for)", r"banned sending ip", r"access denied, banned",
          r"(?:ip|host|server|network|netblock)(?: address)?(?:\s+\[?[\w.:-]+\]?)? (?:is |has been |was |are )?(?:temporarily |permanently )?(?:blocked|blacklisted|banned)"),
    _rule(R.BLOCKED, "client your_ sending_ connecting",
          r"(?:client|your|sending|connecting) (?:host|ip|server|network|mta|address)(?: address)?(?:\s+\[?[\w.:-]+\]?)? (?:is |has been |was )?(?:rejected|refused|blocked|denied|not allowed|banned|blacklisted)"),
    _rule(R.BLOCKED, "not_permitted",
          r"(?:ip|host|server|network|netblock)(?: address)?(?:\s+\[?[\w.:-]+\]?)? (?:is |has been |was |are )?(?:temporarily |permanently )?not permitted"),
    _rule(R.BLOCKED, "invalid_ip messages_from mail_from connection refuse dynamic dial residential isp provider",
          r"invalid ip\b", r"messages from [\d.]+ (?:weren't|were not|are not|will not be)", r"mail from [\d.]+ (?:refused|rejected|blocked)",
          r"connections? (?:not accepted|refused|rejected) from", r"not accepting connections", r"connection refused by",
          r"service refused", r"\bservice refuse\b", r"dynamic(?:ally)? (?:assigned )?ip", r"dial-?up", r"\bresidential\b",
          r"use the smtp server of your isp", r"use your (?:isp|provider)'?s? (?:smtp|mail) ?server"),
    _rule(R.TOOMANYCONN, "too_many connection frequency concurren session",
          r"too many (?:concurrent |simultaneous |open )?(?:connections|sessions)", r"connection (?:rate |count |frequency )?limit",
          r"too many recipients", r"maximum (?:number of )?connections", r"connection frequency"),
    _rule(R.SPEEDING, "rate too_many too_fast throttl too_much flood",
          r"rate ?limit", r"too many (?:messages|mails|e-?mails)", r"sending rate", r"\bthrottl", r"too fast",
          r"exceeded (?:the )?(?:message |sending )?rate", r"(?:message|mail) flood", r"unusual rate", r"too much (?:mail|e-?mail)\b(?! data)",
          r"exceeded the limit for the number of messages"),
    _rule(R.EXCEEDLIMIT, "limit",
          r"(?:exceeds?|over) (?:the )?(?:size )?limit set by (?:the )?recipient", r"recipient'?s? (?:message )?size limit"),
    _rule(R.MAILERERROR, "mailer procmail pipe exit command program",
          r"\bmailer error\b", r"unknown mailer", r"mailer \S+ (?:died|failed)", r"\bprocmail:", r"\bpipe to\b",
          r"command (?:died|failed|exited)", r"exit (?:code|status) \d+", r"delivery to (?:a )?(?:program|pipe|command)",
          r"program (?:failed|error|exited)"),
)

# Generic conditions: below a specific status code, above the SMTP command.
MEDIUM_RULES: Final[tuple[Rule, ...]] = (
    _rule(R.EXPIRED, "retry queue expired time deliver delayed gave giving too_long hosts_have",
          r"retry time(?:out)? (?:not reached|exceeded)", r"delivery time expired", r"(?:message|mail|envelope) (?:has )?expired",
          r"(?:could not|couldn't|unable to|can't|cannot) (?:be )?deliver(?:ed)?(?: this message| it)? (?:for|in|within|after) (?:the last |more than )?\d+",
          r"not (?:been )?delivered (?:within|for|in) (?:the last )?\d+", r"(?:in|on) the queue (?:too long|for)",
          r"too long in (?:the )?queue", r"queue lifetime", r"(?:max(?:imum)?) (?:queue|retry|delivery) (?:time|lifetime|attempts)",
          r"time limit (?:exceeded|reached)", r"retry limit", r"deferred for too long", r"(?:has been|was) delayed",
          r"will be retried", r"delivery attempts will continue", r"hosts have been failing", r"gave up", r"given up on",
          r"unable to deliver (?:this )?message after", r"message timed out", r"not yet been delivered"),
    _rule(R.NETWORKERROR, "connect timed timeout unreachable route loop hops hop reach gateway",
          r"connection (?:timed out|reset|closed|lost|dropped|failed)", r"timed? ?out (?:while|during|after|connecting|reading)",
          r"\btimed out\b", r"network (?:is )?unreachable", r"no route to host", r"(?:mail|routing) loop", r"loops? back to myself",
          r"too many hops", r"hop count", r"(?:could not|couldn't|unable to|failed to) (?:connect|establish)", r"lost connection",
          r"host (?:is )?(?:unreachable|not reachable)", r"requests to connect", r"could not find a gateway"),
    _rule(R.MESGTOOBIG, "size big large limit",
          r"message (?:is )?too (?:big|large)", r"message (?:size|length) (?:exceeds|too|limit|is over)",
          r"(?:exceeds|over) (?:the |our )?(?:maximum |max |fixed )*(?:message )?size", r"size limit",
          r"too large for (?:this|the)", r"line limit exceeded", r"line (?:is )?too long"),
    _rule(R.SYSTEMERROR, "error system internal configur temporar unavailable loop duplicat permission upstream could_not_load resource busy transaction",
          r"system error", r"internal (?:server )?error", r"(?:server|system|mail ?server) (?:is )?(?:mis)?configur",
          r"local error in processing", r"temporary (?:local |server |system )?(?:error|problem)", r"temporary (?:local|server|system) failure", r"\bi/o error\b",
          r"database error", r"mail system (?:error|problem|failure)", r"misconfigur", r"resources? (?:temporarily )?unavailable",
          r"upstream error", r"could not load", r"insufficient permission", r"duplicated message-id", r"loop (?:alert|detected)",
          r"service (?:is )?(?:temporarily )?unavailable", r"server (?:is )?(?:too )?busy",
          r"^[\s\d.-]*transaction failed\W*$"),  # RFC 5321's bare 554 text: the server failed, and says no more
    _rule(R.SYNTAXERROR, "syntax command sequence implemented recogni line_too_long",
          r"syntax error", r"command (?:not |un)recogni[sz]ed", r"unrecogni[sz]ed command", r"(?:bad|improper) sequence of commands",
          r"(?:command|parameter)(?: parameter)? not implemented", r"unknown command", r"invalid command"),
    _rule(R.CONTENTERROR, "mime encoding 8bit 8-bit character content header",
          r"\bmime\b", r"content[- ]transfer[- ]encoding", r"\b8-?bit\b", r"invalid (?:character|content)",
          r"headers? (?:is |are |was )?(?:too (?:long|large|many)|invalid|malformed)", r"bare (?:lf|cr|newline)",
          r"message (?:content|body|header)s? (?:is |was )?(?:invalid|malformed|corrupt)", r"media error"),
)

# Weak hints: only when nothing better is known.
WEAK_RULES: Final[tuple[Rule, ...]] = (
    _rule(R.REJECTED, "sender from return envelope domain_of permission group",
          r"sender (?:address )?(?:\S+ )?(?:rejected|refused|denied|not allowed|blocked|verify failed|invalid|unknown)",
          r"(?:rejected|refused|blocked|invalid|unknown|bad) sender", r"envelope sender", r"\bmail from\b[^.]{0,40}(?:rejected|refused|denied)",
          r"domain of sender", r"sender domain", r"from address", r"return[- ]path",
          r"not have permission to post", r"(?:group|list) (?:you tried to contact )?(?:may not exist|does not accept)"),
    _rule(R.POLICYVIOLATION, "polic prohibit forbid attachment banned content",
          r"\bpolic(?:y|ies)\b", r"\bprohibited\b", r"\bforbidden\b", r"\battachment\b", r"\bbanned\b"),
    _rule(R.FILTERED, "filter refus denied authori preference reject allowed",
          r"\bfilter(?:ed|ing)?\b", r"refused to (?:accept|receive)", r"does not (?:wish|want) to receive", r"\brefused\b",
          r"access denied", r"\bdenied\b", r"not authori[sz]ed", r"preferences?\b", r"rejected by (?:the )?recipient",
          r"not allowed to (?:send|mail|write) to this (?:recipient|user|address)"),
    _rule(R.BLOCKED, "block", r"\bblock(?:ed)?\b"),
)

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


def reason_from_text(lowered: str, rules: tuple[Rule, ...] = STRONG_RULES) -> str | None:
    """The first reason (in rule order) whose pattern occurs in the lower-cased text."""
    for rule in rules:
        if rule.matches(lowered):
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
             remote_reply: bool = False) -> Classification:
    """Reason and hard/soft of one failure.

    reply_code: SMTP basic code (550) or None; status: enhanced code (5.1.1)
    or None, then looked for in `text`; text: the server's diagnostic;
    command: the SMTP command the reply answered (CONN, HELO, MAIL, RCPT,
    DATA), when known (pass it for live replies: "user unknown" answering
    RCPT is a missing mailbox, answering DATA a filter); remote_reply: the
    text is a remote server's answer even without a reply code (a DSN's
    Diagnostic-Code field), not the reporting MTA's own notice.
    """
    lowered = (text or "").lower()
    if status is None:
        status = find_status(lowered)
    if status and status.startswith("2"):
        return Classification(R.DELIVERED, "soft")
    reason = explain(lowered, reply_code, status, command, remote_reply)
    return Classification(reason, hard_or_soft(reason, reply_code, status))


@lru_cache(maxsize=2048)  # a bounce's texts are classified more than once (picking its diagnostic, then the event)
def explain(lowered: str, reply_code: int | None, status: str | None, command: str | None,
            remote_reply: bool = False) -> str:
    """The reason by the evidence order of the module docstring."""
    quoted = _QUOTED_REPLY_RE.search(lowered) if "'" in lowered else None
    if quoted:  # a relay's own category label, then the server's reply in quotes: the reply explains
        inner = explain(quoted.group(1), reply_code, status, command, remote_reply)
        if inner != R.ONHOLD:
            return inner
    reason = (
        reason_from_text(lowered)
        or reason_of_status(status)
        or reason_from_text(lowered, MEDIUM_RULES)
        or _reason_of_command(command, status, lowered)
        or _reason_of_reply(reply_code, status)
        or reason_from_text(lowered, WEAK_RULES)
        or R.ONHOLD
    )
    if reason == R.USERUNKNOWN and _is_filter_verdict(lowered, reply_code, status, command, remote_reply):
        return R.FILTERED  # see "one refinement" in the module docstring
    return reason


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


def _reason_of_command(command: str | None, status: str | None, lowered: str) -> str | None:
    if command in _COMMAND_REASON:
        return _COMMAND_REASON[command]
    if status and status[2:4] == "7.":
        if command == "DATA":
            return R.POLICYVIOLATION  # the content was refused on security/policy grounds
        if _NOT_AUTHORIZED_RE.search(lowered):
            return R.SECURITYERROR  # "5.7.1 delivery not authorized" with nothing more specific
    return None


def _reason_of_reply(reply_code: int | None, status: str | None) -> str | None:
    if reply_code is None:
        return None
    if status and status[2:] not in ("0.0", "1.6", "2.0"):
        return None  # a status code more precise than x.0.0 disagrees with the reply's own meaning
    return _REPLY_REASON.get(reply_code)
