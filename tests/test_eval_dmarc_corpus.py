"""Evaluation: every sample of ../shared/corpus/dmarc read by parsers.reports
agrees with parsedmarc 11.1.0's reading of it (expected/) on the contract
fields. Skips where the shared folder is absent.

Contract fields compared:
- aggregate: report_id, org_name, domain, policy (p), begin, end, and per
  record source_ip, count, disposition, dkim, spf (policy evaluated), header_from;
- failure: reported_domain, source_ip, feedback_type, auth_failure;
- SMTP TLS: report_id, organization_name, and per policy policy_domain,
  successful and failed session counts;
- a sample parsedmarc rejects must come out as unparseable;
- aggregate records' source_* fields (country, ASN, AS name and domain,
  service name and type) against parsedmarc's offline `source`.

parsedmarc renders aggregate dates in the process time zone (UTC when
expected/ was made) as "YYYY-MM-DD HH:MM:SS"; auth_failure is a list there.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parsers.events import DmarcAggregateEvent, DmarcFailureEvent, TlsReportEvent, UnparseableEvent
from parsers.mime import parse_message
from parsers.reports import parse_report_bytes, parse_report_mail
from parsers.reports.sources import IpEnricher, enrich_events

pytestmark = pytest.mark.evaluation


def _corpus(shared_dir: Path) -> Path:
    corpus = shared_dir / "corpus" / "dmarc"
    if not (corpus / "MANIFEST.json").is_file():
        pytest.skip(f"{corpus} has no MANIFEST.json")
    return corpus


def _manifest(shared_dir: Path) -> list[dict]:
    return json.loads((_corpus(shared_dir) / "MANIFEST.json").read_text())


def _parse(corpus: Path, entry: dict) -> list:
    data = (corpus / entry["sample"]).read_bytes()
    if entry["container"] == "eml":
        return parse_report_mail(parse_message(data)) or []
    return parse_report_bytes(data)


def _ip(text: str | None) -> str | None:
    return str(ipaddress.ip_address(text)) if text else text


def _stamp(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _aggregate_view_expected(report: dict) -> dict:
    meta, policy = report["report_metadata"], report["policy_published"]
    return {
        "report_id": meta["report_id"], "org_name": meta["org_name"], "domain": policy["domain"],
        "policy": policy["p"], "begin": meta["begin_date"], "end": meta["end_date"],
        "records": [
            (_ip(r["source"]["ip_address"]), r["count"], r["policy_evaluated"]["disposition"],
             r["policy_evaluated"]["dkim"], r["policy_evaluated"]["spf"], r["identifiers"]["header_from"])
            for r in report["records"]
        ],
    }


def _aggregate_view_ours(event: DmarcAggregateEvent) -> dict:
    return {
        "report_id": event.report_id, "org_name": event.org_name, "domain": event.domain,
        "policy": event.policy, "begin": _stamp(event.begin), "end": _stamp(event.end),
        "records": [(r.source_ip, r.count, r.disposition, r.dkim, r.spf, r.header_from) for r in event.records],
    }


def _failure_view_expected(report: dict) -> dict:
    return {
        "reported_domain": report["reported_domain"], "source_ip": _ip(report["source"]["ip_address"]),
        "feedback_type": report["feedback_type"], "auth_failure": ",".join(report["auth_failure"]),
    }


def _failure_view_ours(event: DmarcFailureEvent) -> dict:
    return {"reported_domain": event.reported_domain, "source_ip": event.source_ip,
            "feedback_type": event.feedback_type, "auth_failure": event.auth_failure}


def _tls_view_expected(report: dict) -> dict:
    return {
        "report_id": report["report_id"], "organization_name": report["organization_name"],
        "policies": [(p["policy_domain"], p["successful_session_count"], p["failed_session_count"])
                     for p in report["policies"]],
    }


def _tls_view_ours(event: TlsReportEvent) -> dict:
    return {
        "report_id": event.report_id, "organization_name": event.organization_name,
        "policies": [(p.policy_domain, p.successful_session_count, p.failed_session_count) for p in event.policies],
    }


_VIEWS: dict[str, tuple[type, Callable[[dict], dict], Callable[[Any], dict]]] = {
    "aggregate": (DmarcAggregateEvent, _aggregate_view_expected, _aggregate_view_ours),
    "failure": (DmarcFailureEvent, _failure_view_expected, _failure_view_ours),
    "smtp_tls": (TlsReportEvent, _tls_view_expected, _tls_view_ours),
}


def _disagreement(corpus: Path, entry: dict) -> str | None:
    """None when we agree with parsedmarc on this sample, else what differs."""
    expected = json.loads((corpus / entry["expected"]).read_text())
    events = _parse(corpus, entry)
    if "parsedmarc_error" in expected:
        if events and all(isinstance(e, UnparseableEvent) for e in events):
            return None
        return f"parsedmarc rejects it, we gave {[e.kind for e in events]}"
    kind = expected["report_type"]
    event_type, expected_view, our_view = _VIEWS[kind]
    ours = [e for e in events if isinstance(e, event_type)]
    if len(ours) != 1:
        return f"expected one {kind} report, got {[e.to_dict() for e in events]}"
    want, got = expected_view(expected["report"]), our_view(ours[0])
    if want != got:
        return f"differs:\n  parsedmarc: {want}\n  ours:       {got}"
    return None


def test_every_sample_agrees_with_parsedmarc(shared_dir: Path) -> None:
    corpus = _corpus(shared_dir)
    entries = _manifest(shared_dir)
    assert entries, "empty MANIFEST"
    failures = {}
    tally: dict[str, list[int]] = {}
    for entry in entries:
        problem = _disagreement(corpus, entry)
        agreed_total = tally.setdefault(entry["report_kind"], [0, 0])
        agreed_total[1] += 1
        if problem is None:
            agreed_total[0] += 1
        else:
            failures[entry["sample"]] = problem
    summary = ", ".join(f"{kind} {a}/{t}" for kind, (a, t) in sorted(tally.items()))
    print(f"DMARC corpus agreement with parsedmarc: {summary}")
    assert not failures, "\n".join(f"{name}: {problem}" for name, problem in failures.items())


def test_corpus_covers_every_report_kind(shared_dir: Path) -> None:
    kinds = {entry["report_kind"] for entry in _manifest(shared_dir)}
    assert {"aggregate", "failure", "smtp_tls"} <= kinds


_SOURCE_FIELDS = ("country", "asn", "as_name", "as_domain", "name", "type", "reverse_dns", "base_domain")


def test_record_sources_agree_with_parsedmarc(shared_dir: Path) -> None:
    """source_* of every aggregate record equal parsedmarc's `source` offline
    (its bundled IPinfo Lite database and reverse-DNS service map)."""
    corpus = _corpus(shared_dir)
    enricher = IpEnricher()
    compared = 0
    differences = []
    for entry in _manifest(shared_dir):
        expected = json.loads((corpus / entry["expected"]).read_text())
        if expected.get("report_type") != "aggregate":
            continue
        [event] = [e for e in _parse(corpus, entry) if isinstance(e, DmarcAggregateEvent)]
        enrich_events([event], enricher)
        for want, record in zip(expected["report"]["records"], event.records, strict=True):
            theirs = {name: want["source"][name] for name in _SOURCE_FIELDS}
            ours = {name: getattr(record, f"source_{name}") for name in _SOURCE_FIELDS}
            compared += 1
            if theirs != ours:
                differences.append(f"{entry['sample']} {record.source_ip}: parsedmarc {theirs}, ours {ours}")
    print(f"record sources compared with parsedmarc: {compared}, differing: {len(differences)}")
    assert compared and not differences, "\n".join(differences)
