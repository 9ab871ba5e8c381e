"""SMTP TLS reports (RFC 8460): one JSON document in, one TlsReportEvent out.

RFC 8460 section 4.4 defines the fields. What a receiver needs to act on is
required (organization-name, report-id, each policy's policy-domain and
both session counts); a report missing any of those, or with counts that
are not whole numbers or are above MAX_SESSION_COUNT (10**9, like a DMARC
record's count), is refused with the path of the offending field.
Fields the RFC marks required but nothing here depends on (contact-info,
date-range) are read when present and noted in the event's `errors` otherwise.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from parsers.events import TlsPolicy, TlsReportEvent
from parsers.reports.containers import ReportError

POLICY_TYPES = frozenset({"tlsa", "sts", "no-policy-found"})
MAX_POLICIES = 10_000
MAX_FAILURE_DETAILS = 10_000  # per policy
# Like a DMARC record's count (parsers/reports/aggregate.py MAX_COUNT): more sessions
# than any receiver sees in a day, and sums of such values overflow storage.
MAX_SESSION_COUNT = 10**9

# RFC 8460 failure-details keys -> our snake_case names. Reporters also send
# the non-RFC "additional-info-uri"; both end up as additional_information.
_DETAIL_KEYS = {
    "result-type": "result_type",
    "sending-mta-ip": "sending_mta_ip",
    "receiving-mx-hostname": "receiving_mx_hostname",
    "receiving-mx-helo": "receiving_mx_helo",
    "receiving-ip": "receiving_ip",
    "failed-session-count": "failed_session_count",
    "additional-information": "additional_information",
    "additional-info-uri": "additional_information",
    "failure-reason-code": "failure_reason_code",
}


def looks_like_tls_report(document: Any) -> bool:
    return isinstance(document, dict) and ("organization-name" in document or "policies" in document)


def parse_tls_json(data: bytes) -> TlsReportEvent:
    """Decode and read one TLS report; ReportError says what is wrong."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReportError(f"JSON is not UTF-8 (byte {exc.start}): not an SMTP TLS report") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"JSON cannot be read: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise ReportError("JSON is nested too deeply") from None
    except ValueError as exc:  # a number of more than 4,300 digits (int() refuses it)
        raise ReportError(f"JSON cannot be read: {exc}"[:300]) from None
    return tls_report_from_document(document)


def tls_report_from_document(document: Any) -> TlsReportEvent:
    if not looks_like_tls_report(document):
        shape = type(document).__name__ if not isinstance(document, dict) else "an object with keys " + ", ".join(
            sorted(str(k) for k in document)[:8])
        raise ReportError(f"JSON is not an SMTP TLS report (no organization-name or policies; found {shape})")
    problems: list[str] = []
    organization = _required_text(document, "organization-name", "")
    report_id = _required_text(document, "report-id", "")
    policies_value = document.get("policies")
    if not isinstance(policies_value, list):
        raise ReportError(f"TLS report policies must be a list, not {_kind(policies_value)}")
    if len(policies_value) > MAX_POLICIES:
        raise ReportError(f"TLS report has {len(policies_value)} policies, more than {MAX_POLICIES}")
    policies = [_policy(item, f"policies[{i}]", problems) for i, item in enumerate(policies_value)]
    begin = end = None
    date_range = document.get("date-range")
    if isinstance(date_range, dict):
        begin = _datetime(date_range.get("start-datetime"), "date-range.start-datetime", problems)
        end = _datetime(date_range.get("end-datetime"), "date-range.end-datetime", problems)
    else:
        problems.append("date-range is missing")
    contact = document.get("contact-info")
    if contact is not None and not isinstance(contact, str):
        problems.append(f"contact-info is {_kind(contact)}, not text; ignored")
        contact = None
    return TlsReportEvent(
        report_id=report_id,
        organization_name=organization,
        policies=policies,
        begin=begin,
        end=end,
        contact_info=contact,
        errors=problems,
    )


def _policy(item: Any, where: str, problems: list[str]) -> TlsPolicy:
    if not isinstance(item, dict):
        raise ReportError(f"TLS report {where} is {_kind(item)}, not an object")
    policy = item.get("policy")
    if not isinstance(policy, dict):
        raise ReportError(f"TLS report {where}.policy is missing or not an object")
    domain = _required_text(policy, "policy-domain", f"{where}.policy.").lower().rstrip(".")
    policy_type = policy.get("policy-type")
    if not isinstance(policy_type, str) or policy_type.lower() not in POLICY_TYPES:
        problems.append(f"{where}.policy.policy-type {policy_type!r} is not one of {', '.join(sorted(POLICY_TYPES))}")
        policy_type = policy_type if isinstance(policy_type, str) else None
    else:
        policy_type = policy_type.lower()
    summary = item.get("summary")
    if not isinstance(summary, dict):
        raise ReportError(f"TLS report {where}.summary is missing or not an object")
    successful = _count(summary.get("total-successful-session-count"), f"{where}.summary.total-successful-session-count")
    failed = _count(summary.get("total-failure-session-count"), f"{where}.summary.total-failure-session-count")
    details_value = item.get("failure-details", [])
    if not isinstance(details_value, list):
        raise ReportError(f"TLS report {where}.failure-details is {_kind(details_value)}, not a list")
    if len(details_value) > MAX_FAILURE_DETAILS:
        raise ReportError(f"TLS report {where} has more than {MAX_FAILURE_DETAILS} failure-details")
    details = [_detail(d, f"{where}.failure-details[{i}]", problems) for i, d in enumerate(details_value)]
    strings = policy.get("policy-string")
    patterns = policy.get("mx-host-pattern", policy.get("mx-host"))
    return TlsPolicy(
        policy_domain=domain,
        policy_type=policy_type,
        successful_session_count=successful,
        failed_session_count=failed,
        failure_details=details,
        policy_strings=_text_list(strings),
        mx_host_patterns=_text_list(patterns),
    )


def _detail(item: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ReportError(f"TLS report {where} is {_kind(item)}, not an object")
    out: dict[str, Any] = {}
    for key, name in _DETAIL_KEYS.items():
        value = item.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue  # reporters send "" for fields that do not apply
        if name == "failed_session_count":
            value = _count(value, f"{where}.{key}")
        elif not isinstance(value, str):
            problems.append(f"{where}.{key} is {_kind(value)}, not text; ignored")
            continue
        out.setdefault(name, value)
    if "result_type" not in out:
        raise ReportError(f"TLS report {where} has no result-type")
    out.setdefault("failed_session_count", 0)
    return out


def _required_text(document: dict[str, Any], key: str, where: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value.strip():
        state = "missing" if value is None else f"{_kind(value)}, not text" if not isinstance(value, str) else "empty"
        raise ReportError(f"TLS report {where}{key} is {state}")
    return value.strip()


def _count(value: Any, where: str) -> int:
    # JSON numbers only; bool is an int subclass in Python, and 1.5 sessions is nonsense
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportError(f"TLS report {where} is {repr(value)[:30]}, not a whole number of sessions")
    if value > MAX_SESSION_COUNT:
        raise ReportError(f"TLS report {where} is {repr(value)[:30]}, above {MAX_SESSION_COUNT:,}: "
                          "not a whole number of sessions any receiver sees; report refused")
    return value


def _datetime(value: Any, where: str, problems: list[str]) -> datetime | None:
    if not isinstance(value, str):
        problems.append(f"{where} is missing")
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        problems.append(f"{where} {value[:40]!r} is not an RFC 3339 date-time; ignored")
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _text_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)][:1000]
    return []


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)
