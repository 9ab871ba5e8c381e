"""Issue 14: one folder holding every poison at once, read by `repmon run --once`
as a user runs it. Good messages are all stored; each bad one is quarantined
with its reason or stored harmlessly; nothing hangs, nothing stops the pass."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import col

from monitor.core.db import make_engine, session_scope
from monitor.storage.models import StoredEvent, Suppression
from tests.fixtures._hostile import mass_dsn
from tests.fixtures.feedback_messages import BASE_DATE, arf_report, mixed_batch
from tests.ingest_helpers import expected_events, quarantine_reasons, stored_events

ROOT = Path(__file__).resolve().parents[1]


def overflowing_dmarc() -> bytes:
    begin = int(BASE_DATE.timestamp())
    record = ("<record><row><source_ip>192.0.2.10</source_ip><count>9223372036854775807</count>"
              "<policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf>"
              "</policy_evaluated></row><identifiers><header_from>news.example.com</header_from></identifiers>"
              "<auth_results><spf><domain>news.example.com</domain><result>pass</result></spf></auth_results></record>")
    xml = (f"<?xml version=\"1.0\"?><feedback><report_metadata><org_name>isp.example</org_name>"
           f"<email>d@isp.example</email><report_id>overflow</report_id><date_range><begin>{begin}</begin>"
           f"<end>{begin + 86400}</end></date_range></report_metadata><policy_published>"
           f"<domain>news.example.com</domain><p>none</p></policy_published>{record}{record}</feedback>")
    return gzip.compress(xml.encode(), mtime=0)


def html_bounce() -> bytes:
    return ("From: MAILER-DAEMON@mx.example.net\r\nTo: bounces@news.example.com\r\nSubject: Undeliverable\r\n"
            "Date: Mon, 01 Dec 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n"
            "<html><body>Delivery has failed to these recipients: html@example.org "
            + "<" * 200_000 + "</body></html>\r\n").encode()


def huge_from_auto_reply() -> bytes:
    return ("From: " + "a" * 100_000 + "@example.org\r\nTo: news@news.example.com\r\nSubject: Out of office\r\n"
            "Date: Mon, 01 Dec 2025 10:00:00 +0000\r\nAuto-Submitted: auto-replied\r\n\r\nI am away.\r\n").encode()


def year_one_arf() -> bytes:
    return re.sub(rb"(Date: )[^\r\n]+", rb"\g<1>Mon, 01 Jan 0001 00:00:00 +0000", arf_report("ancient@example.org"))


def repmon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_a_folder_of_every_poison_at_once(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    good = mixed_batch(30, prefix="good")
    for i, raw in enumerate(good[:-1]):
        (drop / f"good{i}.eml").write_bytes(raw)
    with open(os.path.join(os.fsencode(drop), b"good-\xff\xfe.eml"), "wb") as handle:  # not UTF-8
        handle.write(good[-1])
    os.mkfifo(drop / "fifo.eml")
    (drop / "zero.eml").symlink_to("/dev/zero")
    (drop / "forged-dsn.eml").write_bytes(mass_dsn(100_000))
    (drop / "overflow.xml.gz").write_bytes(overflowing_dmarc())
    (drop / "year-one-arf.eml").write_bytes(year_one_arf())
    harmless = [html_bounce(), huge_from_auto_reply()]
    (drop / "html-bounce.eml").write_bytes(harmless[0])
    (drop / "huge-from.eml").write_bytes(harmless[1])
    config = tmp_path / "repmon.toml"
    config.write_text('[database]\nurl = "sqlite:///repmon.db"\n[[folders]]\npath = "drop"\n')

    started = datetime.now(UTC)
    done = repmon("run", "--once", "--config", str(config))
    assert done.returncode == 0, done.stderr

    engine = make_engine(f"sqlite:///{tmp_path / 'repmon.db'}")
    try:
        # every good message (and the harmless hostile ones) stored, as the parsers read them
        assert stored_events(engine) == expected_events(good + harmless + [year_one_arf()])
        reasons = sorted(quarantine_reasons(engine))
        assert len(reasons) == 4, reasons
        assert any(r.startswith("a FIFO") for r in reasons)
        assert any(r.startswith("a character device") for r in reasons)
        assert any("100,000 recipients" in r and "max_recipients_per_report = 100" in r for r in reasons)
        assert any("above 1,000,000,000" in r for r in reasons)
        with session_scope(engine) as session:
            suppressed = set(session.execute(select(col(Suppression.address))).scalars())
            assert not any(a.startswith("v") and a.endswith("@example.org") for a in suppressed)  # none of 100k
            assert "html@example.org" not in suppressed  # a soft guess suppresses nobody
            ancient = session.execute(select(col(StoredEvent.occurred_at), col(StoredEvent.details))
                                      .where(col(StoredEvent.recipient) == "ancient@example.org")).one()
            assert ancient.occurred_at >= started - timedelta(seconds=5)  # clamped, not year 1/2001
            assert "occurred_at_note" in ancient.details
            assert session.execute(select(func.count()).select_from(Suppression)).scalar_one() < 30
    finally:
        engine.dispose()

    again = repmon("run", "--once", "--config", str(config))
    assert again.returncode == 0, again.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'repmon.db'}")
    try:
        assert len(quarantine_reasons(engine)) == 4  # nothing read or quarantined twice
    finally:
        engine.dispose()
