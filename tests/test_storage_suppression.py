"""The suppression-list API, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from monitor.core.db import session_scope
from monitor.storage.models import Suppression
from monitor.storage.suppression import (
    COMPLAINT,
    HARD_BOUNCE,
    SOFT_BOUNCE,
    SuppressionEntry,
    active_suppression_count,
    is_suppressed,
    suppress,
    suppress_many,
    suppressed_addresses,
    unsuppress,
)

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def test_bulk_check_returns_the_given_spelling(engine):
    with session_scope(engine) as session:
        suppress(session, "Bob@Example.COM", HARD_BOUNCE, "bounce", detail="user_unknown", seen_at=NOW)
    with session_scope(engine) as session:
        got = suppressed_addresses(session, ["bob@example.com", "BOB@example.com", "alice@example.com"])
    assert got == {"bob@example.com", "BOB@example.com"}


def test_bulk_check_of_many_addresses(engine):
    addresses = [f"user{i}@example.net" for i in range(1500)]
    with session_scope(engine) as session:
        suppress_many(session, [SuppressionEntry(a, COMPLAINT, "feedback", seen_at=NOW) for a in addresses[::3]])
    with session_scope(engine) as session:
        assert suppressed_addresses(session, addresses) == set(addresses[::3])
        assert active_suppression_count(session) == 500


def test_repeat_counts_and_keeps_first_seen(engine):
    with session_scope(engine) as session:
        suppress(session, "x@example.org", HARD_BOUNCE, "bounce", seen_at=NOW)
    with session_scope(engine) as session:
        suppress(session, "x@example.org", HARD_BOUNCE, "bounce", seen_at=NOW + timedelta(days=2))
    with session_scope(engine) as session:
        row = session.execute(select(Suppression)).scalar_one()
    assert (row.count, row.first_seen_at, row.last_seen_at) == (2, NOW, NOW + timedelta(days=2))
    assert row.expires_at is None and row.domain == "example.org"


def test_soft_suppression_expires_and_hard_reason_upgrades_it(engine):
    expiry = NOW + timedelta(days=30)
    with session_scope(engine) as session:
        suppress(session, "s@example.org", SOFT_BOUNCE, "bounce", seen_at=NOW, expires_at=expiry)
    with session_scope(engine) as session:
        assert is_suppressed(session, "s@example.org", at=NOW + timedelta(days=29))
        assert not is_suppressed(session, "s@example.org", at=NOW + timedelta(days=31))
        suppress(session, "s@example.org", COMPLAINT, "feedback", seen_at=NOW + timedelta(days=1))
    with session_scope(engine) as session:
        row = session.execute(select(Suppression)).scalar_one()
        assert (row.reason, row.expires_at, row.count) == (COMPLAINT, None, 2)
        assert is_suppressed(session, "s@example.org", at=NOW + timedelta(days=3650))


def test_soft_reason_never_weakens_a_hard_one(engine):
    with session_scope(engine) as session:
        suppress(session, "h@example.org", HARD_BOUNCE, "bounce", seen_at=NOW)
        suppress(session, "h@example.org", SOFT_BOUNCE, "bounce", seen_at=NOW, expires_at=NOW + timedelta(days=1))
    with session_scope(engine) as session:
        row = session.execute(select(Suppression)).scalar_one()
    assert (row.reason, row.expires_at) == (HARD_BOUNCE, None)


def test_same_address_twice_in_one_batch_is_one_row(engine):
    with session_scope(engine) as session:
        rows = suppress_many(session, [
            SuppressionEntry("d@example.org", SOFT_BOUNCE, "bounce", seen_at=NOW, expires_at=NOW + timedelta(days=5)),
            SuppressionEntry("D@example.org", HARD_BOUNCE, "bounce", seen_at=NOW + timedelta(hours=1)),
        ])
    assert list(rows) == ["d@example.org"]
    with session_scope(engine) as session:
        row = session.execute(select(Suppression)).scalar_one()
    assert (row.reason, row.count, row.expires_at) == (HARD_BOUNCE, 2, None)


def test_unsuppress(engine):
    with session_scope(engine) as session:
        suppress(session, "u@example.org", COMPLAINT, "feedback")
    with session_scope(engine) as session:
        assert unsuppress(session, "U@example.org")
        assert not unsuppress(session, "U@example.org")
        assert not is_suppressed(session, "u@example.org")


def test_rejects_unknown_reason_and_non_address(engine):
    with session_scope(engine) as session:
        with pytest.raises(ValueError):
            suppress(session, "a@example.org", "because", "x")
        with pytest.raises(ValueError):
            suppress(session, "not an address", HARD_BOUNCE, "x")
