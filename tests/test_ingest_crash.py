"""Exactly once under crashes: `repmon run` is SIGKILLed at random moments while
it ingests 5,000 messages from Dovecot, restarted each time, and the folder
is recreated (new UIDVALIDITY, already stored messages put back) half-way.
At the end every message has produced exactly the events the parsers find in
it, once, and no message is lost."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from monitor.core.db import make_engine, session_scope
from monitor.storage.models import ProcessedMessage, QuarantinedMessage
from tests.fixtures._cli import ROOT, repmon, repmon_command
from tests.fixtures._configs import write_config
from tests.fixtures._ingest_rows import expected_events, expected_quarantine, mailbox_section, stored_events
from tests.fixtures._waiting import wait_until
from tests.fixtures.feedback_messages import mixed_batch

MESSAGES = 5000
KILLS = 6


def ledger_count(engine) -> int:
    with session_scope(engine) as session:
        return session.execute(select(func.count()).select_from(ProcessedMessage)).scalar_one()


def start(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*repmon_command(), "run", "--config", str(config), *extra], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_progress(process: subprocess.Popen, engine, since: int, timeout: float = 90) -> int:
    """Until the daemon has committed something new (so the kill lands mid-ingestion)."""

    def progress() -> int:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else ""
            pytest.fail(f"daemon exited early: {stderr}")
        try:
            count = ledger_count(engine)
        except Exception:  # schema not created yet by the first daemon
            count = 0
        return count if count > since else 0

    return wait_until(progress, timeout, what="the daemon to commit something new")


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_sigkill_storm_loses_nothing_and_counts_nothing_twice(database, request, tmp_path, imap_account):
    db_url = f"sqlite:///{tmp_path / 'repmon.db'}" if database == "sqlite" else request.getfixturevalue("postgres_url")
    messages = mixed_batch(MESSAGES, prefix="crash", seed=5, broken_every=250)
    imap_account.deliver(messages, folder="feedback")
    config = write_config(tmp_path, {"database": {"url": db_url}, "mailboxes": [mailbox_section(
        imap_account, folders=["feedback"], batch_size=100, poll_interval_s=600, retry_initial_s=0.2, retry_max_s=1)]})
    engine = make_engine(db_url)
    rng = random.Random(20240603)
    counts = []
    try:
        for round_number in range(KILLS):
            if counts and counts[-1] >= MESSAGES and round_number != KILLS // 2:
                if round_number > KILLS // 2:
                    break  # all ingested after the restore: no progress left for another kill to interrupt
                continue  # all ingested before the restore (ingestion is fast): on to the restore
            if round_number == KILLS // 2:
                # Restore-from-backup: the folder comes back with a new UIDVALIDITY holding what
                # was still unprocessed plus 300 messages that were stored already.
                pending = imap_account.fetch_all("feedback")
                done = imap_account.fetch_all("repmon/processed")[:300]
                imap_account.recreate("feedback", pending + done)
                if counts and counts[-1] >= MESSAGES:
                    continue  # nothing new to ingest: the final pass reads the restored folder again
            process = start(config)
            try:
                seen = wait_for_progress(process, engine, counts[-1] if counts else 0)
                time.sleep(rng.uniform(0.0, 0.5))
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                process.stderr.close()
            counts.append(ledger_count(engine))
            assert counts[-1] >= seen
        # Mid-ingestion kills really happened (the count kept growing and was not finished).
        assert 0 < counts[0] < MESSAGES and counts == sorted(counts)

        final = repmon("run", "--once", "--config", str(config), timeout=300)
        assert final.returncode == 0, final.stderr[-3000:]

        assert imap_account.count("feedback") == 0
        assert ledger_count(engine) == MESSAGES
        assert stored_events(engine) == expected_events(messages)
        with session_scope(engine) as session:
            quarantined = session.execute(select(func.count()).select_from(QuarantinedMessage)).scalar_one()
            pending_moves = session.execute(text("SELECT count(*) FROM pending_moves")).scalar_one()
        assert quarantined == expected_quarantine(messages) == MESSAGES // 250
        assert pending_moves == 0
        # Nothing lost on the server side either: every message sits in one of the two folders.
        kept = {hashlib.sha256(m).hexdigest() for m in
                imap_account.fetch_all("repmon/processed") + imap_account.fetch_all("repmon/quarantine")}
        assert kept == {hashlib.sha256(m).hexdigest() for m in messages}
    finally:
        engine.dispose()
