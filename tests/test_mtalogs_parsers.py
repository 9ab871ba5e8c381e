"""The delivery-log parsers (parsers/mtalogs/): Postfix syslog and journald lines,
PowerMTA accounting CSV, KumoMTA JSON records. Inputs are written from the
formats' documentation and real Postfix output; hostile inputs must cost time
linear in their size and never raise."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from parsers.mtalogs import KINDS, reader_for
from parsers.mtalogs.events import BadRecord, DeliveryRecord, FeedbackRecord
from parsers.mtalogs.kumomta import parse_line, parse_record
from parsers.mtalogs.postfix import MAX_QUEUE_IDS, PostfixReader
from parsers.mtalogs.times import any_time, from_bsd

NOW = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)

QMGR = "Dec  2 16:20:00 mx1 postfix/qmgr[99]: 3F1A2B3C4D: from=<bounces@news.example.org>, size=1234, nrcpt=3 (queue active)"
BOUNCED = ("Dec  2 16:24:37 mx1 postfix/smtp[1234]: 3F1A2B3C4D: to=<u@example.com>, relay=mx.example.com[192.0.2.1]:25, "
           "delay=1.2, delays=0.1/0/0.5/0.6, dsn=5.1.1, status=bounced (host mx.example.com[192.0.2.1] said: 550 5.1.1 "
           "<u@example.com>: Recipient address rejected: User unknown (in reply to RCPT TO command))")
SENT = ("Dec 02 16:24:38 mx1 postfix-ip2/smtp[1235]: 3F1A2B3C4D: to=<v@gmail.com>, "
        "relay=gmail-smtp-in.l.google.com[142.250.1.27]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, "
        "status=sent (250 2.0.0 OK  1700000000 abc.123 - gsmtp)")
DEFERRED = ("2026-12-02T16:24:39.123456+01:00 mx1 postfix/smtp[1236]: 3F1A2B3C4D: to=<w@yahoo.com>, "
            "relay=mta7.am0.yahoodns.net[67.195.204.72]:25, delay=3, delays=0/0/1/2, dsn=4.7.0, status=deferred "
            "(host mta7.am0.yahoodns.net[67.195.204.72] said: 421 4.7.0 [TSS04] Messages from 192.0.2.10 temporarily "
            "deferred due to unexpected volume or user complaints (in reply to MAIL FROM command))")
CONNECT = ("Dec  2 16:24:40 mx1 postfix/smtp[1237]: 5B6C7D8E9F: to=<x@example.net>, relay=none, delay=30, "
           "delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to mx.example.net[192.0.2.9]:25: Connection timed out)")


def test_postfix_lines_become_typed_records():
    reader = PostfixReader(now=NOW)
    assert reader.feed(QMGR) is None
    bounced = reader.feed(BOUNCED)
    assert isinstance(bounced, DeliveryRecord)
    assert (bounced.status, bounced.recipient, bounced.sender_domain, bounced.queue_id) == (
        "bounced", "u@example.com", "news.example.org", "3F1A2B3C4D")
    assert (bounced.destination_host, bounced.destination_ip, bounced.dsn, bounced.reply_code, bounced.command) == (
        "mx.example.com", "192.0.2.1", "5.1.1", 550, "RCPT")
    assert bounced.timestamp == datetime(2026, 12, 2, 16, 24, 37, tzinfo=UTC)
    assert "User unknown" in (bounced.diagnostic or "")

    sent = reader.feed(SENT)
    assert isinstance(sent, DeliveryRecord)
    assert (sent.status, sent.reply_code, sent.agent, sent.destination_host) == (
        "sent", 250, "postfix-ip2/smtp", "gmail-smtp-in.l.google.com")

    deferred = reader.feed(DEFERRED)
    assert isinstance(deferred, DeliveryRecord)
    assert deferred.status == "deferred" and deferred.reply_code == 421 and deferred.command == "MAIL"
    assert deferred.timestamp == datetime(2026, 12, 2, 15, 24, 39, 123456, tzinfo=UTC)  # ISO stamp with its zone

    connect = reader.feed(CONNECT)
    assert isinstance(connect, DeliveryRecord)
    assert (connect.destination_host, connect.destination_ip, connect.reply_code, connect.sender) == (
        "mx.example.net", "192.0.2.9", None, None)  # no qmgr line seen for this queue id


def test_postfix_forgets_removed_queue_ids_and_bounds_its_memory():
    reader = PostfixReader(now=NOW)
    reader.feed(QMGR)
    reader.feed("Dec  2 16:25:00 mx1 postfix/qmgr[99]: 3F1A2B3C4D: removed")
    assert not reader.senders
    for i in range(MAX_QUEUE_IDS + 10):
        reader.feed(f"Dec  2 16:25:00 mx1 postfix/qmgr[99]: Q{i:09d}: from=<a@b.example>, size=1, nrcpt=1 (queue active)")
    assert len(reader.senders) == MAX_QUEUE_IDS


@pytest.mark.parametrize("line", [
    "Dec  2 16:24:37 mx1 dovecot[12]: imap-login: Login: user=<x>, status=ok",  # other program, no queue id
    "Dec  2 16:24:37 mx1 postfix/smtpd[12]: connect from localhost[127.0.0.1]",
    "Dec  2 16:24:37 mx1 postfix/smtp[12]: 3F1A2B3C4D: to=<a@b.example>, relay=x[1.2.3.4]:25, status=deliverable (ok)",
    "",
])
def test_postfix_lines_that_are_no_outcome_give_nothing(line):
    assert PostfixReader(now=NOW).feed(line) is None


@pytest.mark.parametrize("line, reason", [
    ("Xyz 99 16:24:37 mx1 postfix/smtp[1]: 3F1A2B3C4D: to=<a@b.example>, status=sent (ok)", "unreadable syslog time"),
    ("Dec  2 16:24:37 mx1 postfix/smtp[1]: 3F1A2B3C4D: to=<a@b.example>, relay=none, status=weird (x)", "unknown status"),
])
def test_postfix_unreadable_delivery_lines_are_bad_records(line, reason):
    record = PostfixReader(now=NOW).feed(line)
    assert isinstance(record, BadRecord) and reason in record.reason and record.raw


def test_postfix_journal_records():
    reader = reader_for("postfix-journal", now=NOW)
    qmgr = {"MESSAGE": QMGR.split(": ", 1)[1], "SYSLOG_IDENTIFIER": "postfix/qmgr", "__REALTIME_TIMESTAMP": "1796228400000000"}
    line = {"MESSAGE": BOUNCED.split(": ", 1)[1], "SYSLOG_IDENTIFIER": "postfix/smtp",
            "__REALTIME_TIMESTAMP": "1796228477000000", "__CURSOR": "s=abc;i=1"}
    assert reader(json.dumps(qmgr)) == []
    (record,) = reader(json.dumps(line))
    assert isinstance(record, DeliveryRecord)
    assert record.timestamp == datetime.fromtimestamp(1796228477, UTC) and record.sender == "bounces@news.example.org"
    (bad,) = reader('{"MESSAGE": "x status=sent", ')
    assert isinstance(bad, BadRecord)


def test_bsd_stamps_take_the_year_that_is_not_in_the_future():
    january = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)
    assert from_bsd("Dec", "31", "23:59:59", january, UTC) == datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert from_bsd("Jan", "1", "00:04:00", january, UTC) == datetime(2027, 1, 1, 0, 4, tzinfo=UTC)
    paris = timezone(timedelta(hours=1))
    assert from_bsd("Dec", "2", "17:00:00.250", NOW, paris) == datetime(2026, 12, 2, 16, 0, 0, 250000, tzinfo=UTC)
    assert from_bsd("Feb", "30", "10:00:00", NOW, UTC) is None
    assert any_time("1796228477") == any_time(1796228477.0) == any_time("2026-12-02T17:21:17+01:00")
    assert any_time("12") is None and any_time(True) is None


# -- PowerMTA ------------------------------------------------------------------------------

PMTA = "\n".join([
    "type,timeLogged,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,dlvSourceIp,dlvDestinationIp,vmta,jobId",
    "d,1796228400,bounces@news.example.org,a@gmail.com,relayed,2.0.0 (success),smtp;250 2.0.0 OK,"
    "gmail-smtp-in.l.google.com (142.250.1.27),,192.0.2.10,142.250.1.27,vmta1,job-7",
    "b,2026-12-02 16:01:00-0000,bounces@news.example.org,b@example.com,failed,5.1.1 (bad destination mailbox address),"
    '"smtp;550 5.1.1 <b@example.com>: no such user, sorry",mx.example.com (192.0.2.1),bad-mailbox,192.0.2.10,'
    "192.0.2.1,vmta1,job-7",
    "t,1796228500,bounces@news.example.org,c@yahoo.com,delayed,4.7.0,smtp;421 4.7.0 [TSS04] try later,"
    "mta5.am0.yahoodns.net (67.195.204.72),,192.0.2.11,,vmta2,",
    "r,1796228500,bounces@news.example.org,d@x.example,,,,,,,,,",
    "rb,1796228600,bounces@news.example.org,e@example.com,failed,5.2.1,smtp;550 5.2.1 mailbox disabled,,inactive-mailbox,,,,",
]) + "\n"


def test_pmta_records_are_read_by_their_header():
    reader = reader_for("pmta")
    records = [r for line in PMTA.splitlines() for r in reader(line)]
    assert [type(r).__name__ for r in records] == ["DeliveryRecord"] * 4
    d, b, t, rb = records
    assert isinstance(d, DeliveryRecord) and isinstance(b, DeliveryRecord)
    assert (d.status, d.source_ip, d.destination_host, d.destination_ip, d.agent, d.reply_code, d.dsn) == (
        "sent", "192.0.2.10", "gmail-smtp-in.l.google.com", "142.250.1.27", "vmta1", 250, "2.0.0")
    assert (b.status, b.dsn, b.reply_code, b.sender_domain) == ("bounced", "5.1.1", 550, "news.example.org")
    assert "no such user, sorry" in (b.diagnostic or "")  # a quoted field with a comma
    assert b.timestamp == datetime(2026, 12, 2, 16, 1, tzinfo=UTC)
    assert isinstance(t, DeliveryRecord) and t.status == "deferred" and t.destination_ip == "67.195.204.72"
    assert isinstance(rb, DeliveryRecord) and rb.status == "bounced"


def test_pmta_columns_in_another_order_and_feedback_records():
    reader = reader_for("pmta")
    lines = ["type,rcpt,timeLogged,feedbackType,sourceIp,orig,reportedDomain,userAgent",
             "f,angry@aol.com,1796228400,abuse,192.0.2.10,bounces@news.example.org,news.example.org,Yahoo!-Mail-Feedback/2.0",
             "d,ok@aol.com,1796228401,,,bounces@news.example.org,,"]
    records = [r for line in lines for r in reader(line)]
    feedback, delivery = records
    assert isinstance(feedback, FeedbackRecord)
    assert (feedback.recipient, feedback.feedback_type, feedback.source_ip, feedback.reported_domain) == (
        "angry@aol.com", "abuse", "192.0.2.10", "news.example.org")
    assert isinstance(delivery, DeliveryRecord) and delivery.recipient == "ok@aol.com"


@pytest.mark.parametrize("lines, reason", [
    (["d,1796228400,a@b.example,c@d.example"], "before any header"),
    (["type,timeLogged,rcpt", "d,yesterday,c@d.example"], "timeLogged"),
    (["type,timeLogged,rcpt", 'd,1796228400,"unterminated'], "not a CSV record"),
    (["type,timeLogged,rcpt", "zz,1796228400,c@d.example"], "unknown record type"),
])
def test_pmta_bad_records(lines, reason):
    reader = reader_for("pmta")
    records = [r for line in lines for r in reader(line)]
    assert len(records) == 1 and isinstance(records[0], BadRecord) and reason in records[0].reason


# -- KumoMTA -------------------------------------------------------------------------------

def kumo(kind: str, **extra) -> dict:
    record = {
        "type": kind, "id": "1d98076abbbc11ed940250ebf67f93bd", "sender": "bounces@news.example.org",
        "recipient": "user@gmail.com", "queue": "campaign:tenant@gmail.com",
        "site": "ip-1->(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com.", "size": 1047,
        "response": {"code": 250, "enhanced_code": {"class": 2, "subject": 0, "detail": 0},
                     "content": "OK ids=8a5475ccbbc611eda12250ebf67f93bd", "command": "."},
        "peer_address": {"name": "gmail-smtp-in.l.google.com.", "addr": "142.251.2.27"},
        "timestamp": 1796228400, "created": 1796228390, "num_attempts": 0, "bounce_classification": "Uncategorized",
        "egress_pool": "pool-0", "egress_source": "ip-1", "source_address": {"address": "192.0.2.10:0", "server": None},
        "feedback_report": None, "meta": {}, "headers": {}, "delivery_protocol": "ESMTP", "reception_protocol": None,
        "nodeid": "557f3ad4-2c8c-11ee-976e-782d7e12e173",
    }
    record.update(extra)
    return record


def test_kumomta_records():
    (delivery,) = parse_line(json.dumps(kumo("Delivery")))
    assert isinstance(delivery, DeliveryRecord)
    assert (delivery.status, delivery.source_ip, delivery.destination_host, delivery.destination_ip, delivery.dsn,
            delivery.reply_code, delivery.agent, delivery.command) == (
        "sent", "192.0.2.10", "gmail-smtp-in.l.google.com", "142.251.2.27", "2.0.0", 250, "ip-1", "DATA")
    bounce = kumo("Bounce", recipient=["a@gmail.com", "b@gmail.com"], peer_address=None,
                  timestamp="2026-12-02T16:00:00Z", source_address={"address": "[2001:db8::5]:0"},
                  response={"code": 550, "enhanced_code": {"class": 5, "subject": 1, "detail": 1},
                            "content": "The email account that you tried to reach does not exist.", "command": "RCPT TO"})
    first, second = parse_record(bounce)
    assert isinstance(first, DeliveryRecord) and isinstance(second, DeliveryRecord)
    assert (first.recipient, second.recipient, first.status, first.dsn, first.command) == (
        "a@gmail.com", "b@gmail.com", "bounced", "5.1.1", "RCPT")
    assert first.destination_host == "gmail-smtp-in.l.google.com"  # from the site name
    assert first.source_ip == "2001:db8::5" and first.diagnostic and first.diagnostic.startswith("550 5.1.1 The email")
    (transient,) = parse_record(kumo("TransientFailure", response={"code": 421, "content": "try later"}))
    assert isinstance(transient, DeliveryRecord) and transient.status == "deferred" and transient.dsn is None
    assert parse_record(kumo("Reception")) == [] and parse_record(kumo("AdminBounce")) == []


def test_kumomta_feedback_and_bad_records():
    report = {"feedback_type": "abuse", "user_agent": "SomeGenerator/1.0", "version": "1",
              "original_mail_from": "bounces@news.example.org", "original_rcpt_to": ["angry@yahoo.com"],
              "reported_domain": "news.example.org", "source_ip": "192.0.2.10", "arrival_date": "2026-12-02T15:00:00Z"}
    (feedback,) = parse_record(kumo("Feedback", feedback_report=report))
    assert isinstance(feedback, FeedbackRecord)
    assert (feedback.recipient, feedback.feedback_type, feedback.source_ip) == ("angry@yahoo.com", "abuse", "192.0.2.10")
    for bad in ("{not json", "[1, 2]", json.dumps(kumo("Delivery", timestamp="soon")),
                json.dumps(kumo("Delivery", recipient=[1, 2])), json.dumps({"id": "x"}),
                json.dumps(kumo("Feedback"))):
        (record,) = parse_line(bad)
        assert isinstance(record, BadRecord), bad


# -- hostile input ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_hostile_lines_cost_linear_time_and_never_raise(kind):
    pieces = ["status=", "(", "said: ", "to=<", ", ", '"', "{", "[", "in reply to ", "connect to ", "\x00", "é"]
    reader = reader_for(kind, now=NOW)
    timings = []
    for size in (20_000, 40_000):
        started = time.perf_counter()
        for piece in pieces:
            line = "Dec  2 16:24:37 mx1 postfix/smtp[1]: 3F1A2B3C4D: to=<a@b.example>, " + piece * (size // len(piece))
            reader(line)
            reader("type,timeLogged," + piece * (size // len(piece)))
            reader('{"type": "Delivery", "recipient": "' + piece.replace('"', "'") * (size // len(piece)) + '"}')
        timings.append(time.perf_counter() - started)
    assert timings[1] < max(timings[0], 0.005) * 4 + 0.05  # doubling the size does not square the time


def test_a_long_lived_postfix_reader_places_stamps_against_the_clock_of_each_line():
    reader = PostfixReader()  # no fixed `now`: a daemon's reader lives for months
    today = datetime.now(UTC)
    stamp = today.strftime("%b %d %H:%M:%S")
    record = reader.feed(f"{stamp} mx1 postfix/smtp[1]: 3F1A2B3C4D: to=<a@b.example>, relay=x.example[192.0.2.1]:25, "
                         "delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)")
    assert isinstance(record, DeliveryRecord) and abs((record.timestamp - today).total_seconds()) < 2
