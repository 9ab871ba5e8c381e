"""DMARC aggregate, DMARC failure and SMTP TLS (RFC 8460) reports.

Two entry points:

- `parse_report_bytes(data)`: a report file (zip, gzip, XML or JSON,
  recognised by content, never by name) -> DmarcAggregateEvent /
  TlsReportEvent, one per report found; whatever cannot be read becomes an
  UnparseableEvent with the reason. Never raises.
- `parse_report_chunks(chunks)`: the same for a bare XML or JSON document
  read as a stream (a large file is never held whole).
- `parse_report_mail(msg)`: the reports a mail carries (attachments, DMARC
  failure reports) or None when it carries none.

Aggregate records can be given where their mail came from (country, AS,
sending service) by parsers.reports.sources.

Modules: files (report files), containers (bounded zip/gzip streams), aggregate
(streaming XML), tls (JSON), failure (failure reports in mail), from_mail
(attachments).
"""

from __future__ import annotations

from parsers.reports.containers import DEFAULT_LIMITS, Limits, ReportError
from parsers.reports.files import parse_report_bytes, parse_report_chunks
from parsers.reports.from_mail import parse_report_mail

__all__ = ["parse_report_bytes", "parse_report_chunks", "parse_report_mail", "Limits", "DEFAULT_LIMITS", "ReportError"]
