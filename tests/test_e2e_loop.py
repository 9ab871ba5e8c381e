"""The whole loop, on real peers, while the sender runs.

`repmon run`'s jobs (IMAP ingestion from Dovecot, blocklist checks against
rbldnsd, the sender delivering through MX records from a local DNS server
to aiosmtpd receivers, health + policy + alerts) run together, and three
incidents each stop the right lane, with one Slack message each:

1. a complaint spike: ARF reports about mail sent from 127.0.0.12 to yahoo
   land in the Dovecot mailbox -> lane 127.0.0.12/yahoo paused;
2. a listing: 127.0.0.13 appears on zen.spamhaus.org (rbldnsd) -> the IP
   paused for every destination (Spamhaus is used by all of them);
3. deferrals: acme's server answers 421 after 20 messages from 127.0.0.14 ->
   lane 127.0.0.14/acme paused (and slowed).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
from sqlalchemy import select, text

from monitor.cluster.member import ClusterMember
from monitor.config import parse_config
from monitor.core.runtime import Runtime
from monitor.daemon import _run_daemon
from monitor.health.models import HealthState
from monitor.parts import collect_jobs
from sender import jobs as sender_jobs
from sender.campaign import inject
from sender.coordinator import Sender
from tests.fixtures._health_rows import table
from tests.fixtures._ingest_rows import mailbox_section
from tests.fixtures._ports import free_port_on
from tests.fixtures._waiting import eventually
from tests.fixtures.rbldnsd import ip_zone
from tests.fixtures.slack import SlackWebhook
from tests.fixtures.smtp_receivers import MxReceiver

HOOK = "/services/T0001/B0001/e2e-secret"
ZEN_DEFAULT = ":127.0.0.2:SBL listing $"
RECEIVERS = {"yahoo": "127.0.0.21", "acme": "127.0.0.22", "listing": "127.0.0.23"}
# what Slack hears, once each
HEADLINES = ("Paused lane 127.0.0.12/yahoo (rule lane-complaint-rate-pause)",
             "Paused IP 127.0.0.13 for every destination (rule major-listing-pause)",
             "Paused lane 127.0.0.14/acme (rule lane-deferral-rate-pause)",
             "ip:127.0.0.13: listed on zen.spamhaus.org")


def complaint(original: bytes, rcpt: str, mail_from: str) -> bytes:
    """An ARF abuse report as Yahoo's feedback loop sends it, quoting the message."""
    now = format_datetime(datetime.now(timezone.utc))
    head = (f"From: Yahoo Mail AntiSpam Feedback <feedback@arf.mail.yahoo.test>\r\n"
            f"To: fbl@example.com\r\nSubject: FW: Complaint\r\nDate: {now}\r\n"
            f"Message-ID: <arf-{uuid.uuid4().hex}@arf.mail.yahoo.test>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="arf"\r\n\r\n'
            "--arf\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nThis is an email abuse report.\r\n\r\n"
            "--arf\r\nContent-Type: message/feedback-report\r\n\r\n"
            f"Feedback-Type: abuse\r\nUser-Agent: YahooMailFBL/1.0\r\nVersion: 1\r\n"
            f"Original-Mail-From: <{mail_from}>\r\nOriginal-Rcpt-To: <{rcpt}>\r\nArrival-Date: {now}\r\n"
            "Source-IP: 127.0.0.12\r\n\r\n--arf\r\nContent-Type: message/rfc822\r\n\r\n")
    return head.encode() + original.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n--arf--\r\n"


async def until(check, timeout: float, what: str):
    """`check` (it reads the database) until it holds, off the daemon's loop."""
    return await eventually(check, timeout, 0.2, what=what, in_thread=True)


