"""IMAP ingestion against a real Dovecot: moves, quarantine, IDLE, UIDVALIDITY,
server restarts, bad passwords, TLS, big messages and big mailboxes."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from monitor.core.runtime import Runtime
from monitor.ingest.imap import FolderWatcher, ImapConnection, ImapError, encode_folder, parse_delimiter, uid_set
from tests.fixtures._ingest_rows import (
    expected_events,
    expected_quarantine,
    mailbox_section,
    make_config,
    quarantine_reasons,
    stored_events,
)
from tests.fixtures._peers import peer_unavailable
from tests.fixtures._waiting import eventually
from tests.fixtures.dovecot import DOVECOT, DovecotServer
from tests.fixtures.feedback_messages import arf_report, broken_report, dsn_bounce, mixed_batch


def watcher_for(config, engine, folder: str | None = None, index: int = 0) -> FolderWatcher:
    mailbox = config.mailboxes[index]
    return FolderWatcher(Runtime(engine), mailbox, folder or mailbox.folders[0], suppression=config.suppression)


async def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    """`predicate` (it reads the database or the server) until it holds, off the event loop."""
    await eventually(predicate, timeout, 0.1, what=what, in_thread=True)


@pytest.fixture
def watching(monkeypatch) -> dict[str, int | bool]:
    """What the watchers are doing, for tests to wait on instead of sleeping:
    "passes" counts finished passes, "idling" is true while a connection
    waits in IDLE."""
    seen: dict[str, int | bool] = {"passes": 0, "idling": False}
    one_pass, idle = FolderWatcher.one_pass, ImapConnection.idle

    async def counted_pass(self, connection):
        try:
            return await one_pass(self, connection)
        finally:
            seen["passes"] = int(seen["passes"]) + 1

    async def idling(self, max_wait, stopping):
        seen["idling"] = True
        try:
            return await idle(self, max_wait, stopping)
        finally:
            seen["idling"] = False

    monkeypatch.setattr(FolderWatcher, "one_pass", counted_pass)
    monkeypatch.setattr(ImapConnection, "idle", idling)
    return seen


def test_uid_set_and_folder_encoding():
    assert uid_set([9, 1, 2, 3, 7, 10, 2]) == "1:3,7,9:10"
    assert encode_folder("INBOX") == '"INBOX"'
    assert encode_folder('a "b"\\') == '"a \\"b\\"\\\\"'
    assert encode_folder("Bearbeitet/Rückläufer & Co") == '"Bearbeitet/R&APw-ckl&AOQ-ufer &- Co"'
    assert parse_delimiter([b'(\\Noselect) "/" ""', b"List completed."]) == "/"
    assert parse_delimiter([b'(\\Noselect) "." ""']) == "."
    assert parse_delimiter([b'(\\Noselect) "\\\\" ""']) == "\\"
    assert parse_delimiter([b"(\\Noselect) NIL \"\""]) is None


async def test_every_message_stored_then_moved(engine, migrated_db_url, imap_account, tmp_path):
    messages = mixed_batch(60, broken_every=20)
    imap_account.append(messages)
    config = make_config(migrated_db_url, tmp_path,
                         [mailbox_section(imap_account, batch_size=25)])
    result = await watcher_for(config, engine).run_once()

    assert result.stored + result.quarantined == 60 and result.duplicates == 0
    assert stored_events(engine) == expected_events(messages)
    assert imap_account.count("INBOX") == 0
    assert imap_account.count("repmon/processed") == 57
    assert imap_account.count("repmon/quarantine") == 3 == expected_quarantine(messages)
    assert all("gzip" in reason for reason in quarantine_reasons(engine))
    again = await watcher_for(config, engine).run_once()
    assert again.messages == 0 and stored_events(engine) == expected_events(messages)


async def test_copy_expunge_fallback_and_folders_created_on_demand(sqlite_engine, sqlite_url, imap_account, tmp_path):
    messages = [dsn_bounce(f"c{i}@example.org") for i in range(5)] + [broken_report("c")]
    imap_account.append(messages)
    config = make_config(sqlite_url, tmp_path, [mailbox_section(
        imap_account, use_move=False, processed_folder="Erledigt/Rückläufer", quarantine_folder="Quarantäne")])
    result = await watcher_for(config, sqlite_engine).run_once()
    assert (result.stored, result.quarantined) == (5, 1)
    assert imap_account.count("INBOX") == 0
    assert imap_account.count("Erledigt/R&APw-ckl&AOQ-ufer") == 5
    assert imap_account.count("Quarant&AOQ-ne") == 1


async def test_idle_picks_up_a_new_message(sqlite_engine, sqlite_url, imap_account, tmp_path, watching):
    # Polling is set to 10 minutes: only IDLE can deliver the message in time.
    config = make_config(sqlite_url, tmp_path, [mailbox_section(imap_account, poll_interval_s=600)])
    watcher = watcher_for(config, sqlite_engine)
    service = asyncio.create_task(watcher.serve())
    try:
        for i in range(3):
            await eventually(lambda: watching["idling"], 30, what="the watcher to wait in IDLE")
            assert not service.done()
            raw = arf_report(f"idle{i}@example.org")
            await asyncio.to_thread(imap_account.append, [raw])
            address = f"idle{i}@example.org"
            await wait_for(lambda address=address: stored_events(sqlite_engine)[("feedback", address)] == 1,
                           timeout=30, what=f"message {i} via IDLE")
        await wait_for(lambda: imap_account.count("INBOX") == 0, what="moves")
    finally:
        watcher.runtime.stopping.set()
        await asyncio.wait_for(service, 15)


async def test_uidvalidity_change_reads_again_but_counts_once(sqlite_engine, sqlite_url, imap_account, tmp_path):
    first = [dsn_bounce(f"v{i}@example.org") for i in range(20)]
    imap_account.append(first, folder="feedback")
    config = make_config(sqlite_url, tmp_path, [mailbox_section(imap_account, folders=["feedback"])])
    await watcher_for(config, sqlite_engine).run_once()
    old_validity = imap_account.uidvalidity("feedback")

    # The folder is restored from a backup: the same messages again plus new ones, new UIDVALIDITY.
    later = [dsn_bounce(f"w{i}@example.org") for i in range(5)]
    imap_account.recreate("feedback", first + later)
    assert imap_account.uidvalidity("feedback") != old_validity
    result = await watcher_for(config, sqlite_engine).run_once()

    assert (result.stored, result.duplicates) == (5, 20)
    assert stored_events(sqlite_engine) == expected_events(first + later)
    assert imap_account.count("feedback") == 0
    assert imap_account.count("repmon/processed") == 45  # the 20 re-delivered copies are moved too


async def test_dovecot_restarted_mid_fetch(sqlite_engine, sqlite_url, imap_account, dovecot_server, tmp_path):
    messages = mixed_batch(1500, prefix="restart", seed=3)
    imap_account.deliver(messages)
    config = make_config(sqlite_url, tmp_path, [mailbox_section(imap_account, batch_size=50, poll_interval_s=600)])
    watcher = watcher_for(config, sqlite_engine)
    service = asyncio.create_task(watcher.serve())
    try:
        await wait_for(lambda: sum(stored_events(sqlite_engine).values()) > 0, what="first batch")
        await asyncio.to_thread(dovecot_server.restart)
        await wait_for(lambda: imap_account.count("INBOX") == 0, timeout=120, what="backlog after restart")
    finally:
        watcher.runtime.stopping.set()
        await asyncio.wait_for(service, 15)
    assert stored_events(sqlite_engine) == expected_events(messages)


async def test_wrong_password_is_reported_and_others_keep_going(sqlite_engine, sqlite_url, dovecot_server,
                                                                 tmp_path, caplog):
    good = dovecot_server.add_user()
    bad = dovecot_server.add_user()
    secret = "Sup3r-Secret-Wrong-Password"
    good.append([dsn_bounce("good@example.org")])
    config = make_config(sqlite_url, tmp_path, [
        mailbox_section(bad, password=secret, name="bad-box"),
        mailbox_section(good, name="good-box", poll_interval_s=600),
    ])
    runtime = Runtime(sqlite_engine)
    watchers = [FolderWatcher(runtime, m, "INBOX", suppression=config.suppression) for m in config.mailboxes]
    caplog.set_level(logging.INFO)

    def refusals():
        return [r for r in caplog.records if r.levelno == logging.ERROR and "refused" in r.getMessage()]

    tasks = [asyncio.create_task(w.serve()) for w in watchers]
    try:
        await wait_for(lambda: stored_events(sqlite_engine)[("bounce", "good@example.org")] == 1, what="good mailbox")
        await wait_for(lambda: len(refusals()) >= 4, what="retries of the bad mailbox")
        assert not any(t.done() for t in tasks)
    finally:
        runtime.stopping.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
    first = refusals()[0].getMessage()
    assert "bad-box" in first and "AUTHENTICATIONFAILED" in first
    delays = [float(r.getMessage().rsplit("retrying in ", 1)[1].split()[0]) for r in refusals()]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.0]  # doubling up to retry_max_s
    assert all(secret not in r.getMessage() for r in caplog.records)


async def test_tls_and_starttls_with_the_servers_ca(sqlite_engine, sqlite_url, imap_account, dovecot_server, tmp_path):
    imap_account.append([dsn_bounce("tls1@example.org")])
    imap_account.append([dsn_bounce("tls2@example.org")], folder="second")
    ca = str(dovecot_server.cert_path)
    config = make_config(sqlite_url, tmp_path, [
        mailbox_section(imap_account, name="implicit", security="tls", port=dovecot_server.imaps_port, ca_file=ca),
        mailbox_section(imap_account, name="upgrade", security="starttls", ca_file=ca, folders=["second"]),
    ])
    await watcher_for(config, sqlite_engine, index=0).run_once()
    await watcher_for(config, sqlite_engine, index=1).run_once()
    stored = stored_events(sqlite_engine)
    assert stored[("bounce", "tls1@example.org")] == 1 and stored[("bounce", "tls2@example.org")] == 1


async def test_untrusted_certificate_is_a_clear_error(imap_account, dovecot_server, sqlite_url, tmp_path):
    config = make_config(sqlite_url, tmp_path, [
        mailbox_section(imap_account, security="tls", port=dovecot_server.imaps_port)])
    connection = ImapConnection(config.mailboxes[0])
    with pytest.raises(ImapError, match="cannot connect.*CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await connection.open()
    await connection.close()


def big_bounce(recipient: str, megabytes: int) -> bytes:
    blob = base64.encodebytes(bytes(range(256)) * (megabytes * 1024 * 1024 // 256 * 3 // 4)).replace(b"\n", b"\r\n")
    head = dsn_bounce(recipient).rsplit(b"--dsn-boundary--", 1)[0]
    return (head + b"--dsn-boundary\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"\r\n--dsn-boundary--\r\n")


async def test_50_mb_message(sqlite_engine, sqlite_url, imap_account, tmp_path):
    raw = big_bounce("huge@example.org", 50)
    assert len(raw) >= 50 * 1024 * 1024
    imap_account.deliver([raw, dsn_bounce("small@example.org")])
    config = make_config(sqlite_url, tmp_path, [mailbox_section(imap_account, timeout_s=60)])
    result = await watcher_for(config, sqlite_engine).run_once()
    assert result.stored == 2
    stored = stored_events(sqlite_engine)
    assert stored[("bounce", "huge@example.org")] == 1 and stored[("bounce", "small@example.org")] == 1
    assert imap_account.count("repmon/processed") == 2


async def test_message_above_the_size_limit_is_quarantined_unread(sqlite_engine, sqlite_url, imap_account, tmp_path):
    imap_account.deliver([big_bounce("big@example.org", 3), dsn_bounce("fine@example.org")])
    config = make_config(sqlite_url, tmp_path, [mailbox_section(imap_account, max_message_mb=1)])
    result = await watcher_for(config, sqlite_engine).run_once()
    assert (result.stored, result.quarantined) == (1, 1)
    [reason] = quarantine_reasons(sqlite_engine)
    assert "above the 1048576-byte limit" in reason
    assert imap_account.count("repmon/quarantine") == 1 and imap_account.count("INBOX") == 0


@pytest.mark.slow
async def test_mailbox_with_10000_messages(sqlite_engine, sqlite_url, imap_account, tmp_path):
    messages = mixed_batch(10_000, prefix="big", seed=11, broken_every=500)
    imap_account.deliver(messages)
    config = make_config(sqlite_url, tmp_path, [mailbox_section(imap_account, batch_size=500)])
    result = await watcher_for(config, sqlite_engine).run_once()
    assert result.stored + result.quarantined == 10_000
    assert result.quarantined == 20
    assert stored_events(sqlite_engine) == expected_events(messages)
    assert imap_account.count("INBOX") == 0


async def test_polling_when_idle_is_off(sqlite_engine, sqlite_url, imap_account, tmp_path, watching):
    config = make_config(sqlite_url, tmp_path, [mailbox_section(imap_account, idle=False, poll_interval_s=0.3)])
    watcher = watcher_for(config, sqlite_engine)
    service = asyncio.create_task(watcher.serve())
    try:
        # the first pass is done: only a later poll can find the message
        await eventually(lambda: watching["passes"] >= 1, 30, what="the first pass")
        assert not watching["idling"]
        await asyncio.to_thread(imap_account.append, [dsn_bounce("polled@example.org")])
        await wait_for(lambda: stored_events(sqlite_engine)[("bounce", "polled@example.org")] == 1, what="poll")
    finally:
        watcher.runtime.stopping.set()
        await asyncio.wait_for(service, 15)


async def test_folder_names_follow_the_servers_hierarchy_delimiter(sqlite_engine, sqlite_url, tmp_path):
    if not os.path.exists(DOVECOT):  # as the dovecot_server fixture does: skip locally, fail under CI
        peer_unavailable("dovecot is not installed (Debian package dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="repmon-dovecot-dot-"))
    server = DovecotServer(root, separator=".")
    server.setup()
    server.start()
    try:
        account = server.add_user()
        account.append([dsn_bounce("dot@example.org"), broken_report("dot")])
        config = make_config(sqlite_url, tmp_path, [mailbox_section(account)])
        result = await watcher_for(config, sqlite_engine).run_once()
        assert (result.stored, result.quarantined) == (1, 1)
        assert account.count("repmon.processed") == 1 and account.count("repmon.quarantine") == 1
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
