"""Ingestion jobs for `repmon run`: one service per IMAP mailbox folder (IDLE
or polling, reconnecting with back-off) and one interval job per local folder."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.core.config import ConfigError
from monitor.core.runtime import JobSpec, Runtime
from monitor.ingest.folder import FolderReader
from monitor.ingest.imap import FolderWatcher
from monitor.ingest.settings import DmarcConfig, FolderSourceConfig, MailboxConfig, SuppressionConfig


def provide(runtime: Runtime, *, mailboxes: Sequence[MailboxConfig], folders: Sequence[FolderSourceConfig],
            suppression: SuppressionConfig, dmarc: DmarcConfig | None = None) -> list[JobSpec]:
    jobs: list[JobSpec] = []
    for mailbox in mailboxes:
        # Every secret now, not at the first connection: a missing variable or an
        # unreadable file stops start-up with a ConfigError that names it.
        mailbox.resolve_password()
        for folder in mailbox.folders:
            if folder in (mailbox.processed_folder, mailbox.quarantine_folder):
                raise ConfigError(f"mailbox {mailbox.display_name}: folder {folder!r} is also the processed or "
                                  "quarantine folder; messages would be read again and again")
            watcher = FolderWatcher(runtime, mailbox, folder, suppression=suppression, dmarc=dmarc)
            jobs.append(JobSpec(name=f"imap:{mailbox.display_name}/{folder}", run=watcher.run_once,
                                service=watcher.serve))
    for source in folders:
        reader = FolderReader(runtime, source, suppression=suppression, dmarc=dmarc)
        jobs.append(JobSpec(name=f"folder:{source.name or source.path}", run=reader.run_once,
                            interval_s=source.poll_interval_s))
    return jobs
