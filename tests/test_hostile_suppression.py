"""Issue 14 item 5 (and issue 10): a forged or doubtful bounce must not
mass-suppress addresses repmon never sent to."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from monitor.core.db import session_scope
from monitor.core.runtime import Runtime
from monitor.ingest.commit import commit_batch
from monitor.ingest.folder import FolderReader
from monitor.ingest.messages import Prepared, prepare
from monitor.ingest.settings import SuppressionConfig
from monitor.storage.models import StoredEvent, Suppression
from parsers import tracking
from parsers.events import BounceEvent
from tests.fixtures._hostile import mass_dsn
from tests.ingest_helpers import make_config, quarantine_reasons

SETTINGS = SuppressionConfig()


def suppressions(engine) -> int:
    with session_scope(engine) as session:
        return int(session.execute(select(func.count()).select_from(Suppression)).scalar_one())


async def test_a_dsn_naming_100000_recipients_suppresses_none_and_is_held(engine, migrated_db_url, tmp_path: Path):
    drop = tmp_path / "drop"
    drop.mkdir()
    raw = mass_dsn(100_000)
    assert 7_000_000 < len(raw) < 8_000_000
    (drop / "forged.eml").write_bytes(raw)
    config = make_config(migrated_db_url, tmp_path, folders=[{"path": str(drop)}])
    assert config.suppression.max_recipients_per_report == 100
    result = await FolderReader(Runtime(engine), config.folders[0], suppression=config.suppression).run_once()
    assert (result.stored, result.quarantined, result.suppressions) == (0, 1, 0)
    assert suppressions(engine) == 0
    [reason] = quarantine_reasons(engine)
    assert "100,000 recipients" in reason and "max_recipients_per_report = 100" in reason


def test_the_cap_holds_on_every_source(engine):
    # Even when a source did not hold the message back, the commit suppresses none of them.
    result = commit_batch(engine, "imap:x", [prepare(mass_dsn(101))], SETTINGS)
    assert result.events == 101 and result.suppressions == 0
    assert commit_batch(engine, "imap:x", [prepare(mass_dsn(100, first=1000))], SETTINGS).suppressions == 100


def test_a_tracked_bounce_suppresses_only_a_single_recipient(engine):
    token = tracking.encode("<orig-mass@news.example.com>", "192.0.2.10", "june")
    # repmon's sender sends each message to one recipient: a bounce of it naming
    # three does not say which was ours, so none is suppressed.
    assert commit_batch(engine, "t", [prepare(mass_dsn(3, token=token))], SETTINGS).suppressions == 0
    assert commit_batch(engine, "t", [prepare(mass_dsn(1, token=token, first=50))], SETTINGS).suppressions == 1


def test_a_hard_bounce_suppresses_only_at_high_or_medium_confidence(engine):
    events = [BounceEvent(recipient=f"{level}@example.org", reason="userunknown", hard_or_soft="hard",
                          status="5.1.1", confidence=level)
              for level in ("high", "medium", "low")]
    result = commit_batch(engine, "t", [Prepared(sha256="c" * 64, size=1, raw=b"x", events=list(events))], SETTINGS)
    assert (result.events, result.suppressions) == (3, 2)
    with session_scope(engine) as session:
        assert sorted(session.execute(select(Suppression.address)).scalars()) == ["high@example.org",
                                                                                  "medium@example.org"]
        assert session.execute(select(func.count()).select_from(StoredEvent)).scalar_one() == 3
