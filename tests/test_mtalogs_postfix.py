"""A real Postfix (tests/fixtures/postfix.py) delivers to smtp-sink and to a
scripted aiosmtpd that defers and rejects; repmon reads its maillog_file,
across a rename + reload rotation, exactly once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

import monitor.mtalogs as mtalogs_package
import monitor.storage as storage_package
from monitor.core import db
from monitor.mtalogs.ingest import SourceReader
from monitor.mtalogs.models import MtaDelivery, MtaLogReject
from monitor.mtalogs.reading import delivery_counts
from monitor.mtalogs.settings import DeliveryLogConfig
from monitor.storage.models import StoredEvent, Suppression
from tests.fixtures.postfix import POSTFIX
from tests.fixtures.smtp_receivers import Script

MIGRATION_DIRS = (Path(storage_package.__file__).resolve().parent / "migrations",
                  Path(mtalogs_package.__file__).resolve().parent / "migrations")
SENDER = "news@sender.example"
USER_UNKNOWN = "550 5.1.1 <unknown@scripted.test>: Recipient address rejected: User unknown in virtual mailbox table"
RATE_LIMITED = ("450 4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP "
                "address. To protect our users from spam, mail sent from your IP address has been temporarily "
                "rate limited.")


@pytest.fixture
def engine(sqlite_url_mt):
    engine = db.make_engine(sqlite_url_mt)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_url_mt(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'repmon.db'}"
    db.upgrade_schema(url, MIGRATION_DIRS)
    return url


def outcomes(engine) -> dict[tuple[str, str | None], int]:
    with engine.connect() as conn:
        table = MtaDelivery.__table__  # type: ignore[attr-defined]
        rows = conn.execute(select(table.c.outcome, table.c.source_ip, func.count())
                            .group_by(table.c.outcome, table.c.source_ip)).all()
    return {(outcome, ip): n for outcome, ip, n in rows}


def test_postfix_log_read_exactly_once_across_rotation(private_postfix, engine):
    postfix = private_postfix(Script(rcpt_replies={"unknown@scripted.test": USER_UNKNOWN,
                                                   "busy@scripted.test": RATE_LIMITED}))
    postfix.send(SENDER, ["a@sink.example", "b@sink.example"])
    postfix.send(SENDER, ["c@ip2.test"])
    postfix.send(SENDER, ["ok@scripted.test", "unknown@scripted.test", "busy@scripted.test"])
    postfix.wait_for(lambda t: t.count("status=sent") >= 4 and "status=bounced" in t and "status=deferred" in t)

    section = DeliveryLogConfig(name="postfix-test", kind="postfix", path=postfix.maillog, source_ip="127.0.0.1",
                                source_ips={"postfix-ip2/smtp": "127.0.0.2"}, timezone="local")
    reader = SourceReader(engine, section)
    first = reader.run_pass()
    assert first.stored.rejected == 0, first
    deferred_so_far = outcomes(engine).get(("deferred", "127.0.0.1"), 0)
    assert deferred_so_far >= 1
    # delivered from 127.0.0.1: a, b, ok and Postfix's own bounce notice to the sender (from <>)
    assert outcomes(engine) == {("delivered", "127.0.0.1"): 4, ("delivered", "127.0.0.2"): 1,
                                ("bounced", "127.0.0.1"): 1, ("deferred", "127.0.0.1"): deferred_so_far}

    with engine.connect() as conn:
        domains = set(conn.execute(select(MtaDelivery.sending_domain)).scalars())
        destinations = set(conn.execute(select(MtaDelivery.destination)).scalars())
        hard = conn.execute(select(StoredEvent.__table__).where(StoredEvent.action == "failed")).mappings().one()
        delayed = conn.execute(select(StoredEvent.__table__).where(StoredEvent.action == "delayed")).mappings().first()
        suppressed = list(conn.execute(select(Suppression.address)).scalars())
    assert domains == {"sender.example", None} and destinations == {"mx:127.0.0.1"}
    assert (hard["recipient"], hard["reason"], hard["hard_or_soft"], hard["reply_code"], hard["sending_ip"]) == (
        "unknown@scripted.test", "userunknown", "hard", 550, "127.0.0.1")
    assert delayed is not None and delayed["hard_or_soft"] == "soft" and delayed["status"] == "4.7.28"
    assert suppressed == ["unknown@scripted.test"]

    # more mail, then rotation by rename + reload (postlogd opens a new maillog_file)
    postfix.send(SENDER, ["d@sink.example"])
    postfix.wait_for(lambda t: "to=<d@sink.example>" in t and t.count("status=sent") >= 5)
    postfix.maillog.rename(postfix.maillog.with_name("maillog.1"))
    subprocess.run([POSTFIX, "-c", str(postfix.config_dir), "reload"], check=True, capture_output=True, timeout=60)
    postfix.send(SENDER, ["e@sink.example", "f@ip2.test"])  # logged to the old file or the new one
    rotated = postfix.maillog.with_name("maillog.1")
    postfix.wait_for(lambda t: all(f"to=<{r}>, relay=127.0.0.1[127.0.0.1]" in rotated.read_text() + t
                                   for r in ("e@sink.example", "f@ip2.test")))

    reader.run_pass()
    after = outcomes(engine)
    assert after[("delivered", "127.0.0.1")] == 6 and after[("delivered", "127.0.0.2")] == 2
    assert after[("bounced", "127.0.0.1")] == 1
    assert reader.run_pass().lines == 0  # nothing twice
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(MtaLogReject.__table__)).scalar() == 0
        counted = sum(r.count for r in delivery_counts(conn, 0) if r.outcome == "delivered")
    assert counted == 8
