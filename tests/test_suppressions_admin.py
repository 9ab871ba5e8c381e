"""The managed suppression list (monitor/storage/suppression_admin.py) on
SQLite and PostgreSQL: listing and search, show with the causing event and
its message, audited add/remove of addresses and domains, no re-suppression
by old evidence, export (Postfix access map checked with the real postmap)."""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from monitor.core.db import session_scope
from monitor.storage import suppression as storage_list
from monitor.storage import suppression_admin as admin
from monitor.storage.admin_models import SuppressedDomain, SuppressionAudit
from monitor.storage.models import FolderFile, ProcessedMessage, StoredEvent
from monitor.storage.suppression import COMPLAINT, HARD_BOUNCE, SOFT_BOUNCE, SuppressionEntry, suppress

NOW = datetime.now(UTC).replace(microsecond=0)


def store_event(session, recipient: str, *, kind: str = "bounce", reason: str = "userunknown",
                path: str | None = "/var/mail/drop/a.eml", sha: str | None = None) -> int:
    sha = sha or (recipient.encode().hex() + "0" * 64)[:64]
    message = ProcessedMessage(content_sha256=sha, size=100, source="folder:drop", outcome="stored",
                               header_message_id="<bounce-1@mx.example.net>")
    session.add(message)
    session.flush()
    if path:
        session.add(FolderFile(source="folder:drop", path=path, size=100, mtime_ns=1, content_sha256=sha))
    event = StoredEvent(kind=kind, occurred_at=NOW, recipient=recipient, recipient_domain=recipient.split("@")[1],
                        reason=reason, hard_or_soft="hard", message_id=message.id)
    session.add(event)
    session.flush()
    assert event.id is not None
    return event.id


def test_migration_creates_exactly_the_models(engine):
    tables = [SuppressionAudit.__table__, SuppressedDomain.__table__]
    mine = MetaData()
    for table in tables:
        table.to_metadata(mine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), mine)
    diff = [d for d in diff if not (d[0] == "remove_table" or (d[0] == "remove_index" and d[1].table.name not in
                                                                 ("suppression_audit", "suppressed_domains")))]
    assert diff == [], diff


def test_list_filters_search_and_paging(engine):
    with session_scope(engine) as session:
        for i in range(7):
            suppress(session, f"user{i}@example.net", HARD_BOUNCE, "bounce", detail="userunknown", seen_at=NOW)
        suppress(session, "angry@example.org", COMPLAINT, "feedback", detail="abuse", seen_at=NOW - timedelta(days=10))
        suppress(session, "gone@example.org", SOFT_BOUNCE, "bounce", seen_at=NOW - timedelta(days=40),
                 expires_at=NOW - timedelta(days=10))
        admin.add(session, "@blocked.example", why="legal asked", actor="cli:alice")
    with session_scope(engine) as session:
        items, cursor, pages = [], None, 0
        while True:
            page = admin.list_suppressions(session, admin.Filters(), cursor=cursor, limit=3)
            items += page.items
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert [i["address"] for i in items][-1] == "@blocked.example" and len(items) == 9 and pages == 3
        assert "gone@example.org" not in {i["address"] for i in items}  # expired
        complaints = admin.list_suppressions(session, admin.Filters(reason="complaint")).items
        assert [i["address"] for i in complaints] == ["angry@example.org"]
        found = admin.list_suppressions(session, admin.Filters(search="USER3")).items
        assert [i["address"] for i in found] == ["user3@example.net"]
        recent = admin.list_suppressions(session, admin.Filters(since=admin.parse_since("2d"))).items
        assert "angry@example.org" not in {i["address"] for i in recent} and len(recent) == 8
        by_cli = admin.list_suppressions(session, admin.Filters(source="cli:*")).items
        assert [i["address"] for i in by_cli] == ["@blocked.example"]
        literal = admin.list_suppressions(session, admin.Filters(search="user_")).items
        assert literal == []  # "_" is a character, not a wildcard
        with pytest.raises(admin.AdminError) as bad:
            admin.list_suppressions(session, admin.Filters(reason="nope"))
        assert bad.value.field == "reason"
        with pytest.raises(admin.AdminError) as bad:
            admin.list_suppressions(session, admin.Filters(), cursor="x1")
        assert bad.value.field == "cursor"


