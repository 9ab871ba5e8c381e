"""Committing parsed messages: the ledger, events, reports, quarantine and the
suppressions they cause, in one transaction - on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from monitor.core.db import session_scope
from monitor.ingest import commit as commit_module
from monitor.ingest.commit import ImapPosition, commit_batch, commit_isolating
from monitor.ingest.messages import prepare
from monitor.ingest.settings import SuppressionConfig
from monitor.storage.models import (
    DmarcFailure,
    DmarcRecord,
    DmarcReport,
    MessageFailure,
    PendingMove,
    ProcessedMessage,
    QuarantinedMessage,
    SourceCheckpoint,
    StoredEvent,
    Suppression,
)
from monitor.storage.suppression import suppressed_addresses
from tests.fixtures.feedback_messages import (
    BASE_DATE,
    arf_report,
    auto_reply,
    broken_report,
    dmarc_aggregate_gz,
    dmarc_report_mail,
    dsn_bounce,
    plain_mail,
)

SETTINGS = SuppressionConfig(soft_bounce_count=3, soft_bounce_min_days=3, soft_expiry_days=30)


def count(engine, model, *where) -> int:
    with session_scope(engine) as session:
        return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def commit(engine, raws, **kw):
    return commit_batch(engine, "test", [prepare(r) for r in raws], SETTINGS, **kw)


def test_events_and_suppressions_in_one_go(engine):
    result = commit(engine, [
        dsn_bounce("hard@example.org"),
        arf_report("complainer@example.org"),
        arf_report("leaver@example.org", feedback_type="opt-out"),
        arf_report("auth@example.org", feedback_type="auth-failure"),
        auto_reply("away@example.org"),
        plain_mail("1"),
    ])
    assert (result.stored, result.quarantined, result.duplicates) == (6, 0, 0)
    with session_scope(engine) as session:
        kinds = sorted(session.execute(select(StoredEvent.kind)).scalars())
        assert kinds == ["auto_reply", "bounce", "feedback", "feedback", "feedback", "not_bounce"]
        bounce = session.execute(select(StoredEvent).where(StoredEvent.kind == "bounce")).scalar_one()
        assert (bounce.recipient, bounce.recipient_domain, bounce.hard_or_soft) == ("hard@example.org", "example.org",
                                                                                    "hard")
        # the tracking token our sender stamped comes back as sending IP and campaign
        assert (bounce.sending_ip, bounce.campaign) == ("192.0.2.10", "spring")
        assert bounce.occurred_at == BASE_DATE  # the bounce's own Date header
        assert bounce.details["status"] == "5.1.1"
        complaints = session.execute(select(StoredEvent.recipient).where(StoredEvent.is_complaint.is_(True))).scalars().all()
        assert complaints == ["complainer@example.org"]  # never auth-failure or opt-out
        rows = {s.address: s for s in session.execute(select(Suppression)).scalars()}
    assert {a: r.reason for a, r in rows.items()} == {
        "hard@example.org": "hard_bounce", "complainer@example.org": "complaint", "leaver@example.org": "opt_out"}
    assert all(r.source_event_id is not None and r.expires_at is None for r in rows.values())
    assert count(engine, DmarcFailure) == 1  # the auth-failure ARF is a DMARC failure report too


def test_same_message_twice_counts_once(engine):
    raw = dsn_bounce("twice@example.org")
    first = commit(engine, [raw, raw])  # even inside one batch
    second = commit(engine, [raw])
    assert (first.stored, first.duplicates, second.stored, second.duplicates) == (1, 1, 0, 1)
    assert count(engine, StoredEvent) == 1
    assert count(engine, ProcessedMessage) == 1
    with session_scope(engine) as session:
        assert session.execute(select(Suppression.count)).scalar_one() == 1


def test_unparseable_is_quarantined_with_reason_and_bytes(engine):
    raw = broken_report("x")
    result = commit(engine, [raw], location=lambda p: "/some/where")
    assert (result.stored, result.quarantined) == (0, 1)
    with session_scope(engine) as session:
        row = session.execute(select(QuarantinedMessage)).scalar_one()
        ledger = session.execute(select(ProcessedMessage)).scalar_one()
    assert "gzip" in row.reason and row.raw == raw and row.location == "/some/where"
    assert ledger.outcome == "quarantined"
    assert commit(engine, [raw]).duplicates == 1 and count(engine, QuarantinedMessage) == 1


def test_dmarc_report_stored_once_whatever_the_wrapper(engine):
    commit(engine, [dmarc_report_mail("rep-1")])
    result = commit(engine, [dmarc_aggregate_gz("rep-1")])  # same report, bare file this time
    assert result.stored == 1 and result.duplicates == 0  # a new message...
    assert count(engine, DmarcReport) == 1  # ...but the same report
    assert count(engine, DmarcRecord) == 2
    with session_scope(engine) as session:
        ips = sorted(session.execute(select(DmarcRecord.source_ip)).scalars())
    assert ips == ["192.0.2.10", "192.0.2.11"]


def soft(recipient: str, days: float, status: str = "4.2.2", text: str = "Mailbox full",
         action: str = "failed") -> bytes:
    return dsn_bounce(recipient, status=status, reply="452", text=text, when=BASE_DATE + timedelta(days=days),
                      serial=f"{days}-", action=action)


def test_soft_bounces_suppress_only_when_repeated_over_days(engine):
    commit(engine, [soft("slow@example.org", 0), soft("slow@example.org", 1)])
    assert count(engine, Suppression) == 0
    commit(engine, [soft("slow@example.org", 3.5)])
    with session_scope(engine) as session:
        row = session.execute(select(Suppression)).scalar_one()
        assert row.reason == "soft_bounce" and row.detail == "mailboxfull"
        assert row.expires_at == BASE_DATE + timedelta(days=3.5 + 30)
        assert suppressed_addresses(session, ["slow@example.org"], at=BASE_DATE + timedelta(days=10))
        assert not suppressed_addresses(session, ["slow@example.org"], at=BASE_DATE + timedelta(days=40))


def test_soft_bounces_on_one_day_do_not_suppress(engine):
    commit(engine, [soft("burst@example.org", d) for d in (0, 0.1, 0.2, 0.3, 0.4)])
    assert count(engine, Suppression) == 0


def test_sender_side_soft_bounces_do_not_count(engine):
    blocked = [soft("ok@example.org", d, status="4.7.1", text="Service unavailable, client host blocked using zen")
               for d in (0, 2, 4)]
    commit(engine, blocked)
    with session_scope(engine) as session:
        reasons = set(session.execute(select(StoredEvent.reason)).scalars())
    assert "mailboxfull" not in reasons and count(engine, StoredEvent) == 3
    assert count(engine, Suppression) == 0


def test_delay_warnings_never_count_towards_a_soft_suppression(engine):
    # One slow message yields a "delayed" DSN at every retry warning.
    commit(engine, [soft("queued@example.org", d, action="delayed") for d in (0, 2, 4)])
    with session_scope(engine) as session:
        actions = list(session.execute(select(StoredEvent.action)).scalars())
    assert actions == ["delayed"] * 3
    assert count(engine, Suppression) == 0
    commit(engine, [soft("queued@example.org", d) for d in (5, 6, 8)])  # then it really fails, repeatedly
    assert count(engine, Suppression) == 1


def test_a_delivery_in_between_restarts_the_soft_count(engine):
    commit(engine, [soft("back@example.org", 0), soft("back@example.org", 1)])
    with session_scope(engine) as session:  # the sender recorded a delivery on day 2
        session.add(StoredEvent(kind="delivery_success", recipient="back@example.org",
                                occurred_at=BASE_DATE + timedelta(days=2)))
    commit(engine, [soft("back@example.org", 4)])
    assert count(engine, Suppression) == 0


def test_batch_is_all_or_nothing(engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("suppression list unavailable")

    monkeypatch.setattr(commit_module, "apply_suppressions", broken)
    with pytest.raises(RuntimeError):
        commit(engine, [dsn_bounce("a@example.org"), arf_report("b@example.org")],
               imap=ImapPosition("INBOX", 7, "done", "bad", checkpoint_uid=2))
    for model in (ProcessedMessage, StoredEvent, Suppression, SourceCheckpoint, PendingMove):
        assert count(engine, model) == 0


def test_imap_progress_is_committed_with_the_events(engine):
    batch = [prepare(dsn_bounce("u1@example.org"), uid=11), prepare(broken_report("q"), uid=12)]
    result = commit_batch(engine, "imap:x", batch, SETTINGS,
                          imap=ImapPosition("INBOX", 77, "done", "bad", checkpoint_uid=15))
    assert result.moves == {"done": [11], "bad": [12]}
    with session_scope(engine) as session:
        checkpoint = session.execute(select(SourceCheckpoint)).scalar_one()
        moves = sorted(session.execute(select(PendingMove.uid, PendingMove.target)).all())
    assert (checkpoint.uidvalidity, checkpoint.last_uid) == (77, 15)
    assert moves == [(11, "done"), (12, "bad")]


def test_a_message_that_keeps_failing_is_quarantined_after_n_attempts(engine, monkeypatch):
    good, bad = dsn_bounce("good@example.org"), dsn_bounce("poison@example.org")
    real = commit_module.apply_suppressions

    def fails_for_poison(session, rows, settings):
        if any(r.recipient == "poison@example.org" for r in rows):
            raise ValueError("a bug triggered by this message")
        return real(session, rows, settings)

    monkeypatch.setattr(commit_module, "apply_suppressions", fails_for_poison)
    batch = [prepare(good, uid=1), prepare(bad, uid=2)]
    position = ImapPosition("INBOX", 1, "done", "bad", checkpoint_uid=2)
    first = commit_isolating(engine, "t", batch, SETTINGS, imap=position, max_attempts=3)
    assert first.result.stored == 1 and first.stopped_at == 1 and isinstance(first.error, ValueError)
    with session_scope(engine) as session:  # the good one is settled, the checkpoint stops before the bad one
        assert session.execute(select(SourceCheckpoint.last_uid)).scalar_one() == 1
    second = commit_isolating(engine, "t", batch[1:], SETTINGS, imap=position, max_attempts=3)
    assert second.stopped_at == 0
    third = commit_isolating(engine, "t", batch[1:], SETTINGS, imap=position, max_attempts=3)
    assert third.error is None and third.result.quarantined == 1
    assert third.result.moves == {"bad": [2]}
    with session_scope(engine) as session:
        row = session.execute(select(QuarantinedMessage)).scalar_one()
        assert "failed 3 times" in row.reason and "a bug triggered" in row.reason and row.raw == bad
        assert session.execute(select(SourceCheckpoint.last_uid)).scalar_one() == 2
    assert count(engine, MessageFailure) == 0  # settled: its failure count is cleared
    assert count(engine, StoredEvent, StoredEvent.recipient == "poison@example.org") == 0


def test_hostile_field_values_are_stored(engine):
    recipient = "nul\x00" + "x" * 400 + "@example.org"
    raw = dsn_bounce("a@example.org").replace(b"a@example.org", recipient.encode())
    result = commit(engine, [raw])
    assert result.stored == 1
