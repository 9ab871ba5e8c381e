"""Moved to tests/fixtures/_ingest_rows.py; this name stays for bench/bench_ingest.py
until it imports from there."""

from tests.fixtures._ingest_rows import (  # noqa: F401
    expected_events,
    expected_quarantine,
    mailbox_section,
    make_config,
    quarantine_reasons,
    stored_events,
)
