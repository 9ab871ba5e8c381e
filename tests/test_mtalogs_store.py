"""The delivery-log part (monitor/mtalogs/): schema, files read exactly once
across rotation, truncation, crashes and a second reader, rows, events and
suppressions, the KumoMTA hook ledger, journald piped in, and the counts
health reads. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.exc import DataError
from sqlmodel import SQLModel

import monitor.mtalogs as mtalogs_package
import monitor.storage as storage_package
from monitor.cli import main
from monitor.core import db
from monitor.core.runtime import Runtime
from monitor.mtalogs import ingest as ingest_module
from monitor.mtalogs import jobs
from monitor.mtalogs.destinations import BUILTIN_SUFFIXES, Destinations
from monitor.mtalogs.ingest import CheckpointMoved, JournalPipe, SourceReader, ingest_kumo_records
from monitor.mtalogs.models import MtaDelivery, MtaLogCheckpoint, MtaLogReject
from monitor.mtalogs.reading import delivery_counts, file_status, top_delivery_id
from monitor.mtalogs.settings import DeliveryLogConfig, check_unique_names
from monitor.mtalogs.tail import discover
from monitor.storage.models import StoredEvent, Suppression

MIGRATION_DIRS = (Path(storage_package.__file__).resolve().parent / "migrations",
                  Path(mtalogs_package.__file__).resolve().parent / "migrations")
OUR_TABLES = {"mtalog_checkpoints", "mtalog_deliveries", "mtalog_rejects", "mtalog_hook_records"}


@pytest.fixture
def mt_engine(db_url: str) -> Iterator:
    db.upgrade_schema(db_url, MIGRATION_DIRS)
    engine = db.make_engine(db_url)
    yield engine
    engine.dispose()


def count(engine, model, *where) -> int:
    table = model.__table__
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0)


def postfix_line(n: int, status: str = "sent", rcpt: str | None = None, program: str = "postfix/smtp",
                 minute: int = 0) -> str:
    rcpt = rcpt or f"user{n}@gmail.com"
    diag = {"sent": "250 2.0.0 OK gsmtp",
            "bounced": f"host mx.example.com[192.0.2.1] said: 550 5.1.1 <{rcpt}>: User unknown (in reply to RCPT TO command)",
            "deferred": "host mta7.am0.yahoodns.net[67.195.204.72] said: 421 4.7.0 [TSS04] Messages temporarily "
                        "deferred due to unexpected volume (in reply to MAIL FROM command)"}[status]
    relay = {"sent": "gmail-smtp-in.l.google.com[142.250.1.27]:25", "bounced": "mx.example.com[192.0.2.1]:25",
             "deferred": "mta7.am0.yahoodns.net[67.195.204.72]:25"}[status]
    return (f"Dec  2 16:{minute:02d}:{n % 60:02d} mx1 {program}[1234]: Q{n:08X}: to=<{rcpt}>, relay={relay}, delay=1, "
            f"delays=0/0/0.5/0.5, dsn={'2.0.0' if status == 'sent' else '5.1.1' if status == 'bounced' else '4.7.0'}, "
            f"status={status} ({diag})\n")


def qmgr_line(n: int, sender: str = "bounces@news.example.org") -> str:
    return f"Dec  2 15:59:00 mx1 postfix/qmgr[99]: Q{n:08X}: from=<{sender}>, size=100, nrcpt=1 (queue active)\n"


def config(path: Path, **extra) -> DeliveryLogConfig:
    return DeliveryLogConfig(name="mx1", kind=extra.pop("kind", "postfix"), path=path, source_ip="192.0.2.10",
                             timezone="UTC", **extra)


def test_migration_matches_models(mt_engine):
    with mt_engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), SQLModel.metadata)
    ours = [d for d in diff if any(t in str(d) for t in OUR_TABLES)]
    assert ours == [], "\n".join(map(str, ours))
    with mt_engine.connect() as connection:
        assert "0007_mtalogs" in set(MigrationContext.configure(connection).get_current_heads())


def test_a_log_is_read_exactly_once_across_rotation(mt_engine, tmp_path):
    log = tmp_path / "mail.log"
    log.write_text("".join(qmgr_line(i) + postfix_line(i) for i in range(10)))
    reader = SourceReader(mt_engine, config(log, batch_lines=7))
    first = reader.run_pass()
    assert first.lines == 20 and first.stored.deliveries == 10
    assert reader.run_pass().lines == 0  # nothing new

    with log.open("a") as out:  # the MTA writes more, then rotation: rename + create
        out.write(postfix_line(10) + postfix_line(11, "deferred"))
    log.rename(tmp_path / "mail.log.1")
    with (tmp_path / "mail.log.1").open("a") as out:  # a line written to the old file after the rename
        out.write(postfix_line(12))
    log.write_text(postfix_line(13) + postfix_line(14, "bounced", rcpt="gone@example.com"))
    assert [f.path for f in discover(log, False, set(reader._load()))] == [str(tmp_path / "mail.log.1"), str(log)]
    second = reader.run_pass()
    assert second.stored.deliveries == 5
    assert count(mt_engine, MtaDelivery) == 15
    assert count(mt_engine, MtaDelivery, MtaDelivery.outcome == "deferred") == 1
    assert count(mt_engine, MtaDelivery, MtaDelivery.sending_domain == "news.example.org") == 10
    assert count(mt_engine, MtaDelivery, MtaDelivery.destination == "google") == 13

    # the rotated file is compressed away: its checkpoint goes, the live file's stays
    (tmp_path / "mail.log.1").unlink()
    assert reader.run_pass().lines == 0
    with mt_engine.connect() as conn:
        assert [s.path for s in file_status(conn)] == [str(log)]
    assert count(mt_engine, MtaDelivery) == 15


def test_copytruncate_and_a_partial_last_line(mt_engine, tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(postfix_line(1) + postfix_line(2) + postfix_line(3)[:40])  # the MTA is mid-line
    reader = SourceReader(mt_engine, config(log))
    assert reader.run_pass().stored.deliveries == 2
    with log.open("a") as out:
        out.write(postfix_line(3)[40:])
    assert reader.run_pass().stored.deliveries == 1
    log.write_text(postfix_line(4))  # copytruncate: same inode, new content shorter than the offset
    assert reader.run_pass().stored.deliveries == 1
    log.write_text(postfix_line(5) + postfix_line(6) + postfix_line(7) + postfix_line(8))  # truncated and refilled
    assert reader.run_pass().stored.deliveries == 4
    assert count(mt_engine, MtaDelivery) == 8


def test_start_at_end_skips_history(mt_engine, tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(postfix_line(1) + postfix_line(2))
    reader = SourceReader(mt_engine, config(log, start_at="end"))
    assert reader.run_pass().lines == 0
    with log.open("a") as out:
        out.write(postfix_line(3))
    assert reader.run_pass().stored.deliveries == 1


def test_a_crash_mid_pass_counts_nothing_twice(mt_engine, tmp_path, monkeypatch):
    log = tmp_path / "mail.log"
    log.write_text("".join(postfix_line(i) for i in range(30)))
    real = ingest_module.store_records
    calls = {"n": 0}

    def failing(conn, attribution, located):
        calls["n"] += 1
        result = real(conn, attribution, located)
        if calls["n"] == 2:
            raise RuntimeError("power cut after the rows, before the commit")
        return result

    monkeypatch.setattr(ingest_module, "store_records", failing)
    with pytest.raises(RuntimeError):
        SourceReader(mt_engine, config(log, batch_lines=10)).run_pass()
    assert count(mt_engine, MtaDelivery) == 10  # the first batch committed, the second rolled back
    monkeypatch.setattr(ingest_module, "store_records", real)
    assert SourceReader(mt_engine, config(log, batch_lines=10)).run_pass().stored.deliveries == 20
    assert count(mt_engine, MtaDelivery) == 30


def test_a_record_the_database_refuses_becomes_a_reject(mt_engine, tmp_path, monkeypatch):
    log = tmp_path / "mail.log"
    log.write_text(postfix_line(1) + postfix_line(2, rcpt="poison@example.com") + postfix_line(3)
                   + postfix_line(4, rcpt="nul\x00byte@example.com"))
    real = ingest_module.store_records

    def refusing(conn, attribution, located):
        if any(getattr(item.record, "recipient", None) == "poison@example.com" for item in located):
            raise DataError("INSERT ...", {}, ValueError("value refused by the database"))
        return real(conn, attribution, located)

    monkeypatch.setattr(ingest_module, "store_records", refusing)
    result = SourceReader(mt_engine, config(log)).run_pass()
    assert (result.lines, result.stored.deliveries, result.stored.rejected) == (4, 3, 1)
    with mt_engine.connect() as conn:
        reject = conn.execute(select(MtaLogReject.__table__)).mappings().one()
    assert "value refused by the database" in reject["reason"] and "poison@example.com" in reject["raw"]
    assert SourceReader(mt_engine, config(log)).run_pass().lines == 0


def test_a_file_rotated_between_looking_and_reading_is_left_for_the_next_pass(mt_engine, tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(postfix_line(1))
    reader = SourceReader(mt_engine, config(log))
    (file,) = discover(log, False, set())
    log.rename(tmp_path / "mail.log.1")
    log.write_text(postfix_line(2) + postfix_line(3))  # a new file under the same path
    fresh = ingest_module._Checkpoint(None, 0, 0, "")
    assert reader._one_batch(file, fresh, ingest_module.PassResult("mx1")) is True
    assert count(mt_engine, MtaDelivery) == 0
    assert reader.run_pass().stored.deliveries == 2  # the live file; the rotated one has no checkpoint


def test_a_second_reader_with_a_stale_checkpoint_stores_nothing(mt_engine, tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(postfix_line(1) + postfix_line(2))
    reader = SourceReader(mt_engine, config(log))
    reader.run_pass()
    (file,) = discover(log, False, set())
    stale = ingest_module._Checkpoint(next(iter(reader._load().values())).id, 0, 0, "")
    with pytest.raises(CheckpointMoved):
        reader._one_batch(file, stale, ingest_module.PassResult("mx1"))
    new_file = ingest_module._Checkpoint(None, 0, 0, "")
    with pytest.raises(CheckpointMoved):
        reader._one_batch(file, new_file, ingest_module.PassResult("mx1"))
    assert count(mt_engine, MtaDelivery) == 2


def test_outcomes_become_events_suppressions_and_rejects(mt_engine, tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(qmgr_line(1) + postfix_line(1, "bounced", rcpt="gone@example.com", program="postfix-ip2/smtp")
                   + qmgr_line(2) + postfix_line(2, "deferred", rcpt="later@yahoo.com")
                   + "Dec  2 16:00:00 mx1 postfix/smtp[1]: Q00000003: to=<a@b.example>, relay=none, status=odd (x)\n"
                   + "Dec  2 16:00:00 mx1 postfix/local[1]: Q00000004: to=<root@mx1>, relay=local, delay=0, "
                     "delays=0/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)\n"
                   + "x" * 70_000 + "\n")
    result = SourceReader(mt_engine, config(log, source_ips={"postfix-ip2/smtp": "192.0.2.11"})).run_pass()
    assert (result.stored.deliveries, result.stored.events, result.stored.suppressions, result.stored.rejected,
            result.stored.ignored) == (2, 2, 1, 2, 1)
    with mt_engine.connect() as conn:
        events = conn.execute(select(StoredEvent.__table__)).mappings().all()
        rejects = conn.execute(select(MtaLogReject.__table__)).mappings().all()
        suppressed = conn.execute(select(Suppression.__table__)).mappings().all()
        delivery = conn.execute(select(MtaDelivery.__table__).where(MtaDelivery.outcome == "bounced")).mappings().one()
    by_action = {e["action"]: e for e in events}
    hard, delayed = by_action["failed"], by_action["delayed"]
    assert (hard["kind"], hard["reason"], hard["hard_or_soft"], hard["sending_ip"], hard["smtp_agent"],
            hard["remote_mta"], hard["sending_domain"], hard["recipient"]) == (
        "bounce", "userunknown", "hard", "192.0.2.11", "mtalog:postfix", "mx:mx.example.com", "news.example.org",
        "gone@example.com")
    assert delayed["hard_or_soft"] == "soft" and delayed["sending_ip"] == "192.0.2.10" and delayed["remote_mta"] == "yahoo"
    assert delivery["event_id"] == hard["id"] and delivery["source_ip"] == "192.0.2.11"
    assert [(s["address"], s["reason"]) for s in suppressed] == [("gone@example.com", "hard_bounce")]
    assert sorted(r["reason"][:20] for r in rejects) == ["line longer than 655", "unknown status 'odd'"]
    assert all(r["path"] == str(log) and r["offset"] is not None for r in rejects)


def test_pmta_glob_source_with_complaints(mt_engine, tmp_path):
    (tmp_path / "acct-1.csv").write_text(
        "type,timeLogged,orig,rcpt,dsnStatus,dsnDiag,dsnMta,dlvSourceIp,vmta,feedbackType\n"
        "d,1796228400,bounces@news.example.org,a@gmail.com,2.0.0,smtp;250 ok,gmail-smtp-in.l.google.com (1.2.3.4),,vmta1,\n"
        "f,1796228500,bounces@news.example.org,angry@aol.com,,,,192.0.2.10,,abuse\n")
    os.utime(tmp_path / "acct-1.csv", (1, 1))  # finished long ago
    (tmp_path / "acct-2.csv").write_text(
        "type,timeLogged,rcpt,dsnStatus,dsnDiag,vmta\nb,1796228600,x@example.com,5.1.1,smtp;550 5.1.1 unknown user,vmta2\n")
    section = DeliveryLogConfig(name="pmta", kind="pmta", path=tmp_path / "acct-*.csv",
                                source_ips={"vmta1": "192.0.2.21", "vmta2": "192.0.2.22"})
    result = SourceReader(mt_engine, section).run_pass()
    assert result.files == 2 and (result.stored.deliveries, result.stored.complaints, result.stored.suppressions) == (2, 1, 2)
    with mt_engine.connect() as conn:
        ips = dict(conn.execute(select(MtaDelivery.outcome, MtaDelivery.source_ip)).all())
        complaint = conn.execute(select(StoredEvent.__table__).where(StoredEvent.kind == "feedback")).mappings().one()
    assert ips == {"delivered": "192.0.2.21", "bounced": "192.0.2.22"}
    assert complaint["is_complaint"] and complaint["sending_ip"] == "192.0.2.10"
    assert SourceReader(mt_engine, section).run_pass().lines == 0


def test_kumomta_hook_is_exactly_once(mt_engine):
    records = [{"type": "Delivery", "id": "a1", "sender": "b@news.example.org", "recipient": "u@gmail.com",
                "timestamp": 1796228400, "peer_address": {"name": "gmail-smtp-in.l.google.com.", "addr": "1.2.3.4"},
                "source_address": {"address": "192.0.2.30:0"}, "response": {"code": 250, "content": "ok"}},
               {"type": "Bounce", "id": "a2", "sender": "b@news.example.org", "recipient": "x@example.com",
                "timestamp": 1796228401, "site": "ip-1->mx.example.com", "egress_source": "ip-1",
                "response": {"code": 550, "enhanced_code": {"class": 5, "subject": 1, "detail": 1},
                             "content": "no such user", "command": "RCPT TO"}},
               "garbage"]
    first = ingest_kumo_records(mt_engine, records)
    assert (first.deliveries, first.events, first.rejected, first.duplicates) == (2, 1, 1, 0)
    again = ingest_kumo_records(mt_engine, records)
    assert (again.deliveries, again.duplicates) == (0, 3)
    assert count(mt_engine, MtaDelivery) == 2 and count(mt_engine, MtaLogReject) == 1
    with pytest.raises(ValueError):
        ingest_kumo_records(mt_engine, [{}] * 10_001)


def test_journal_piped_in_is_exactly_once(mt_engine):
    def journal(n: int) -> str:
        return json.dumps({"__CURSOR": f"s=1;i={n}", "__REALTIME_TIMESTAMP": str(1796228400_000000 + n),
                           "SYSLOG_IDENTIFIER": "postfix/smtp",
                           "MESSAGE": postfix_line(n).split(": ", 1)[1].rstrip("\n")}) + "\n"

    section = DeliveryLogConfig(name="journal", kind="postfix-journal", path=Path("-"), source_ip="192.0.2.40")
    for upto in (3, 5):  # the second pipe repeats the first three records
        read_fd, write_fd = os.pipe()
        os.write(write_fd, "".join(journal(n) for n in range(upto)).encode())
        os.close(write_fd)
        JournalPipe(mt_engine, section).run(read_fd)
        os.close(read_fd)
    assert count(mt_engine, MtaDelivery) == 5
    assert jobs.provide([section], Runtime(engine=mt_engine))[0].name == "mtalogs:prune-hook-ledger"


def test_delivery_counts_for_health(mt_engine, tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(qmgr_line(1) + qmgr_line(2) + postfix_line(1, minute=1) + postfix_line(2, minute=2)
                   + postfix_line(3, "deferred", minute=7) + postfix_line(4, minute=7))
    SourceReader(mt_engine, config(log)).run_pass()
    with mt_engine.connect() as conn:
        top = top_delivery_id(conn)
        rows = delivery_counts(conn, 0, top)
        first_two = delivery_counts(conn, 0, 2)
        late = delivery_counts(conn, 0, ids=[3])
        hourly = delivery_counts(conn, 0, grain_s=3600, by_recipient_domain=True)
    base = min(r.bucket for r in rows)  # 16:00 on 2 December
    assert base % 3600 == 0
    as_tuples = sorted((r.ip, r.domain or "", r.provider, r.outcome, r.bucket - base, r.count) for r in rows)
    assert as_tuples == [("192.0.2.10", "", "google", "delivered", 300, 1),
                         ("192.0.2.10", "", "yahoo", "deferred", 300, 1),
                         ("192.0.2.10", "news.example.org", "google", "delivered", 0, 2)]
    assert sum(r.count for r in first_two) == 2 and [r.outcome for r in late] == ["deferred"]
    assert {(r.provider, r.recipient_domain, r.bucket - base) for r in hourly} == {
        ("google", "gmail.com", 0), ("yahoo", "gmail.com", 0)}


def test_job_runs_a_pass(mt_engine, tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(postfix_line(1))
    (job, _prune) = jobs.provide([config(log)], Runtime(engine=mt_engine))
    assert job.name == "mtalogs:mx1" and job.interval_s == 5.0
    assert asyncio.run(job.run()).stored.deliveries == 1


def test_destinations_match_the_senders_providers():
    from sender.routing import BUILTIN_PROVIDERS

    assert {k: tuple(v["mx_suffixes"]) for k, v in BUILTIN_PROVIDERS.items()} == BUILTIN_SUFFIXES
    destinations = Destinations({"google": [".google.example"], "acme": ["mx.acme.example"]})
    assert destinations.of("ALT1.gmail-smtp-in.l.google.com.") == "google"
    assert destinations.of("eu.mx.acme.example") == "acme"
    assert destinations.of("mx1.smallco.example") == "mx:mx1.smallco.example"
    assert destinations.of(None) == "other"


def test_settings_are_validated(tmp_path):
    with pytest.raises(ValidationError, match="not an IP address"):
        DeliveryLogConfig(kind="postfix", path=tmp_path, source_ip="mx1")
    with pytest.raises(ValidationError, match="unknown time zone"):
        DeliveryLogConfig(kind="postfix", path=tmp_path, timezone="Mars/Olympus")
    with pytest.raises(ValidationError):
        DeliveryLogConfig(kind="exim", path=tmp_path)
    with pytest.raises(ValidationError):
        DeliveryLogConfig(kind="postfix", path=tmp_path, unknown_key=1)
    with pytest.raises(ValueError, match="must be unique"):
        check_unique_names([DeliveryLogConfig(kind="pmta", path=tmp_path)] * 2)
    assert DeliveryLogConfig(kind="pmta", path=tmp_path / "a*.csv").is_glob


def test_checkpoint_rows_exist_per_file(mt_engine, tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(postfix_line(1))
    SourceReader(mt_engine, config(log)).run_pass()
    with mt_engine.connect() as conn:
        row = conn.execute(select(MtaLogCheckpoint.__table__)).mappings().one()
        assert conn.execute(text("SELECT COUNT(*) FROM mtalog_deliveries")).scalar() == 1
    st = log.stat()
    assert (row["device"], row["inode"], row["offset"], row["lines"], row["records"]) == (
        st.st_dev, st.st_ino, st.st_size, 1, 1)


def test_delivery_logs_command(mt_engine, tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    import monitor.commands.deliverylogs as command
    import monitor.parts

    log = tmp_path / "mail.log"
    log.write_text(postfix_line(1) + postfix_line(2, "bounced", rcpt="gone@example.com") + "Dec  2 16:00:00 mx1 "
                   "postfix/smtp[1]: Q00000009: to=<a@b.example>, relay=none, status=odd (x)\n")
    fake = SimpleNamespace(delivery_logs=[config(log)], database_url=str(mt_engine.url))
    monkeypatch.setattr(command, "load_config", lambda _path: fake)
    monkeypatch.setattr(monitor.parts, "upgrade_schema", lambda _engine: None)  # the test database is migrated
    assert main(["delivery-logs", "read", "--config", "x.toml"]) == 0
    assert "mx1: 3 lines from 1 files, 2 outcomes, 0 complaints, 1 events, 1 suppressions, 1 rejected" in (
        capsys.readouterr().out)
    assert main(["delivery-logs", "status", "--config", "x.toml"]) == 0
    out = capsys.readouterr().out
    assert "mx1 (postfix, " in out and "1 lines rejected" in out and "lines 3" in out
    assert main(["delivery-logs", "read", "--config", "x.toml", "--source", "nope"]) == 2


def test_read_lines_bounds_memory_on_a_runaway_line(tmp_path):
    from monitor.mtalogs.tail import read_lines

    path = tmp_path / "log"
    path.write_bytes(b"first\n" + b"x" * 300 + b"\nlast\npartial")
    lines, offset = read_lines(str(path), 0, final=False, max_lines=100, max_bytes=64)
    assert [(line.text[:5], line.too_long) for line in lines] == [("first", False), ("xxxxx", True), ("last", False)]
    assert offset == path.stat().st_size - len(b"partial")  # the partial line waits
    assert len(lines[1].text) <= 64
    lines, offset = read_lines(str(path), offset, final=True, max_lines=100, max_bytes=64)
    assert [line.text for line in lines] == ["partial"] and offset == path.stat().st_size
    lines, _ = read_lines(str(path), 0, final=False, max_lines=1, max_bytes=64)
    assert [line.text for line in lines] == ["first"]
