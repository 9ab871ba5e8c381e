"""The parse pool (monitor/ingest/pool.py): what it stores is what parsing in
a thread stores, and batches read ahead are committed in order, once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from monitor.core.db import make_engine
from monitor.core.runtime import Runtime
from monitor.ingest.folder import FolderReader
from monitor.ingest.pool import ParsePool, _jobs
from monitor.ingest.settings import ParsingConfig
from monitor.parts import upgrade_schema
from monitor.storage.models import DmarcRecord, ProcessedMessage
from tests.fixtures.feedback_messages import dmarc_aggregate_gz, mixed_batch
from tests.ingest_helpers import expected_events, make_config, stored_events


async def _ingest(engine, url: str, folder: Path, tmp_path: Path, workers: int):
    config = make_config(url, tmp_path, folders=[{"path": str(folder), "name": "pool"}])
    pool = ParsePool(ParsingConfig(workers=workers), config.dmarc)
    try:
        return await FolderReader(Runtime(engine), config.folders[0], suppression=config.suppression,
                                  pool=pool).run_once()
    finally:
        pool.close()


def _records(engine) -> list[tuple]:
    r = DmarcRecord.__table__  # type: ignore[attr-defined]
    columns = [c for c in r.columns if c.name not in ("id", "report_pk")]
    with engine.connect() as conn:
        return sorted(tuple(row) for row in conn.execute(select(*columns)))


async def test_pool_and_thread_store_the_same(engine, migrated_db_url, tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    messages = mixed_batch(120, prefix="pool", broken_every=40) + [dmarc_aggregate_gz("pool-report")]
    for i, raw in enumerate(messages):
        (folder / f"m{i:03d}.eml").write_bytes(raw)
    pooled = await _ingest(engine, migrated_db_url, folder, tmp_path, workers=2)

    thread_url = f"sqlite:///{tmp_path / 'thread.db'}"
    upgrade_schema(thread_url)
    thread_engine = make_engine(thread_url)
    try:
        threaded = await _ingest(thread_engine, thread_url, folder, tmp_path, workers=0)
        assert (pooled.stored, pooled.quarantined, pooled.events, pooled.suppressions) == (
            threaded.stored, threaded.quarantined, threaded.events, threaded.suppressions)
        assert stored_events(engine) == stored_events(thread_engine) == expected_events(messages)
        assert _records(engine) == _records(thread_engine) and len(_records(engine)) == 2
    finally:
        thread_engine.dispose()
    with engine.connect() as conn:
        assert conn.execute(select(ProcessedMessage.__table__.c.id)).all().__len__() == len(messages)


def test_jobs_are_bounded_by_count_and_bytes():
    items = [(b"x" * 10, i) for i in range(120)] + [(b"y" * (9 * 1024 * 1024), 999), (b"z", 1000)]
    jobs = _jobs(items)
    assert [len(job) for job in jobs] == [50, 50, 20, 1, 1]
    assert [uid for job in jobs for _, uid in job] == [uid for _, uid in items]  # order kept
