"""Ingestion: feedback mail and report files in, events stored exactly once.

Sources: IMAP mailboxes (monitor/ingest/imap.py, IDLE or polling) and local
folders of .eml files or maildirs (monitor/ingest/folder.py). Both walk their
backlog with the same batch loop (batches.py: progress bar, summary line) and
hand raw messages to the same two steps:

1. `prepare` (messages.py): hash the raw bytes (SHA-256), read a few headers,
   run `parsers.parse_bytes`; DMARC aggregate records get where their mail
   came from (sources.py: offline lookups, reverse DNS when `[dmarc]
   reverse_dns = true`). Pure, no I/O but the optional PTR lookups. It runs
   in the parse pool (pool.py: worker processes, a time budget per message,
   the event rows built there too), batch i+1 being read and parsed while
   batch i is committed (batches.ingest_pipelined).
2. `commit_batch` (commit.py): ONE database transaction per batch that
   - skips every message whose hash is already in the ledger
     (`processed_messages`), so nothing is counted twice;
   - inserts the ledger row, the message's events / reports, and the
     suppressions they cause, or a quarantine row with the reason;
   - for IMAP also advances the folder's UID checkpoint and records where each
     message must be moved (`pending_moves`).
   Only after the commit is the message moved on the server (to the processed
   or quarantine folder); the pending move is then deleted.

Why this gives exactly once: the events and the ledger row are written or not
written together. A crash before the commit leaves no trace, and the message,
still in its folder, is read again. A crash after the commit but before the
move leaves a pending move (done on the next pass) and a checkpoint past the
UID (so it is not fetched again); even if it were fetched again - after a
UIDVALIDITY change the checkpoint is reset and the whole folder re-read - its
hash is in the ledger and it is only moved. Nothing is dropped either: a
message leaves its folder only after its outcome is committed, and what cannot
be parsed is kept in the quarantine folder and the quarantine table.
"""
