"""Several `repmon run` nodes on one PostgreSQL database behave as one: a lane
set to 20/s gets 20/s from all of them together, every message arrives once,
and the jobs that must run once have one owner that moves when a node dies."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine, make_url

from monitor.cluster import leases
from monitor.cluster import nodes as cluster_nodes
from monitor.core.db import make_engine, session_scope
from monitor.storage.models import ProcessedMessage
from tests.fixtures._cli import ROOT, repmon, repmon_command
from tests.fixtures._configs import relay_sender, write_config
from tests.fixtures._ports import free_port
from tests.fixtures._rates import max_in_window
from tests.fixtures.feedback_messages import mixed_batch
from tests.fixtures.smtp_receivers import Received, ScriptedSmtp
from tests.ingest_helpers import expected_events, stored_events

pytestmark = pytest.mark.postgres

TRACK_RE = re.compile(rb"^X-Repmon-Track:[ \t]*(\S+)", re.MULTILINE)
MESSAGES = 240
RATE = 20.0
BURST = 5




def ledger_count(engine: Engine) -> int:
    with session_scope(engine) as session:
        return int(session.execute(select(func.count()).select_from(ProcessedMessage)).scalar_one())


def tokens(received: list[Received]) -> Counter[str]:
    found: Counter[str] = Counter()
    for message in received:
        match = TRACK_RE.search(message.content)
        assert match, "every message carries its tracking token"
        found[match.group(1).decode()] += 1
    return found


class Nodes:
    """`repmon run` processes on one config; stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int = 1) -> None:
        for _ in range(count):
            log = (self.logs / f"node{len(self.procs)}.log").open("wb")
            self.procs.append(subprocess.Popen([*repmon_command(), "run", "--config", str(self.config)], cwd=ROOT,
                                               stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)))

    def kill(self, index: int) -> None:
        self.procs[index].send_signal(signal.SIGKILL)
        self.procs[index].wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("node*.log")))


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[[Path], Nodes]]:
    made: list[Nodes] = []

    def make(config: Path) -> Nodes:
        group = Nodes(config, tmp_path)
        made.append(group)
        return group

    yield make
    for group in made:
        group.stop()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def campaign(tmp_path: Path, postgres_url: str, port: int) -> Path:
    settings = relay_sender(postgres_url, port)
    settings["sender"]["relay"].update({"rate": f"{RATE:g}/s", "burst": BURST, "connections": 4})
    settings["cluster"] = {"heartbeat_s": 0.5, "lease_ttl_s": 2.0}
    config = write_config(tmp_path, settings)
    template = tmp_path / "news.eml"
    template.write_text("From: News <news@example.com>\nSubject: Hello\n\nHi {{email}}!\n")
    recipients = tmp_path / "list.csv"
    recipients.write_text("email\n" + "".join(f"user{i}@example.org\n" for i in range(MESSAGES)))
    queued = repmon("send", "--config", str(config), "--template", str(template), "--recipients", str(recipients),
                    "--json")
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout)["queued"] == MESSAGES
    return config