def test_show_names_the_event_and_its_file(engine):
    with session_scope(engine) as session:
        event_id = store_event(session, "dead@example.net")
        suppress(session, "dead@example.net", HARD_BOUNCE, "bounce", detail="userunknown", event_id=event_id, seen_at=NOW)
    with session_scope(engine) as session:
        shown = admin.show(session, "Dead@Example.NET")
    assert shown is not None and shown["suppressed"] and shown["reason"] == HARD_BOUNCE
    assert shown["event"]["id"] == event_id and shown["event"]["kind"] == "bounce"
    assert shown["event"]["message"]["file"] == "/var/mail/drop/a.eml"
    assert shown["event"]["message"]["message_id"] == "<bounce-1@mx.example.net>"
    assert shown["first_seen"] and shown["count"] == 1 and shown["expires"] is None
    with session_scope(engine) as session:
        assert admin.show(session, "nobody@example.net") is None


def test_remove_is_audited_and_old_evidence_does_not_come_back(engine):
    with session_scope(engine) as session:
        old_event = store_event(session, "back@example.net")
        suppress(session, "back@example.net", HARD_BOUNCE, "bounce", event_id=old_event, seen_at=NOW)
    with session_scope(engine) as session:
        removed = admin.remove(session, "back@example.net", why="customer fixed the mailbox", actor="cli:bob")
    assert removed is not None and removed["actor"] == "cli:bob" and removed["why"] == "customer fixed the mailbox"
    assert removed["removed"]["reason"] == HARD_BOUNCE and removed["removed"]["event_id"] == old_event
    with session_scope(engine) as session:
        assert not admin.check(session, "back@example.net")["suppressed"]
        # the same old event again (a replay, a re-count): not suppressed again
        again = [SuppressionEntry("back@example.net", HARD_BOUNCE, "bounce", event_id=old_event, seen_at=NOW)]
        assert admin.skip_removed(session, again) == []
        admin.suppress_respecting_removals(session, again)
        assert not admin.check(session, "back@example.net")["suppressed"]
        # evidence seen before the removal without an event, and the removed policy source: not either
        early = SuppressionEntry("back@example.net", HARD_BOUNCE, "sender", seen_at=NOW - timedelta(hours=1))
        assert admin.skip_removed(session, [early]) == []
    with session_scope(engine) as session:
        new_event = store_event(session, "back@example.net", sha="f" * 64, path=None)
        fresh = [SuppressionEntry("back@example.net", HARD_BOUNCE, "bounce", event_id=new_event,
                                  seen_at=datetime.now(UTC))]
        admin.suppress_respecting_removals(session, fresh)
    with session_scope(engine) as session:
        assert admin.check(session, "back@example.net")["suppressed"]
        shown = admin.show(session, "back@example.net")
        assert shown is not None and shown["event"]["id"] == new_event
        assert [h["op"] for h in shown["history"]] == ["remove"]
        with pytest.raises(admin.AdminError) as bad:
            admin.remove(session, "back@example.net", why="   ", actor="x")
        assert bad.value.field == "reason"
        assert admin.remove(session, "never@example.net", why="typo", actor="x") is None


def test_policy_source_removed_is_not_reapplied(engine):
    with session_scope(engine) as session:
        suppress(session, "q@example.net", "manual", "policy:7", detail="rdomain rule")
        admin.remove(session, "q@example.net", why="false positive", actor="web:carol")
        repeat = SuppressionEntry("q@example.net", "manual", "policy:7", seen_at=datetime.now(UTC) + timedelta(1))
        assert admin.skip_removed(session, [repeat]) == []
        other = SuppressionEntry("q@example.net", COMPLAINT, "feedback", seen_at=datetime.now(UTC) + timedelta(1))
        assert admin.skip_removed(session, [other]) == [other]


def test_domains_check_and_bad_targets(engine):
    with session_scope(engine) as session:
        row = admin.add(session, "@Example.ORG", why="whole company opted out", actor="api:ops")
        assert row["address"] == "@example.org" and row["kind"] == "domain"
        assert admin.check(session, "anyone@example.org") == {
            "address": "anyone@example.org", "suppressed": True, "reason": "manual",
            "detail": "whole company opted out", "expires": None, "kind": "domain"}
        assert not admin.check(session, "anyone@sub.example.org")["suppressed"]
        assert admin.suppressed_by_domain(session, ["A@example.org", "b@example.com"]) == {"A@example.org"}
        assert admin.remove(session, "@example.org", why="lifted", actor="api:ops") is not None
        assert not admin.check(session, "anyone@example.org")["suppressed"]
        for bad in ("", "no-at-sign", "a@b@c", "@", "@nodot", "x" * 330 + "@example.org", "sp ace@example.org"):
            with pytest.raises(admin.AdminError):
                admin.add(session, bad, why="x", actor="y")
        with pytest.raises(admin.AdminError) as err:
            admin.check(session, "@example.org")
        assert err.value.field == "address"


