"""Issue 14: hostile input meets storage (SQLite and PostgreSQL): counts that
overflow, reports that collide, names that are not UTF-8, dates from year 1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from monitor.core.db import session_scope
from monitor.health.rollup import Rollup
from monitor.health.subjects import DomainMapper
from monitor.health.windows import read_windows, total_of
from monitor.storage import ledger
from monitor.storage.models import DmarcRecord, DmarcReport, ProcessedMessage, QuarantinedMessage, StoredEvent
from monitor.storage.rows import event_row
from parsers.events import DmarcAggregateEvent, FeedbackEvent
from parsers.events import DmarcRecord as Record
from tests.fixtures._health_rows import T0, add_dmarc

HUGE = 9223372036854775807


def test_overflowing_dmarc_counts_do_not_stop_the_rollup(engine):
    # Stored before the parser refused such counts (or written by hand): the
    # roll-up caps each row at 10**9 instead of failing on SUM().
    for _ in range(2):  # PostgreSQL: only storable once the column is BIGINT
        add_dmarc(engine, domain="example.com", source_ip="127.0.0.2", count=HUGE,
                  dkim="pass", spf="pass", begin=T0 - 86400)
    Rollup(engine, mapper=DomainMapper(["example.com"]), own_ips={"127.0.0.2"}).run(T0)
    with engine.connect() as conn:
        week = read_windows(conn, T0, windows=("7d",))["7d"]
    assert total_of(week[("domain", "example.com")]).dmarc_messages == 2 * 10**9


def test_dmarc_and_tls_counts_are_64_bit(engine):
    add_dmarc(engine, domain="example.com", source_ip="127.0.0.2", count=5_000_000_000, dkim="pass", spf="pass",
              begin=T0)
    with session_scope(engine) as session:
        assert session.execute(select(DmarcRecord.count)).scalar_one() == 5_000_000_000


def _report(*counts: int) -> DmarcAggregateEvent:
    begin = datetime(2025, 3, 1, tzinfo=UTC)
    return DmarcAggregateEvent(
        report_id="same-id", org_name="google.com", domain="example.com", policy="reject", begin=begin,
        end=begin + timedelta(days=1),
        records=[Record(source_ip="192.0.2.1", count=c, disposition="none", dkim="pass", spf="pass",
                        header_from="example.com") for c in counts])


def _message(session, sha: str) -> int:
    row = ProcessedMessage(content_sha256=sha * 64, size=1, source="t", outcome="stored")
    session.add(row)
    session.flush()
    assert row.id is not None
    return row.id


def test_a_forged_report_arriving_first_does_not_hide_the_genuine_one(engine):
    with session_scope(engine) as session:
        forged = ledger.store_dmarc_report(session, _report(1), _message(session, "a"))
        genuine = ledger.store_dmarc_report(session, _report(500, 20), _message(session, "b"))
        resent = ledger.store_dmarc_report(session, _report(500, 20), _message(session, "c"))  # same content
    assert (forged, genuine, resent) == (1, 1, 0)
    with session_scope(engine) as session:
        reports = session.execute(select(DmarcReport).order_by(DmarcReport.id)).scalars().all()
        assert len(reports) == 2
        assert reports[0].conflict_of is None
        assert reports[1].conflict_of == reports[0].id  # flagged: same org/domain/report id, other content
        assert sorted(session.execute(select(DmarcRecord.count)).scalars()) == [1, 20, 500]


def test_quarantine_of_a_non_utf8_file_name_never_fails(engine):
    name = "/drop/bad-\udcff\udcfe.eml"  # os.fsdecode of b"bad-\xff\xfe.eml"
    with session_scope(engine) as session:
        ledger.quarantine(session, content_sha256="d" * 64, source="folder:\udcff", folder=None, uid=None,
                          size=3, reason="x\udcff", raw=b"abc", location=name, header_message_id=None,
                          subject="s\udcff", quarantined_at=datetime.now(UTC))
    with session_scope(engine) as session:
        row = session.execute(select(QuarantinedMessage)).scalar_one()
    assert row.location == "/drop/bad-\\xff\\xfe.eml"  # lossless: the bytes can be rebuilt
    assert row.source == "folder:\\xff" and row.reason == "x\\xff" and row.subject == "s\\xff"


def test_an_event_dated_year_1_is_clamped_to_when_it_was_read(engine):
    arf = FeedbackEvent(recipient="x@example.org", feedback_type="abuse")
    before = datetime.now(UTC)
    dates = [datetime(1, 1, 1, tzinfo=UTC), datetime(2001, 1, 1, tzinfo=UTC),  # "0001" as email.utils reads it
             datetime(2024, 6, 3, tzinfo=UTC)]
    with session_scope(engine) as session:
        pk = _message(session, "e")
        stored = ledger.insert_events(session, [event_row(arf, message_pk=pk, occurred_at=d) for d in dates])
    assert all(row.occurred_at >= before - timedelta(seconds=1) for row in stored[:2])
    assert stored[2].occurred_at == dates[2]  # a plausible date is kept
    with session_scope(engine) as session:
        notes = [d.get("occurred_at_note") for d in
                 session.execute(select(StoredEvent.details).order_by(StoredEvent.id)).scalars()]
    assert "0001-01-01" in notes[0] and "2001-01-01" in notes[1] and notes[2] is None
