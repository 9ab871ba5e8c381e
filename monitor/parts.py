"""The parts of repmon, listed once, from the ground floor up.

Each part owns its settings section, its tables and its migrations. This module
is the one place that knows them all: the tables every part defines (for the
schema checks), the folders of their Alembic revisions (for upgrades) and the
job providers `repmon run` starts, each handed its own section of the file.
Lists, not strings: an import error here is an error, not a skipped part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sqlalchemy import MetaData
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import URL
from sqlmodel import SQLModel

from monitor import loop as reaction_loop
from monitor.alerts import models as alert_models
from monitor.api import jobs as api_jobs
from monitor.cluster import models as cluster_models
from monitor.cluster.leases import LEADER
from monitor.config import RepmonConfig
from monitor.core import db
from monitor.core.runtime import JobSpec, Runtime
from monitor.health import models as health_models
from monitor.ingest import jobs as ingest_jobs
from monitor.metrics import jobs as metrics_jobs
from monitor.mtalogs import jobs as mtalogs_jobs
from monitor.mtalogs import models as mtalogs_models
from monitor.policy import models as policy_models
from monitor.signals import jobs as signal_jobs
from monitor.signals import models as signal_models
from monitor.storage import admin_models as storage_admin_models
from monitor.storage import models as storage_models
from monitor.webhooks import jobs as webhook_jobs
from monitor.webhooks import models as webhook_models
from sender import jobs as sender_jobs
from sender import models as sender_models
from sender.lanes import lane_settings
from sender.shared_limits import SharedLimits

_HERE = Path(__file__).resolve().parent

# Every module that defines tables, storage first.
TABLE_MODULES = (storage_models, storage_admin_models, cluster_models, signal_models, sender_models,
                 health_models, policy_models, alert_models,
                 webhook_models, mtalogs_models)

# Where each part keeps its Alembic revisions (branches: core, cluster, signals, sender, health).
# health/migrations/0004_health is a historic revision that also created the
# policy_actions and alert_* tables (monitor/policy/models.py, monitor/alerts/
# models.py); a later change to those is a revision of the policy's / alerts'
# own branch, depending on 0004_health.
MIGRATION_DIRS = (
    _HERE / "storage" / "migrations",
    _HERE / "cluster" / "migrations",
    _HERE / "signals" / "migrations",
    _HERE.parent / "sender" / "migrations",
    _HERE / "health" / "migrations",
    _HERE / "webhooks" / "migrations",
    _HERE / "mtalogs" / "migrations",
)


def all_tables() -> MetaData:
    """The metadata holding every part's tables (the modules above are imported)."""
    return SQLModel.metadata


def upgrade_schema(engine_or_url: Engine | str | URL, revision: str = "heads") -> None:
    """Bring the database to the newest revision of every part."""
    db.upgrade_schema(engine_or_url, MIGRATION_DIRS, revision)


def collect_jobs(config: RepmonConfig, runtime: Runtime) -> list[JobSpec]:
    """Every part's jobs, each handed its own section, in the order one pass of
    `repmon run --once` runs them: feedback and signals in, then health, policy
    and alerts (so a listing found in this pass is acted on in this pass), then
    the sender, then what goes out (webhooks, metrics, the API)."""
    sender = config.sender if "sender" in config.model_fields_set else None
    jobs: list[JobSpec] = [
        # one owner across the cluster: each mailbox / folder, each polling cycle
        *owned_by_one(ingest_jobs.provide(runtime, mailboxes=config.mailboxes, folders=config.folders,
                                          suppression=config.suppression, dmarc=config.dmarc)),
        *owned_by_one(signal_jobs.provide(runtime, dns=config.dns, dnsbl=config.dnsbl, dns_auth=config.dns_auth,
                                          postmaster_settings=config.postmaster)),
        *owned_by_one(mtalogs_jobs.provide(config.delivery_logs, runtime)),
        # the leader: roll-up, health, policy and alert dispatch
        *owned_by_one(reaction_loop.provide(config, runtime), lease=LEADER),
        # every node: sending (within the shared lane budgets), metrics, the API
        *sender_jobs.provide(sender, runtime, shared=shared_limits(config, runtime)),
        *owned_by_one(webhook_jobs.provide(config.webhooks, runtime)),
        *metrics_jobs.provide(config.metrics, runtime, database_url=config.database_url,
                              own_networks=[*config.dnsbl.ips, *(ip.address for ip in config.sender.ips)],
                              lane_rate=lambda destination: lane_settings(config.sender, destination).rate),
        *api_jobs.provide(config, runtime),
    ]
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise ValueError(f"two jobs are named {job.name!r}")
        seen.add(job.name)
    return jobs


def owned_by_one(jobs: list[JobSpec], lease: str | None = None) -> list[JobSpec]:
    """These jobs run on one node at a time: each under its own lease (its
    name), or all under `lease`."""
    return [replace(job, lease=lease or job.name) for job in jobs]


def shared_limits(config: RepmonConfig, runtime: Runtime) -> Callable[[], SharedLimits] | None:
    """Cluster-wide lane limits when several nodes may share the database."""
    cluster = config.cluster
    if not cluster.enabled_for(config.database_url):
        return None
    return lambda: SharedLimits(runtime.engine, runtime.node_id, slice_s=cluster.budget_slice_s,
                                claim_ttl_s=cluster.lease_ttl_s, claim_every_s=cluster.heartbeat_s)
