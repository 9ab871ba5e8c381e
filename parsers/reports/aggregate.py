"""DMARC aggregate reports (RUA): XML in, one DmarcAggregateEvent out, streamed.

The XML is fed to libxml2 (lxml's pull parser) chunk by chunk. The parser
reports only where <feedback> starts and where each <record> ends; at that
moment the record (a couple of dozen elements) is read into a DmarcRecord
and deleted from the tree together with everything before it, so a
100,000-record report never has more than one record's elements in memory.
The three schema generations are read alike: the pre-RFC draft (no
<version>), RFC 7489 and RFC 9990 (namespace urn:ietf:params:xml:ns:dmarc-2.0);
elements are matched by local name.

Safety: a DOCTYPE is refused outright (a report never needs one, and it is
where entity expansion and external entities live), both by a scan of the
prolog before libxml2 sees a byte and by libxml2's own record of it;
entities are never resolved, nothing is loaded from the network, libxml2's
huge-tree limits stay on, and a document whose elements pile up outside
finished records is refused. Broken XML is read in libxml2's recovery mode,
the way reporters' mistakes are usually tolerated, and what was repaired
goes into `errors`; a document that ends inside <feedback> is truncated and
refused.

Normalisation follows what deliverability tools (parsedmarc among them)
established, so stored data agrees with theirs: result words lower-cased,
header_from lower-cased ("" when absent), org_name reduced to the reporter's
organisational domain when it is a domain name, missing policy-evaluated
results read as disposition none / dkim fail / spf fail, envelope_from taken
from the SPF mail-from result when the reporter left it out. Two departures,
both about values a report does not contain: a record without any
<policy_evaluated> keeps disposition, dkim and spf absent (None, with a note
in errors) rather than "fail"; bytes of a domain that are not UTF-8 are
dropped (as parsedmarc drops them) rather than kept as U+FFFD.

Counts: a record count above MAX_COUNT (10**9) refuses the whole report; no
reporter sees that many messages from one IP in a report period, and such
values overflow the sums made of them later.

Memory: identical auth-result and override-reason dicts, and repeated words
(dispositions, domains), are one object shared by all the records of a report
that carry them; consumers treat record contents as read-only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from functools import lru_cache
from itertools import chain
from typing import Any

from lxml import etree

from parsers.events import DmarcAggregateEvent, DmarcRecord
from parsers.reports.containers import ReportError

DMARC_2_NAMESPACE = "urn:ietf:params:xml:ns:dmarc-2.0"
KNOWN_NAMESPACES = frozenset({DMARC_2_NAMESPACE, "http://dmarc.org/dmarc-xml/0.1"})

MAX_REPEATS = 100  # dkim/spf results, reasons, errors kept per element; more is noise or an attack
MAX_ERRORS = 200  # notes kept per report
# Messages per record: a large reporter sees millions a day from one IP, never a billion;
# a larger count is a broken or hostile report, and summing it would overflow storage.
MAX_COUNT = 10**9
MAX_LIVE_ELEMENTS = 50_000  # elements held at once; a record has about 25
MAX_BYTES_BEFORE_FEEDBACK = 1024 * 1024
MAX_PROLOG_BYTES = 1024 * 1024
_MAX_SHARED = 50_000

# The report-level sections read through _element_fields: for each, which
# children are kept and their kind (the key of their own entry here when they
# have children, "" for a text field). Anything else is skipped. Records are
# read by _FeedbackReader._add_record directly, for speed.
_SCHEMA: dict[str, dict[str, str]] = {
    "report_metadata": {"org_name": "", "email": "", "extra_contact_info": "", "report_id": "",
                        "date_range": "date_range", "error": "", "generator": ""},
    "date_range": {"begin": "", "end": ""},
    "policy_published": {"domain": "", "adkim": "", "aspf": "", "p": "", "sp": "", "pct": "", "fo": "",
                         "np": "", "testing": "", "discovery_method": ""},
}

_NOTHING = object()
_DKIM_KEYS = ("domain", "selector", "result", "human_result")
_SPF_KEYS = ("domain", "scope", "result", "human_result")
_REASON_KEYS = ("type", "comment")


def parse_aggregate_chunks(chunks: Iterable[bytes], notes: list[str] | None = None) -> DmarcAggregateEvent:
    """One aggregate report from a stream of XML bytes; ReportError when it
    is not one. `notes` (container remarks such as trailing gzip bytes) end
    up in the event's errors."""
    stream, root_name = _checked_prolog(iter(chunks))
    reader = _FeedbackReader()
    reader.root_name = root_name
    parser = etree.XMLPullParser(
        events=("start", "end"), tag=("{*}feedback", "{*}record"),
        recover=True, resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
        remove_comments=True, remove_pis=True,
        remove_blank_text=True,  # whitespace between elements is never a value; not storing it is 6 % faster
    )
    try:
        for chunk in stream:
            parser.feed(chunk)
            if reader.consume(parser.read_events(), len(chunk)):
                # the report is complete; still read the container to its end so
                # a corrupt or truncated gzip/zip is noticed (CRC, end marker)
                for _ in stream:
                    pass
                break
        else:
            reader.at_close = True
            reader.records_before_close = reader.record_index
            parser.close()
            reader.consume(parser.read_events(), 0)
    except etree.XMLSyntaxError as exc:
        raise ReportError(f"XML cannot be read: {exc}") from None
    if reader.closed and reader.at_close and _unfinished_tags(parser) - reader.ancestor_names:
        # libxml2's recovery closed <feedback> at the end of the input: the
        # document stopped inside it (inside a record, usually)
        reader.closed = False
    return reader.build(_xml_problems(parser), notes or [])


