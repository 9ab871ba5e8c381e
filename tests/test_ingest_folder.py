"""The local folder source: .eml / report files and maildirs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from monitor.core.db import session_scope
from monitor.core.runtime import Runtime
from monitor.ingest.folder import FolderReader, NotAMessageFile, list_files, read_message_file
from monitor.storage.models import FolderFile, QuarantinedMessage
from tests.fixtures._ingest_rows import expected_events, make_config, quarantine_reasons, stored_events
from tests.fixtures.feedback_messages import arf_report, broken_report, dmarc_aggregate_gz, dsn_bounce, mixed_batch


def reader(engine, db_url: str, path: Path, tmp_path: Path) -> FolderReader:
    config = make_config(db_url, tmp_path, folders=[{"path": str(path), "name": "local"}])
    return FolderReader(Runtime(engine), config.folders[0], suppression=config.suppression)


async def test_folder_of_files_read_once(engine, migrated_db_url, tmp_path):
    folder = tmp_path / "drop"
    (folder / "sub").mkdir(parents=True)
    messages = mixed_batch(30, prefix="f")
    for i, raw in enumerate(messages):
        (folder / ("sub" if i % 2 else "") / f"m{i}.eml").write_bytes(raw)
    (folder / "report.xml.gz").write_bytes(dmarc_aggregate_gz("file-report"))
    (folder / ".hidden.eml").write_bytes(dsn_bounce("hidden@example.org"))

    result = await reader(engine, migrated_db_url, folder, tmp_path).run_once()
    assert result.stored == 31
    assert stored_events(engine) == expected_events(messages + [dmarc_aggregate_gz("file-report")])

    again = await reader(engine, migrated_db_url, folder, tmp_path).run_once()
    assert again.messages == 0  # unchanged files are not even read
    (folder / "copy.eml").write_bytes(messages[0])  # same content under another name
    third = await reader(engine, migrated_db_url, folder, tmp_path).run_once()
    assert (third.stored, third.duplicates) == (0, 1)
    assert stored_events(engine) == expected_events(messages + [dmarc_aggregate_gz("file-report")])


async def test_maildir_skips_tmp_and_quarantines_broken_files(engine, migrated_db_url, tmp_path):
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.host").write_bytes(arf_report("md@example.org"))
    (maildir / "cur" / "2.host:2,S").write_bytes(broken_report("md"))
    (maildir / "tmp" / "3.host").write_bytes(dsn_bounce("half-delivered@example.org"))
    assert sorted(f.path.name for f in list_files(maildir)) == ["1.host", "2.host:2,S"]

    result = await reader(engine, migrated_db_url, maildir, tmp_path).run_once()
    assert (result.stored, result.quarantined) == (1, 1)
    assert stored_events(engine)[("feedback", "md@example.org")] == 1
    assert len(quarantine_reasons(engine)) == 1
    assert all(p.exists() for p in (maildir / "new" / "1.host", maildir / "cur" / "2.host:2,S"))  # never moved


async def test_changed_file_is_read_again(engine, migrated_db_url, tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    path = folder / "a.eml"
    path.write_bytes(dsn_bounce("first@example.org"))
    await reader(engine, migrated_db_url, folder, tmp_path).run_once()
    path.write_bytes(dsn_bounce("second@example.org"))
    os.utime(path, ns=(1, 1))
    result = await reader(engine, migrated_db_url, folder, tmp_path).run_once()
    assert result.stored == 1
    assert {r for (_, r) in stored_events(engine)} == {"first@example.org", "second@example.org"}


async def test_missing_folder_is_a_clear_error(engine, migrated_db_url, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        await reader(engine, migrated_db_url, tmp_path / "nope", tmp_path).run_once()


async def test_only_regular_files_are_read(engine, migrated_db_url, tmp_path):
    # A FIFO hung the pass; a link to /dev/zero was read until memory ran out.
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "good.eml").write_bytes(dsn_bounce("regular@example.org"))
    os.mkfifo(folder / "pipe.eml")
    (folder / "zero.eml").symlink_to("/dev/zero")
    (folder / "link.eml").symlink_to(folder / "good.eml")  # a link to a regular file is read
    result = await asyncio.wait_for(reader(engine, migrated_db_url, folder, tmp_path).run_once(), 30)
    assert (result.stored, result.duplicates, result.quarantined) == (1, 1, 2)
    reasons = sorted(quarantine_reasons(engine))
    assert reasons == ["a FIFO, not a regular file: not read", "a character device, not a regular file: not read"]
    again = await asyncio.wait_for(reader(engine, migrated_db_url, folder, tmp_path).run_once(), 30)
    assert again.messages == 0


def test_a_file_growing_past_the_limit_is_not_read_whole(tmp_path):
    path = tmp_path / "big.eml"
    path.write_bytes(b"x" * 1000)
    with pytest.raises(NotAMessageFile, match="above the 999-byte limit"):
        read_message_file(path, limit=999)
    assert read_message_file(path, limit=1000) == b"x" * 1000


async def test_a_name_that_is_not_utf8_is_stored_escaped(engine, migrated_db_url, tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    bad = os.path.join(os.fsencode(folder), b"bounce-\xff\xfe.eml")
    with open(bad, "wb") as handle:
        handle.write(dsn_bounce("latin@example.org"))
    with open(os.path.join(os.fsencode(folder), b"broken-\xe9.eml"), "wb") as handle:
        handle.write(broken_report("latin"))
    result = await reader(engine, migrated_db_url, folder, tmp_path).run_once()
    assert (result.stored, result.quarantined) == (1, 1)
    with session_scope(engine) as session:
        paths = sorted(session.execute(select(FolderFile.path)).scalars())
        location = session.execute(select(QuarantinedMessage.location)).scalar_one()
    assert paths == [f"{folder}/bounce-\\xff\\xfe.eml", f"{folder}/broken-\\xe9.eml"]
    assert location == f"{folder}/broken-\\xe9.eml"
    again = await reader(engine, migrated_db_url, folder, tmp_path).run_once()
    assert again.messages == 0  # the escaped name matches what was seen
