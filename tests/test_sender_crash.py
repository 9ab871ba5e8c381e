"""Crash safety: SIGKILL the sender again and again while it delivers 20,000
messages to smtp-sink. At the end every message arrived at least once, none
is lost, and every duplicate is a message that was in flight at a kill (the
inflight rows a killed sender leaves behind are exactly the ones it may have
sent without recording it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from sqlalchemy import text

from monitor.config import load_config
from monitor.core.db import make_engine
from monitor.parts import upgrade_schema
from parsers import tracking
from sender.campaign import inject
from tests.fixtures._waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = 20_000
KILLS = 5

CHILD = """
import asyncio, sys
from monitor.config import load_config
from monitor.core.db import make_engine
from sender.coordinator import Sender
config = load_config(sys.argv[1])
engine = make_engine(config.database_url)
stats = asyncio.run(Sender(config.sender, engine).run(until_idle=True))
print(stats.delivered, stats.deferred)
"""


def test_sigkill_during_delivery_loses_nothing(smtp_sink, tmp_path):
    config_path = tmp_path / "repmon.toml"
    config_path.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "queue.db"}"\n\n[sender]\nmail_from = "b@bounce.example.com"\n'
        f'retry_initial = "1s"\n\n[sender.relay]\nhost = "127.0.0.1"\nport = {smtp_sink.port}\nconnections = 10\n\n'
        '[[sender.ips]]\naddress = "127.0.0.2"\nehlo_name = "mta2.example.com"\n')
    config = load_config(config_path)
    engine = make_engine(config.database_url)
    upgrade_schema(engine)
    template = tmp_path / "t.eml"
    template.write_bytes(b"From: n@example.com\nSubject: s {{n}}\n\n" + b"Some body text of a campaign.\n" * 60
                         + b"{{n}}\n")
    recipients = tmp_path / "r.csv"
    recipients.write_text("email,n\n" + "".join(f"u{i}@example{i % 20}.org,{i}\n" for i in range(MESSAGES)))
    assert inject(engine, config.sender, template, recipients, campaign="crash", pool="default").queued == MESSAGES

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    in_flight_at_kills: set[str] = set()
    kills = 0
    for _round in range(KILLS):
        before = smtp_sink.dump_file.stat().st_size if smtp_sink.dump_file.exists() else 0
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(config_path)], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def delivered_some_or_ended(before: int = before, child: subprocess.Popen = child) -> bool:
            # Kill once this run has delivered something (about 1,500 messages' worth of dump).
            size = smtp_sink.dump_file.stat().st_size if smtp_sink.dump_file.exists() else 0
            return size - before > 1500 * 2200 or child.poll() is not None

        wait_until(delivered_some_or_ended, timeout=60, what="the sender to deliver 1,500 messages")
        if child.poll() is not None:
            break  # it finished everything before we could kill it
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
        with engine.connect() as conn:
            in_flight_at_kills |= {r[0] for r in conn.execute(text(
                "SELECT message_id FROM sender_message WHERE state = 'inflight'"))}
    final = subprocess.run([sys.executable, "-c", CHILD, str(config_path)], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert final.returncode == 0, final.stderr

    with engine.connect() as conn:
        states = dict(conn.execute(text("SELECT state, COUNT(*) FROM sender_message GROUP BY state")).all())
        all_ids = {r[0] for r in conn.execute(text("SELECT message_id FROM sender_message"))}
    engine.dispose()

    def arrivals() -> Counter:
        arrived: Counter = Counter()
        for token, count in smtp_sink.tokens().items():
            found = tracking.decode(token)
            assert found is not None, f"undecodable tracking token {token}"
            arrived[found.message_id] += count
        return arrived

    # The sender is done; the dump holds every message it was told arrived
    # (checked below) once it holds as many distinct ones as there are.
    def all_arrived() -> Counter | None:
        arrived = arrivals()
        return arrived if len(arrived) >= len(all_ids) else None

    arrived = wait_until(all_arrived, timeout=30, interval=0.2, what="every message in the smtp-sink dump")
    duplicates = {mid: n - 1 for mid, n in arrived.items() if n > 1}
    print(f"\ncrash test: {kills} SIGKILLs, {MESSAGES} messages, {len(arrived)} distinct arrived, "
          f"{sum(duplicates.values())} duplicate deliveries of {len(duplicates)} messages, "
          f"{len(in_flight_at_kills)} messages were in flight at the kills")
    assert kills >= 3
    assert states == {"delivered": MESSAGES}
    assert set(arrived) == all_ids  # every message arrived, none lost, nothing foreign
    assert set(duplicates) <= in_flight_at_kills  # duplicates only for messages in flight at a kill
    assert all(n == 1 for n in duplicates.values())  # and each at most once more per kill it was caught in