_UNFINISHED_TAG_RE = re.compile(r"in tag (\S+)")


def _unfinished_tags(parser: etree.XMLParser) -> set[str]:
    """Elements the input ended inside of, as libxml2 reports them."""
    tags = set()
    for entry in parser.feed_error_log:
        if entry.type_name == "ERR_TAG_NOT_FINISHED":
            match = _UNFINISHED_TAG_RE.search(entry.message)
            tags.add(match.group(1).rpartition(":")[2] if match else "?")
    return tags


_PROLOG_SKIP = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->", re.DOTALL)


_NAME_RE = re.compile(rb"<([A-Za-z_][\w.:-]*)")


def _checked_prolog(chunks: Iterator[bytes]) -> tuple[Iterator[bytes], str | None]:
    """Refuse a DOCTYPE before libxml2 parses it: read the prolog (XML
    declaration, comments, processing instructions) up to the first element.
    Returns the stream, nothing consumed, and that element's name."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        done, root_name = _scan_prolog(buffer)
        if done:
            break
        if len(buffer) > MAX_PROLOG_BYTES:
            raise ReportError(f"XML prolog (comments, declarations) is longer than {MAX_PROLOG_BYTES} bytes; refused")
    else:
        root_name = _scan_prolog(buffer)[1]
    return chain([buffer], chunks), root_name


def _scan_prolog(head: bytes) -> tuple[bool, str | None]:
    """(whether the prolog ends within `head`, the first element's name);
    raises on a DOCTYPE."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head[: len(head) // 2 * 2].decode("utf-16", "replace").encode("utf-8", "replace")
    else:
        text = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    pos = 0
    while pos < len(text):
        match = _PROLOG_SKIP.match(text, pos)
        if match is None:
            break
        pos = match.end()
    rest = text[pos:]
    if rest[:9].upper() == b"<!DOCTYPE":
        raise ReportError(_DOCTYPE_REFUSED)
    if len(rest) < 9 or rest.startswith((b"<!--", b"<?")):
        return False, None  # the prolog may go on in the next chunk
    match = _NAME_RE.match(rest)
    return True, match.group(1).decode("ascii", "replace").rpartition(":")[2] if match else None


_DOCTYPE_REFUSED = ("XML has a DOCTYPE declaration, which a DMARC report never needs; refused "
                    "(entities are neither expanded nor fetched)")


def _xml_problems(parser: etree.XMLParser) -> list[str]:
    problems = []
    for entry in parser.feed_error_log:
        if entry.level_name in ("ERROR", "FATAL"):
            problems.append(f"{entry.message.strip()} (line {entry.line}, column {entry.column})")
    return problems


def _local(tag: Any) -> str:
    if type(tag) is not str:
        return ""  # comment or processing instruction
    return tag if tag[0] != "{" else tag[tag.index("}") + 1:]


class _FeedbackReader:
    """Turns the pull parser's events into metadata and DmarcRecords, and
    prunes the tree as it goes."""

    def __init__(self) -> None:
        self.feedback: Any = None
        self.namespace: str | None = None
        self.root_name: str | None = None
        self.closed = False
        self.at_close = False  # parser.close() is running: libxml2 ends what is still open
        self.ancestor_names: set[str] = set()
        self.records_before_close = 0
        self.fed = 0
        self.metadata: dict[str, Any] | None = None
        self.policy: dict[str, Any] | None = None
        self.version: str | None = None
        self.records: list[DmarcRecord] = []
        self.record_errors: list[str] = []
        self.record_index = 0
        self._strings: dict[str, str] = {}
        self._results: dict[tuple[str | None, ...], dict[str, str | None]] = {}
        self._names: dict[Any, str] = {}
        self._ips: dict[str, str | None] = {}

    def consume(self, events: Iterator[tuple[str, Any]], fed: int) -> bool:
        """Handle the events of one chunk; True once </feedback> was seen."""
        self.fed += fed
        for event, element in events:
            if event == "start":
                if self.feedback is None and _local(element.tag) == "feedback":
                    self._start_feedback(element)
                continue
            if self.feedback is None:
                continue
            if element is self.feedback:
                self._absorb_children_before(None)
                self.closed = True
                return True
            if element.getparent() is self.feedback and _local(element.tag) == "record":
                self._absorb_children_before(element)
                self.record_index += 1
                self._add_record(element)
                element.clear(keep_tail=False)
                self.feedback.remove(element)
        self._check_size()
        return False

    def _start_feedback(self, element: Any) -> None:
        tree = element.getroottree()
        docinfo = tree.docinfo
        if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
            raise ReportError(_DOCTYPE_REFUSED)
        self.feedback = element
        self.root_name = _local(tree.getroot().tag) or self.root_name
        self.ancestor_names = {_local(ancestor.tag) for ancestor in element.iterancestors()}
        if element.tag[0] == "{":
            self.namespace = element.tag[1:element.tag.index("}")]

    def _absorb_children_before(self, stop: Any) -> None:
        """Read the metadata among <feedback>'s children before `stop` (all
        of them when None), then delete them."""
        feedback = self.feedback
        while len(feedback) and feedback[0] is not stop:
            child = feedback[0]
            name = _local(child.tag)
            if name == "report_metadata" and self.metadata is None:
                self.metadata = _element_fields(child, "report_metadata")
            elif name == "policy_published" and self.policy is None:
                self.policy = _element_fields(child, "policy_published")
            elif name == "version" and self.version is None and not len(child):
                self.version = (child.text or "").strip() or None
            del feedback[0]

    def _check_size(self) -> None:
        if self.feedback is None:
            if self.fed > MAX_BYTES_BEFORE_FEEDBACK:
                raise ReportError(
                    f"XML is not a DMARC aggregate report: no <feedback> element in its first {MAX_BYTES_BEFORE_FEEDBACK} bytes"
                )
            return
        root = self.feedback.getroottree().getroot()
        live = 0
        for _ in root.iter():
            live += 1
            if live > MAX_LIVE_ELEMENTS:
                raise ReportError(
                    f"XML holds more than {MAX_LIVE_ELEMENTS} elements outside finished records "
                    "(not a plausible DMARC report; refused)"
                )

    # --- records ------------------------------------------------------------

    def _note(self, message: str) -> None:
        if len(self.record_errors) < MAX_ERRORS:
            self.record_errors.append(message)

    def _shared_text(self, value: str | None) -> str | None:
        """One string object per distinct value of the low-variety fields."""
        if value is None:
            return None
        cached = self._strings.get(value)
        if cached is not None:
            return cached
        if len(self._strings) < _MAX_SHARED:
            self._strings[value] = value
        return value

    def _shared_result(self, key: tuple[str | None, ...], names: tuple[str, ...]) -> dict[str, str | None]:
        """Identical auth results and override reasons recur in thousands of
        records: they share one dict (treat record results as read-only). The
        key starts with the kind of result, so a DKIM result without a selector
        is never taken for an SPF result with the same domain and result."""
        cached = self._results.get(key)
        if cached is not None:
            return cached
        result = dict(zip(names, key[1:], strict=True))
        if len(self._results) < _MAX_SHARED:
            self._results[key] = result
        return result

    def _source_ip(self, text: str) -> str | None:
        """_normalize_ip(text), memoised: reports repeat their source IPs."""
        try:
            return self._ips[text]
        except KeyError:
            pass
        ip = _normalize_ip(text)
        if len(self._ips) < _MAX_SHARED:
            self._ips[text] = ip
        return ip

    def _local_name(self, tag: Any) -> str:
        """_local(tag), memoised: a report uses a couple of dozen tags."""
        name = self._names.get(tag)
        if name is None:
            name = _local(tag)
            if type(tag) is str and len(self._names) < 1000:
                self._names[tag] = name
        return name

    def _add_record(self, element: Any) -> None:
        """One <record> element to a DmarcRecord. Written out element by
        element rather than through _element_fields: this runs 100,000 times
        for a large report and is most of the parsing time."""
        names = self._names
        local = self._local_name
        row = ids = auth = None
        for part in element:
            name = names.get(part.tag) or local(part.tag)
            if name == "row":
                row = row if row is not None else part
            elif name == "identifiers" or name == "identities":
                ids = ids if ids is not None else part
            elif name == "auth_results":
                auth = auth if auth is not None else part
        if row is None:
            self._note(f"record {self.record_index}: no <row>; record skipped")
            return
        raw_ip = raw_count = evaluated = None
        for field in row:
            name = names.get(field.tag) or local(field.tag)
            if name == "source_ip":
                raw_ip = raw_ip or _leaf(field)
            elif name == "count":
                raw_count = raw_count or _leaf(field)
            elif name == "policy_evaluated" and evaluated is None:
                evaluated = field
        source_ip = self._source_ip(raw_ip) if raw_ip else None
        if source_ip is None:
            self._note(f"record {self.record_index}: source_ip {raw_ip!r} is not an IP address; record skipped")
            return
        count = _parse_count(raw_count)
        if count is None:
            self._note(f"record {self.record_index}: count {raw_count!r} is not a whole number; record skipped")
            return
        if count > MAX_COUNT:
            # a count no reporter can have seen in a day; summing such values overflows storage
            raise ReportError(f"record {self.record_index}: count {(raw_count or '')[:30]} is above {MAX_COUNT:,}, "
                              "not a plausible number of messages; report refused")
        if evaluated is None:
            self._note(f"record {self.record_index}: no <policy_evaluated>; disposition, dkim and spf left absent")
            disposition = dkim = spf = None
            reasons: list[dict[str, str | None]] = []
        else:
            disposition, dkim, spf, reasons = self._evaluated(evaluated)
        header_from = envelope_from = envelope_to = None
        if ids is not None:
            for field in ids:
                name = names.get(field.tag) or local(field.tag)
                if name == "header_from":
                    header_from = header_from or _leaf(field)
                elif name == "envelope_from":
                    envelope_from = envelope_from or _leaf(field)
                elif name == "envelope_to":
                    envelope_to = envelope_to or _leaf(field)
        dkim_results: list[dict[str, str | None]] = []
        spf_results: list[dict[str, str | None]] = []
        if auth is not None:
            for result in auth:
                name = names.get(result.tag) or local(result.tag)
                if name == "dkim":
                    if len(dkim_results) < MAX_REPEATS:
                        self._append_auth_result(dkim_results, result, "dkim")
                elif name == "spf" and len(spf_results) < MAX_REPEATS:
                    self._append_auth_result(spf_results, result, "spf")
        share = self._shared_text
        if envelope_from is None:
            # RFC 7489 made envelope_from optional; the SPF mail-from identity is the same domain
            for spf_result in reversed(spf_results):
                if spf_result["scope"] in (None, "mfrom"):
                    envelope_from = spf_result["domain"]
                    break
        else:
            envelope_from = _domain_text(envelope_from)
        self.records.append(DmarcRecord(
            source_ip=source_ip,
            count=count,
            disposition=share(disposition),
            dkim=share(dkim),
            spf=share(spf),
            header_from=share(_domain_text(header_from) or ""),
            envelope_from=share(envelope_from),
            envelope_to=share(_domain_text(envelope_to)),
            dkim_results=dkim_results,
            spf_results=spf_results,
            policy_override_reasons=reasons,
        ))

    def _evaluated(self, element: Any) -> tuple[str, str, str, list[dict[str, str | None]]]:
        """<policy_evaluated>: disposition, dkim, spf and the override reasons.
        A result the reporter left out reads as none / fail / fail, as other
        DMARC tools read it."""
        names = self._names
        disposition = dkim = spf = None
        reasons: list[dict[str, str | None]] = []
        for item in element:
            name = names.get(item.tag) or self._local_name(item.tag)
            if name == "disposition":
                disposition = disposition or _leaf(item)
            elif name == "dkim":
                dkim = dkim or _leaf(item)
            elif name == "spf":
                spf = spf or _leaf(item)
            elif name == "reason" and len(reasons) < MAX_REPEATS:
                kind, comment = _leaves(item, ("type", "comment"))
                reasons.append(self._shared_result(("reason", _lower(kind), comment), _REASON_KEYS))
        return (_lower(disposition) or "none", _lower(dkim) or "fail", _lower(spf) or "fail", reasons)

    def _append_auth_result(self, results: list[dict[str, str | None]], element: Any, mechanism: str) -> None:
        """One <auth_results><dkim> or <spf> entry, unless it names no domain.
        DKIM names its selector, SPF its scope (mfrom or helo)."""
        names = self._names
        domain = extra = outcome = human = None
        second = "selector" if mechanism == "dkim" else "scope"
        for child in element:
            name = names.get(child.tag) or self._local_name(child.tag)
            if name == "domain":
                domain = domain or _leaf(child)
            elif name == second:
                extra = extra or _leaf(child)
            elif name == "result":
                outcome = outcome or _leaf(child)
            elif name == "human_result":
                human = human or _leaf(child)
        domain = _domain_text(domain)
        if not domain:
            return
        if mechanism == "dkim":
            key = ("dkim", domain, extra, _lower(outcome) or "none", human)
            results.append(self._shared_result(key, _DKIM_KEYS))
        else:
            key = ("spf", domain, _lower(extra), _lower(outcome) or "none", human)
            results.append(self._shared_result(key, _SPF_KEYS))

    # --- the report ---------------------------------------------------------

    def build(self, xml_problems: list[str], notes: list[str]) -> DmarcAggregateEvent:
        if self.feedback is None:
            found = f"the document is <{self.root_name}>" if self.root_name else "no element found"
            raise ReportError(f"XML is not a DMARC aggregate report: no <feedback> element ({found})")
        if not self.closed:
            why = f"; libxml2 says: {xml_problems[-1]}" if xml_problems else ""
            raise ReportError(
                f"DMARC aggregate report is incomplete: the XML ends inside <feedback> "
                f"after {self.records_before_close if self.at_close else self.record_index} records "
                f"(truncated or broken){why}"
            )
        errors: list[str] = []
        metadata = self.metadata
        if metadata is None:
            raise ReportError("DMARC aggregate report has no <report_metadata>")
        policy = self.policy
        if policy is None:
            raise ReportError("DMARC aggregate report has no <policy_published>")
        report_id = _clean_report_id(_first_text(metadata, "report_id"))
        if not report_id:
            raise ReportError("DMARC aggregate report has no <report_id>")
        org_email = _first_text(metadata, "email")
        org_name = _organisation(_first_text(metadata, "org_name"), org_email)
        if not org_name:
            raise ReportError("DMARC aggregate report names no reporting organisation (no <org_name>, no <email>)")
        domain = _domain_text(_first_text(policy, "domain"))
        if not domain:
            raise ReportError("DMARC aggregate report has no <policy_published><domain>")
        date_range = _first_dict(metadata, "date_range") or {}
        begin = _parse_time(_first_text(date_range, "begin"), "begin")
        end = _parse_time(_first_text(date_range, "end"), "end")
        if end < begin:
            errors.append(f"date_range ends ({end.isoformat()}) before it begins ({begin.isoformat()})")
        p = _lower(_first_text(policy, "p"))
        if p is None:
            errors.append("policy_published has no <p>")
        pct_text = _first_text(policy, "pct")
        pct = _parse_count(pct_text) if pct_text else None
        if pct_text and (pct is None or pct > 100):
            errors.append(f"policy_published pct {pct_text!r} is not a percentage; ignored")
            pct = None
        if self.namespace and self.namespace not in KNOWN_NAMESPACES:
            errors.append(f"unknown XML namespace {self.namespace!r} on <feedback>; read as DMARC anyway")
        if self.root_name != "feedback":
            errors.append(f"<feedback> is wrapped in <{self.root_name}>; read anyway")
        errors.extend(text for text in (_as_text(e) for e in _all(metadata, "error")) if text)
        errors.extend(f"invalid XML repaired: {problem}" for problem in xml_problems[:20])
        errors.extend(notes)
        errors.extend(self.record_errors)
        if self.record_index == 0:
            errors.append("report has no <record>")
        return DmarcAggregateEvent(
            report_id=report_id,
            org_name=org_name,
            domain=domain,
            policy=p,
            begin=begin,
            end=end,
            records=self.records,
            org_email=org_email,
            adkim=_lower(_first_text(policy, "adkim")) or "r",
            aspf=_lower(_first_text(policy, "aspf")) or "r",
            subdomain_policy=_lower(_first_text(policy, "sp")) or p,
            pct=pct,
            errors=errors[:MAX_ERRORS],
            fo=_first_text(policy, "fo"),
            np=_lower(_first_text(policy, "np")),
            testing=_lower(_first_text(policy, "testing")),
            discovery_method=_lower(_first_text(policy, "discovery_method")),
            extra_contact_info=_first_text(metadata, "extra_contact_info"),
            generator=_first_text(metadata, "generator"),
            schema=self.version or ("dmarc-2.0" if self.namespace == DMARC_2_NAMESPACE else "draft"),
        )


def _leaf(element: Any) -> str | None:
    """Stripped text of a text field; None when empty or holding markup
    (recovered garbage such as `<header_from>bad<xml.net</header_from>`)."""
    if len(element):
        return None
    text = element.text
    return (text.strip() or None) if text else None


def _leaves(element: Any, names: tuple[str, ...]) -> list[str | None]:
    """The first text of each named child, in the order of `names`."""
    values: list[str | None] = [None] * len(names)
    for child in element:
        name = _local(child.tag)
        if name in names:
            i = names.index(name)
            if values[i] is None:
                values[i] = _leaf(child)
    return values


def _element_fields(element: Any, kind: str) -> dict[str, Any]:
    """The DMARC fields of an element as a small dict: text leaves become
    their stripped text (None when empty or holding markup), known
    containers a dict of their own, repeated names a _Repeated list."""
    fields: dict[str, Any] = {}
    children = _SCHEMA[kind]
    for child in element:
        tag = child.tag
        if type(tag) is not str:
            continue
        name = tag if tag[0] != "{" else tag[tag.index("}") + 1:]
        child_kind = children.get(name)
        if child_kind is None:
            continue
        if child_kind:
            value: Any = _element_fields(child, child_kind)
        elif len(child):
            value = None  # markup inside a text field: recovered garbage, not a value
        else:
            text = child.text
            value = text.strip() or None if text else None
        existing = fields.get(name, _NOTHING)
        if existing is _NOTHING:
            fields[name] = value
        elif type(existing) is _Repeated:
            if len(existing) < MAX_REPEATS:
                existing.append(value)
        else:
            fields[name] = _Repeated((existing, value))
    return fields


class _Repeated(list):
    """Several elements of the same name (dkim/spf results, reasons, errors)."""

    __slots__ = ()


# --- field helpers -------------------------------------------------------------

def _all(fields: dict[str, Any], name: str) -> list[Any]:
    value = fields.get(name, _NOTHING)
    if value is _NOTHING:
        return []
    return value if type(value) is _Repeated else [value]


def _first(fields: dict[str, Any], name: str) -> Any:
    value = fields.get(name)
    if type(value) is _Repeated:
        return value[0]
    return value


def _first_dict(fields: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = _first(fields, name)
    return value if isinstance(value, dict) else None


def _first_text(fields: dict[str, Any], name: str) -> str | None:
    value = _first(fields, name)
    return value if isinstance(value, str) else None


def _as_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _lower(value: str | None) -> str | None:
    return value.lower() if value else value


@lru_cache(maxsize=4096)
def _normalize_v6(text: str) -> str | None:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


def _normalize_ip(text: str) -> str | None:
    """Canonical text of an IPv4/IPv6 address, None when it is not one."""
    if ":" in text:
        if "%" in text:
            return None
        return _normalize_v6(text.lower()) if len(text) <= 45 else None
    parts = text.split(".")
    if len(parts) != 4:
        return None
    for part in parts:
        if not part.isdigit() or not part.isascii() or len(part) > 3 or int(part) > 255 or (len(part) > 1 and part[0] == "0"):
            return None
    return text


def _parse_count(text: str | None) -> int | None:
    """A whole number written in ASCII digits, None otherwise. Beyond 30 digits
    the exact value does not matter (and int() of a long digit string is slow)."""
    if text is None or not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= 30 else 10**30


def _domain_text(value: str | None) -> str | None:
    """A domain field, lower-cased, without the U+FFFD libxml2 puts in place of
    bytes that are not UTF-8: they are dropped, as parsedmarc drops them."""
    if not value:
        return value
    if "\ufffd" in value:
        value = value.replace("\ufffd", "")
    return value.lower()


# A report's interval lies between the first DMARC drafts and a far future;
# a Unix time outside this is garbage (milliseconds, negative, overflow).
_MIN_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_TIME = datetime(2200, 1, 1, tzinfo=timezone.utc)


def _parse_time(text: str | None, which: str) -> datetime:
    if text is None:
        raise ReportError(f"DMARC aggregate report has no date_range <{which}>")
    whole = text.split(".", 1)[0] if text[:1].isdigit() else text
    value: datetime | None = None
    if whole.isascii() and whole.isdigit():
        try:
            value = datetime.fromtimestamp(int(whole), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            value = None
    else:
        try:  # a few reporters write ISO 8601 instead of Unix time
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if value.tzinfo is None:
                value = value.replace(tzinfo=timezone.utc)
            value = value.astimezone(timezone.utc)
        except ValueError:
            value = None
    if value is None or not (_MIN_TIME <= value < _MAX_TIME):
        raise ReportError(f"date_range <{which}> {text[:40]!r} is not a Unix time")
    return value


def _clean_report_id(text: str | None) -> str | None:
    """Report ids written like Message-IDs (<id@host>) keep only the id part,
    as other DMARC tools store them, so duplicates are recognised."""
    if text is None:
        return None
    return text.replace("<", "").replace(">", "").split("@")[0].strip() or None


def _organisation(org_name: str | None, org_email: str | None) -> str | None:
    """The reporter: its organisational domain when org_name is a domain name
    (so "Outlook.com" and "outlook.com" are one reporter), else org_name as
    written; the e-mail domain when org_name is empty."""
    if not org_name and org_email and "@" in org_email:
        org_name = org_email.rsplit("@", 1)[1].strip().strip(">") or None
    if not org_name:
        return None
    if " " not in org_name:
        base = _organisational_domain(org_name.lower())
        if base:
            return base
    return org_name


@lru_cache(maxsize=1024)
def _organisational_domain(name: str) -> str | None:
    return _public_suffix_list().privatesuffix(name)


@lru_cache(maxsize=1)
def _public_suffix_list():
    from publicsuffixlist import PublicSuffixList  # loaded once, only when a domain needs it

    return PublicSuffixList()
