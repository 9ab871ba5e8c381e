"""Issue 14: operator mistakes and hostile counts that must fail early and clearly."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from monitor.core.config import ConfigError, resolve_secret
from monitor.core.db import make_engine
from monitor.core.runtime import Runtime
from monitor.ingest.jobs import provide
from monitor.ingest.settings import MailboxConfig, SuppressionConfig
from parsers.events import TlsReportEvent, UnparseableEvent
from parsers.reports import parse_report_bytes
from parsers.reports.tls import MAX_SESSION_COUNT

TLS_REPORT: dict[str, Any] = {
    "organization-name": "Receiver Inc.",
    "date-range": {"start-datetime": "2025-02-01T00:00:00Z", "end-datetime": "2025-02-01T23:59:59Z"},
    "contact-info": "tlsrpt@receiver.example",
    "report-id": "r-1",
    "policies": [{
        "policy": {"policy-type": "sts", "policy-domain": "example.com"},
        "summary": {"total-successful-session-count": 900, "total-failure-session-count": 12},
    }],
}


def test_binary_password_file_names_the_secret(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_bytes(b"\xff\xfe\x00binary\x80")
    with pytest.raises(ConfigError, match=r"mailbox m password: .*pw.* is not UTF-8 text"):
        resolve_secret("mailbox m password", None, None, secret)


def test_sqlite_in_missing_directory_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "dir"
    with pytest.raises(ConfigError, match=f"{missing}.*does not exist"):
        make_engine(f"sqlite:///{missing}/x.db")
    assert not missing.exists()
    make_engine(f"sqlite:///{missing}/x.db", create_dir=True).dispose()  # [database] create_dir = true
    assert missing.is_dir()


def test_mailbox_secrets_are_checked_at_start_up(tmp_path: Path) -> None:
    mailbox = MailboxConfig(host="imap.example", username="u", password_env="REPMON_TEST_UNSET_PW_14")
    with pytest.raises(ConfigError, match="mailbox u@imap.example password: environment variable"):
        provide(Runtime(None), mailboxes=[mailbox], folders=[],  # type: ignore[arg-type]
                suppression=SuppressionConfig())


@pytest.mark.parametrize("field", ["total-successful-session-count", "total-failure-session-count"])
def test_tls_session_counts_are_capped(field: str) -> None:
    report = copy.deepcopy(TLS_REPORT)
    report["policies"][0]["summary"][field] = 9223372036854775807
    events = parse_report_bytes(json.dumps(report).encode())
    assert isinstance(events[0], UnparseableEvent)
    assert "above 1,000,000,000" in events[0].error
    report["policies"][0]["summary"][field] = 10**9
    assert isinstance(parse_report_bytes(json.dumps(report).encode())[0], TlsReportEvent)
    assert MAX_SESSION_COUNT == 10**9
