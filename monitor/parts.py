"""The parts of repmon, listed once, from the ground floor up.

Each part owns its settings section, its tables and its migrations. This module
is the one place that knows them all: the tables every part defines (for the
schema checks), the folders of their Alembic revisions (for upgrades) and the
job providers `repmon run` starts, each handed its own section of the file.
Lists, not strings: an import error here is an error, not a skipped part.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import MetaData
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import URL
from sqlmodel import SQLModel

from monitor.config import RepmonConfig
from monitor.core import db
from monitor.core.runtime import JobSpec, Runtime
from monitor.health import jobs as health_jobs
from monitor.health import models as health_models
from monitor.ingest import jobs as ingest_jobs
from monitor.metrics import jobs as metrics_jobs
from monitor.signals import jobs as signal_jobs
from monitor.signals import models as signal_models
from monitor.storage import models as storage_models
from sender import jobs as sender_jobs
from sender import models as sender_models

_HERE = Path(__file__).resolve().parent

# Every module that defines tables, storage first.
TABLE_MODULES = (storage_models, signal_models, sender_models, health_models)

# Where each part keeps its Alembic revisions (branches: core, signals, sender, health).
MIGRATION_DIRS = (
    _HERE / "storage" / "migrations",
    _HERE / "signals" / "migrations",
    _HERE.parent / "sender" / "migrations",
    _HERE / "health" / "migrations",
)


def all_tables() -> MetaData:
    """The metadata holding every part's tables (the modules above are imported)."""
    return SQLModel.metadata


def upgrade_schema(engine_or_url: Engine | str | URL, revision: str = "heads") -> None:
    """Bring the database to the newest revision of every part."""
    db.upgrade_schema(engine_or_url, MIGRATION_DIRS, revision)


def collect_jobs(config: RepmonConfig, runtime: Runtime) -> list[JobSpec]:
    """Every part's jobs, in the order one pass of `repmon run --once` needs them:
    signals and feedback in, then the sender, then health/policy/alerts, then metrics."""
    jobs: list[JobSpec] = [
        *ingest_jobs.provide(config, runtime),
        *signal_jobs.provide(config, runtime),
        *sender_jobs.provide(config, runtime),
        *metrics_jobs.provide(config, runtime),
        *health_jobs.provide(config, runtime),
    ]
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise ValueError(f"two jobs are named {job.name!r}")
        seen.add(job.name)
    return jobs