@pytest.mark.parametrize("count", [2, 4])
def test_nodes_together_keep_the_lane_rate_and_send_each_message_once(
        count: int, postgres_url: str, scripted_smtp: Callable[..., ScriptedSmtp], nodes, tmp_path: Path) -> None:
    server = scripted_smtp()
    group = nodes(campaign(tmp_path, postgres_url, server.port))
    group.start(count)
    wait_for(lambda: len(server.received) >= MESSAGES, timeout=MESSAGES / RATE * 2 + 30, what="every message")
    time.sleep(1.0)  # anything sent twice would arrive now
    group.stop()
    seen = tokens(server.received)
    assert len(seen) == MESSAGES and max(seen.values()) == 1, "every message once"
    times = sorted(m.at for m in server.received)
    steady = times[BURST:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    # Never above the rate (the spike that gets an IP blocked): within 3 %. Below it a
    # loaded 2-core machine running 4 nodes, PostgreSQL and the receiver may fall
    # behind (a granted time used more than 0.2 s late is dropped, not sent late);
    # bench_cluster.py measures the accuracy on a quiet machine (-1.2 % worst).
    assert rate <= RATE * 1.03, f"{count} nodes sent {rate:.2f}/s on a {RATE:g}/s lane"
    assert rate >= RATE * 0.90, f"{count} nodes sent only {rate:.2f}/s on a {RATE:g}/s lane"
    # no window holds more than the lane's bound: rate x T + burst (+ the 0.2 s of lateness a slot allows)
    for window in (1.0, 5.0):
        assert max_in_window(times, window) <= RATE * window + BURST + RATE * 0.2
    assert len({m.peer for m in server.received}) == 1  # all from the lane's source address


def test_killing_a_node_loses_nothing_and_the_leader_moves(
        postgres_url: str, scripted_smtp: Callable[..., ScriptedSmtp], nodes, tmp_path: Path) -> None:
    server = scripted_smtp()
    config = campaign(tmp_path, postgres_url, server.port)
    group = nodes(config)
    group.start(2)

    def leader() -> str | None:
        done = repmon("nodes", "--config", str(config), "--json")
        return json.loads(done.stdout)["leader"] if done.returncode == 0 else None

    wait_for(lambda: leader() is not None and len(server.received) >= 60, timeout=60, what="a leader and sending")
    first = leader()
    state = json.loads(repmon("nodes", "--config", str(config), "--json").stdout)
    pids = {n["id"]: n["pid"] for n in state["nodes"]}
    victim = [i for i, p in enumerate(group.procs) if p.pid == pids[first]]
    assert victim, f"the leader {first} is one of our nodes"
    killed_at = time.monotonic()
    group.kill(victim[0])
    wait_for(lambda: leader() not in (None, first), timeout=10, what="another node to take the lead")
    assert time.monotonic() - killed_at <= 10
    wait_for(lambda: len(set(tokens(server.received))) >= MESSAGES, timeout=MESSAGES / RATE * 2 + 30,
             what="every message after the kill")
    group.stop()
    seen = tokens(server.received)
    assert len(seen) == MESSAGES, "nothing lost"
    twice = sum(1 for n in seen.values() if n > 1)
    # A SIGKILL between the receiver's 250 and the node's write of the outcome
    # can only repeat what that node had in flight: at most its connections'
    # pipelines (4 connections), never the queue.
    assert twice <= 8, f"{twice} messages sent twice"


def test_a_pause_stops_every_node_within_a_second(
        postgres_url: str, scripted_smtp: Callable[..., ScriptedSmtp], nodes, tmp_path: Path) -> None:
    server = scripted_smtp()
    config = campaign(tmp_path, postgres_url, server.port)
    group = nodes(config)
    group.start(2)
    wait_for(lambda: len(server.received) >= 40, timeout=60, what="both nodes sending")
    paused = repmon("lanes", "pause", "--config", str(config), "--ip", "127.0.0.2", "--destination", "relay",
                    "--reason", "test")
    assert paused.returncode == 0, paused.stderr
    paused_at = time.time()
    time.sleep(3.0)
    late = [m.at - paused_at for m in server.received if m.at > paused_at]
    assert not [lag for lag in late if lag > 1.0], f"messages after the pause: {sorted(late)}"
    count = len(server.received)
    assert count < MESSAGES
    resumed = repmon("lanes", "resume", "--config", str(config), "--ip", "127.0.0.2", "--destination", "relay")
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: len(server.received) >= MESSAGES, timeout=MESSAGES / RATE * 2 + 30, what="the rest after resume")
    group.stop()
    assert len(tokens(server.received)) == MESSAGES