def test_export_formats_and_incremental_cursor(engine, tmp_path: Path):
    with session_scope(engine) as session:
        suppress(session, "one@example.net", HARD_BOUNCE, "bounce", detail="userunknown")
        suppress(session, "two@example.net", COMPLAINT, "feedback", detail="abuse\nREJECT injected")
        suppress(session, "sheet@example.net", COMPLAINT, "feedback", detail="=HYPERLINK(\"http://x\")")
        admin.add(session, "@bad.example", why="spam trap domain", actor="cli:alice")
    with session_scope(engine) as session:
        full = admin.export(session)
        postfix = "".join(admin.render(full, "postfix"))
        pmta = "".join(admin.render(full, "pmta"))
        csv_text = "".join(admin.render(full, "csv"))
    lines = postfix.splitlines()
    assert lines[0] == "one@example.net REJECT 5.7.1 suppressed: hard_bounce (userunknown)"
    assert lines[1].startswith("two@example.net REJECT") and len(lines) == 4 and "\n" not in lines[1]
    assert lines[3].startswith("bad.example REJECT")
    assert pmta.splitlines() == ["one@example.net", "two@example.net", "sheet@example.net", "@bad.example"]
    assert csv_text.splitlines()[0].startswith("op,address,kind,reason")
    assert "'=HYPERLINK" in csv_text and ",=HYPERLINK" not in csv_text  # not a formula in a spreadsheet
    if shutil.which("postmap"):
        table = tmp_path / "suppressed"
        table.write_text(postfix)
        subprocess.run(["postmap", f"hash:{table}"], check=True, capture_output=True, timeout=30)
        got = subprocess.run(["postmap", "-q", "one@example.net", f"hash:{table}"], capture_output=True, text=True,
                             timeout=30)
        assert got.stdout.strip() == "REJECT 5.7.1 suppressed: hard_bounce (userunknown)"
    cursor = full.cursor
    with session_scope(engine) as session:
        admin.remove(session, "one@example.net", why="typo", actor="cli:alice")
        suppress(session, "three@example.net", HARD_BOUNCE, "bounce")
    with session_scope(engine) as session:
        delta = admin.export(session, admin.ExportCursor.parse(str(cursor)))
        assert [a["address"] for a in delta.added] == ["three@example.net"]  # read while the session is open
        assert [r["target"] for r in delta.removed] == ["one@example.net"]
        csv_delta = "".join(admin.render(delta, "csv")).splitlines()
    assert csv_delta[1].startswith("add,three@example.net") and csv_delta[2].startswith("remove,one@example.net")
    with session_scope(engine) as session:  # the newest row removed, then a new one (SQLite reuses its id)
        admin.remove(session, "three@example.net", why="typo", actor="cli:alice")
        suppress(session, "four@example.net", HARD_BOUNCE, "bounce")
    with session_scope(engine) as session:
        again = admin.export(session, delta.cursor)
        assert [a["address"] for a in again.added] == ["four@example.net"]
        assert [r["target"] for r in again.removed] == ["three@example.net"]
        assert json.loads("".join(admin.render(again, "json")))["added"][0]["address"] == "four@example.net"
    with pytest.raises(admin.AdminError) as bad:
        admin.ExportCursor.parse("v2.1")
    assert bad.value.field == "since"


WIRED = "skip_removed" in inspect.getsource(storage_list.suppress_many)


@pytest.mark.skipif(not WIRED, reason="storage's suppress_many does not call skip_removed yet (patch handed to the lead)")
def test_storage_itself_skips_old_evidence_and_sees_domains(engine):
    with session_scope(engine) as session:
        old_event = store_event(session, "again@example.net")
        storage_list.suppress_many(session, [SuppressionEntry("again@example.net", HARD_BOUNCE, "bounce",
                                                              event_id=old_event, seen_at=NOW)])
        admin.remove(session, "again@example.net", why="fixed", actor="cli:bob")
        storage_list.suppress_many(session, [SuppressionEntry("again@example.net", HARD_BOUNCE, "bounce",
                                                              event_id=old_event, seen_at=NOW)])
        assert not storage_list.is_suppressed(session, "again@example.net")
        admin.add(session, "@closed.example", why="company closed", actor="cli:bob")
        assert storage_list.suppressed_addresses(session, ["A@closed.example", "b@open.example"]) == {"A@closed.example"}


def test_removed_at(engine):
    with session_scope(engine) as session:
        suppress(session, "r@example.net", HARD_BOUNCE, "bounce")
        admin.remove(session, "R@example.net", why="fixed", actor="cli:bob")
        got = admin.removed_at(session, ["r@example.net", "other@example.net"])
    assert list(got) == ["r@example.net"]