def pauses(engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        return {(r[0], r[1]) for r in conn.execute(text(
            "SELECT source_ip, destination FROM sender_lane_directive WHERE ended_at IS NULL AND kind = 'pause' "
            "AND created_by LIKE 'policy:%'"))}


def lane_assessed(engine, subject: str, delivered: int) -> bool:
    """The health loop has assessed `subject` with `delivered` deliveries in its last hour."""
    states = table(HealthState)
    with engine.connect() as conn:
        figures = conn.execute(select(states.c.figures).where(states.c.subject == subject)).scalar()
    return bool(figures) and figures.get("1h", {}).get("delivered", 0) >= delivered


def routed_back(engine, campaigns: list[str]) -> bool:
    """Every message of `campaigns` was routed onto its lane and is waiting there, not in flight."""
    marks = ", ".join(f":c{i}" for i in range(len(campaigns)))
    with engine.connect() as conn:
        waiting = conn.execute(text(f"SELECT COUNT(*) FROM sender_message WHERE campaign IN ({marks}) AND NOT "
                                    "(state = 'queued' AND lane <> '')"),
                               {f"c{i}": c for i, c in enumerate(campaigns)}).scalar()
    return waiting == 0


def send(engine, cfg, tmp_path, name: str, pool: str, addresses: list[str]) -> None:
    template = tmp_path / f"{name}.eml"
    template.write_bytes(b"From: News <news@example.com>\r\nTo: {{email}}\r\nSubject: Hello {{email}}\r\n\r\n"
                         b"Hello, this is the news.\r\n")
    recipients = tmp_path / f"{name}.csv"
    recipients.write_text("email\n" + "\n".join(addresses) + "\n")
    result = inject(engine, cfg.sender, template, recipients, campaign=name, pool=pool)
    assert result.queued == len(addresses)


@pytest.fixture
def senders(monkeypatch) -> list[Sender]:
    """The senders `repmon run` starts, to look at their lanes."""
    made: list[Sender] = []

    class Recorded(Sender):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(sender_jobs, "Sender", Recorded)
    return made


def lanes_blocked(senders: list[Sender], keys: list[str]) -> bool:
    """The running sender has applied the pauses of these lanes (within its control poll)."""
    return len(senders) == 1 and all(k in senders[0].lanes and senders[0].lanes[k].blocked() for k in keys)


async def test_three_incidents_each_stop_the_right_lane(engine, migrated_db_url, tmp_path, imap_account, senders,
                                                         rbldnsd_factory, dns_server_factory, http_fixture_server):
    port = free_port_on(list(RECEIVERS.values()))
    receivers = {"yahoo": MxReceiver(RECEIVERS["yahoo"], port), "acme": MxReceiver(RECEIVERS["acme"], port, accept_first=20),
                 "listing": MxReceiver(RECEIVERS["listing"], port)}
    blocklist = rbldnsd_factory({"zen.spamhaus.org": ip_zone(ZEN_DEFAULT, [])})
    dns = dns_server_factory({
        "yahoo.test": {"MX": ["10 mta5.am0.yahoodns.net."]}, "mta5.am0.yahoodns.net": {"A": [RECEIVERS["yahoo"]]},
        "acme-mail.test": {"MX": ["10 mx1.acme.test."]}, "mx1.acme.test": {"A": [RECEIVERS["acme"]]},
        "listing.test": {"MX": ["10 mx.listing.test."]}, "mx.listing.test": {"A": [RECEIVERS["listing"]]}})
    slack = http_fixture_server
    slack.script("POST", HOOK, SlackWebhook())
    cfg = parse_config({
        "database": {"url": migrated_db_url},
        "mailboxes": [mailbox_section(imap_account)],
        "dns": {"resolver": blocklist.resolver, "timeout_s": 1.0},
        "dnsbl": {"ips": ["127.0.0.12", "127.0.0.13", "127.0.0.14"], "interval_s": 1.0,
                  "zones": [{"name": "zen.spamhaus.org"}]},
        "sender": {"mail_from": "bounces@bounce.example.com", "nameservers": [dns.resolver], "mx_port": port,
                   "retry_initial": "10m", "connect_timeout_s": 5, "command_timeout_s": 10,
                   "ips": [{"address": "127.0.0.12", "ehlo_name": "s12.example.com", "pool": "complaints"},
                           {"address": "127.0.0.13", "ehlo_name": "s13.example.com", "pool": "listing"},
                           {"address": "127.0.0.14", "ehlo_name": "s14.example.com", "pool": "deferrals"}],
                   "providers": {"acme": {"mx_suffixes": [".acme.test"]}}},
        "health": {"domains": ["example.com"], "interval_s": 0.2},
        "alerts": {"slack": [{"name": "ops", "webhook_url": slack.url(HOOK)}], "gather_s": 1.0},
    }, base_dir=tmp_path)
    member = ClusterMember(engine, cfg.cluster, enabled=cfg.cluster.enabled_for(cfg.database_url))
    runtime = Runtime(engine=engine, holds=member.holds, node_id=member.node_id)
    jobs = collect_jobs(cfg, runtime)
    member.want(job.lease for job in jobs if job.lease)
    daemon = asyncio.create_task(_run_daemon(runtime, jobs, member))
    try:
        # --- 1. complaint spike -------------------------------------------------------------
        send(engine, cfg, tmp_path, "spring", "complaints", [f"u{i}@yahoo.test" for i in range(300)])
        await until(lambda: receivers["yahoo"].count() == 300, 60, "300 messages at yahoo")
        await until(lambda: _delivered(engine, "127.0.0.12|yahoo") == 300, 20, "the delivery log")
        # the known point: the health loop has assessed the lane with all 300 deliveries (and policy ran on it)
        await until(lambda: lane_assessed(engine, "lane:127.0.0.12/yahoo", 300), 20, "the assessment of the lane")
        assert pauses(engine) == set()
        reports = [complaint(content, rcpt, mail_from) for mail_from, rcpt, content in receivers["yahoo"].messages[:3]]
        await asyncio.to_thread(imap_account.append, reports)
        await until(lambda: ("127.0.0.12", "yahoo") in pauses(engine), 30, "the yahoo lane of .12 to pause")

        # --- 2. a listing appears ----------------------------------------------------------------
        send(engine, cfg, tmp_path, "news", "listing", [f"l{i}@listing.test" for i in range(10)])
        await until(lambda: receivers["listing"].count() == 10, 30, "the listing.test mail of .13")
        # The pause below lands right after the routing batch that went to .13's lane; routing
        # goes on for the other pools all the same (the sender routes at least once a second
        # whatever its last targets; tests/test_sender_engine.py::
        # test_a_paused_lane_does_not_hold_up_routing_for_other_pools), so no pause is needed here.
        await asyncio.to_thread(blocklist.set_zone, "zen.spamhaus.org", ip_zone(ZEN_DEFAULT, ["127.0.0.13"]))
        await until(lambda: ("127.0.0.13", "*") in pauses(engine), 30, "127.0.0.13 to pause")

        # --- 3. deferrals ----------------------------------------------------------------------------
        send(engine, cfg, tmp_path, "acme", "deferrals", [f"a{i}@acme-mail.test" for i in range(100)])
        await until(lambda: ("127.0.0.14", "acme") in pauses(engine), 60, "the acme lane of .14 to pause")
        # the known point: the sender has applied the three pauses (the policy stores them, the
        # sender reads them with its control poll) and the acme lane has no message in flight
        held = ["127.0.0.12|yahoo", "127.0.0.13|mx:mx.listing.test", "127.0.0.14|acme"]
        await eventually(lambda: lanes_blocked(senders, held), 20, what="the sender to apply the pauses")
        await until(lambda: _in_flight(engine, "127.0.0.14|acme") == 0, 20, "the acme lane to hand its mail back")

        # only the right lanes stopped, and they stay stopped while the sender runs
        assert pauses(engine) == {("127.0.0.12", "yahoo"), ("127.0.0.13", "*"), ("127.0.0.14", "acme")}
        acme_attempts = receivers["acme"].rcpt_attempts
        send(engine, cfg, tmp_path, "after", "complaints", [f"v{i}@yahoo.test" for i in range(20)])
        send(engine, cfg, tmp_path, "after2", "listing", [f"m{i}@listing.test" for i in range(10)])
        send(engine, cfg, tmp_path, "after3", "deferrals", [f"b{i}@acme-mail.test" for i in range(20)])
        # A marker through an open lane (.12 is paused for yahoo only), queued after them: once
        # it arrived and the rest waits routed in its lanes, nothing else can go out unclaimed.
        send(engine, cfg, tmp_path, "marker", "complaints", ["marker@listing.test"])
        await until(lambda: "marker@listing.test" in receivers["listing"].recipients(),
                    30, "the marker at listing.test")
        await until(lambda: routed_back(engine, ["after", "after2", "after3"]), 30, "the held mail routed back")
        assert receivers["yahoo"].count() == 300 and receivers["listing"].count() == 10 + 1  # + the marker
        assert receivers["acme"].rcpt_attempts == acme_attempts and receivers["acme"].count() == 20
        # every alert went out (gathered for 1 s, sent within the next second), and the outbox is empty
        await until(lambda: _alerts_sent(slack.requests_to(HOOK)) and _outbox_empty(engine), 30, "the alerts")
    finally:
        runtime.stopping.set()
        await asyncio.wait_for(daemon, 30)
        for receiver in receivers.values():
            receiver.stop()

    texts = [r.json()["text"] for r in slack.requests_to(HOOK)]
    for headline in HEADLINES:
        assert sum(headline in t for t in texts) == 1, (headline, texts)


def _alerts_sent(requests) -> bool:
    texts = [r.json()["text"] for r in requests]
    return all(any(headline in t for t in texts) for headline in HEADLINES)


def _outbox_empty(engine) -> bool:
    with engine.connect() as conn:
        pending = conn.execute(text("SELECT COUNT(*) FROM alert_deliveries WHERE status = 'pending'")).scalar()
        undispatched = conn.execute(text("SELECT COUNT(*) FROM alert_notifications WHERE dispatched_at IS NULL")).scalar()
    return pending == 0 and undispatched == 0


def _in_flight(engine, lane: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM sender_message WHERE lane = :l AND state = 'inflight'"),
                            {"l": lane}).scalar() or 0


def _delivered(engine, lane: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM sender_delivery_log WHERE lane = :l AND outcome = 'delivered'"),
                            {"l": lane}).scalar() or 0