class CuttableProxy:
    """A TCP proxy to PostgreSQL for one node; `cut()` drops its connections
    and refuses new ones: that node has lost its database."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.cut_off = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut_off.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.cut_off.set()
        self.listener.close()
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_a_node_cut_off_from_the_database_stops_rather_than_exceeding(
        postgres_url: str, scripted_smtp: Callable[..., ScriptedSmtp], nodes, tmp_path: Path) -> None:
    server = scripted_smtp()
    config = campaign(tmp_path, postgres_url, server.port)
    url = make_url(postgres_url)
    proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
    cut_settings = relay_sender(url.set(port=proxy.port).render_as_string(hide_password=False), server.port)
    cut_settings["sender"]["relay"].update({"rate": f"{RATE:g}/s", "burst": BURST, "connections": 4})
    cut_settings["cluster"] = {"heartbeat_s": 0.5, "lease_ttl_s": 2.0}
    cut_config = write_config(tmp_path / "cut.toml", cut_settings)
    group = nodes(config)
    group.start(1)
    cut_node = nodes(cut_config)
    cut_node.start(1)
    wait_for(lambda: len(server.received) >= 60, timeout=60, what="both nodes sending")
    proxy.cut()
    cut_at = time.time()
    wait_for(lambda: len(server.received) >= 60 + 8 * RATE or time.time() - cut_at > 15, timeout=30,
             what="sending to go on")
    group.stop()
    cut_node.stop()
    times = sorted(m.at for m in server.received)
    for window in (1.0, 5.0):
        assert max_in_window(times, window) <= RATE * window + BURST + RATE * 0.2
    after = [t for t in times if t > cut_at + 1.0]
    assert after, "the node that still has its database goes on sending"
    assert max_in_window(after, 5.0) <= RATE * 5 + BURST + RATE * 0.2
    seen = tokens(server.received)
    assert max(seen.values()) == 1


async def test_metrics_add_up_across_nodes_on_real_prometheus(
        postgres_url: str, scripted_smtp: Callable[..., ScriptedSmtp], nodes, tmp_path: Path, prometheus) -> None:
    """Two nodes scraped by one Prometheus: the database-wide figures come from
    the leader only, so sum() over instances counts each delivery once."""
    server = scripted_smtp()
    config = campaign(tmp_path, postgres_url, server.port)
    ports = [free_port(), free_port()]
    group = None
    for index, port in enumerate(ports):
        settings = relay_sender(postgres_url, server.port)
        settings["sender"]["relay"].update({"rate": f"{RATE:g}/s", "burst": BURST, "connections": 4})
        settings["cluster"] = {"heartbeat_s": 0.5, "lease_ttl_s": 2.0}
        settings["metrics"] = {"port": port, "refresh_s": 0}
        node_config = write_config(tmp_path / f"node{index}.toml", settings)
        node = nodes(node_config)
        node.start(1)
        group = group or node
    assert config.exists() and group is not None
    await asyncio.to_thread(wait_for, lambda: len(server.received) >= MESSAGES, MESSAGES / RATE * 2 + 30,
                            "every message")
    prom = await prometheus([f"127.0.0.1:{port}" for port in ports])
    await prom.wait_for_scrapes(4)
    assert await prom.value("sum(repmon_cluster_leader)") == 1
    assert await prom.value("count(repmon_cluster_leader)") == 2
    delivered = 'sum(repmon_sender_deliveries_total{result="delivered"})'
    deadline = time.monotonic() + 30
    while await prom.value(delivered) != MESSAGES and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert await prom.value(delivered) == MESSAGES
    # per-node process figures stay per node: one series per instance
    assert await prom.value("count(process_start_time_seconds)") == 2


def test_killing_the_mailbox_owner_moves_the_mailbox_and_counts_stay_exact(
        postgres_url: str, nodes, tmp_path: Path, imap_account) -> None:
    """Two nodes, one real Dovecot mailbox: one node reads it; SIGKILL it mid-
    ingestion and the other takes the mailbox over within 10 s; at the end every
    message produced its events once."""
    count = 4000
    messages = mixed_batch(count, prefix="cluster", seed=11, broken_every=250)
    imap_account.deliver(messages, folder="feedback")
    settings = {
        "database": {"url": postgres_url},
        "cluster": {"heartbeat_s": 0.5, "lease_ttl_s": 2.0},
        "mailboxes": [{"host": "127.0.0.1", "port": imap_account.server.imap_port, "security": "none",
                       "username": imap_account.username, "password": imap_account.password,
                       "folders": ["feedback"], "batch_size": 50, "poll_interval_s": 1,
                       "retry_initial_s": 0.2, "retry_max_s": 1}],
    }
    config = write_config(tmp_path, settings)
    group = nodes(config)
    group.start(2)
    engine = make_engine(postgres_url)
    try:
        def ledger() -> int:
            try:
                return ledger_count(engine)
            except Exception:  # the schema is being created by the first node
                return 0

        wait_for(lambda: ledger() >= 50, timeout=90, what="ingestion to start")
        owners = {lease.owner for lease in leases.list_leases(engine)
                  if lease.name.startswith("imap:") and lease.expires_at > time.time()}
        assert len(owners) == 1, "one node reads the mailbox"
        owner = owners.pop()
        assert owner is not None
        owner_pid = {n.node_id: n.pid for n in cluster_nodes.list_nodes(engine)}[owner]
        victim = [i for i, p in enumerate(group.procs) if p.pid == owner_pid]
        group.kill(victim[0])
        killed_at = time.monotonic()
        before = ledger()
        assert before < count - 500, "the kill landed mid-ingestion"
        wait_for(lambda: ledger() > before + 50, timeout=30, what="the other node to go on reading")
        assert time.monotonic() - killed_at <= 10 + 5  # lease expiry (<10 s) plus a batch
        wait_for(lambda: ledger() >= count, timeout=180, what="every message")
        time.sleep(1.0)
        group.stop()
        assert ledger() == count
        assert stored_events(engine) == expected_events(messages)
        assert imap_account.count("feedback") == 0
    finally:
        engine.dispose()
