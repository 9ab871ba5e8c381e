"""The signals migration builds exactly the tables of monitor/signals/models.py,
and the daemon jobs the signals part provides."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from monitor.config import RepmonConfig, parse_config
from monitor.core.config import ConfigError
from monitor.core.db import current_revisions
from monitor.core.runtime import JobSpec, Runtime
from monitor.parts import all_tables
from monitor.signals import models
from monitor.signals.jobs import provide

SIGNAL_TABLES = {models.DnsblState.__tablename__, models.DnsblZoneHealth.__tablename__,
                 models.SignalEvent.__tablename__, models.DnsAuthCheck.__tablename__,
                 models.PostmasterDomainDay.__tablename__, models.SndsIpDay.__tablename__,
                 models.SndsIpStatus.__tablename__, models.SignalFetchState.__tablename__}


def provide_for(config: RepmonConfig, runtime: Runtime) -> list[JobSpec]:
    """The signals jobs for the sections of `config` (as monitor/parts.py hands them)."""
    return provide(runtime, dns=config.dns, dnsbl=config.dnsbl, dns_auth=config.dns_auth,
                   postmaster_settings=config.postmaster)


def _table_of(diff) -> str | None:
    entry = diff[0] if isinstance(diff, list) else diff
    for item in entry[1:]:
        name = getattr(item, "name", None) if not isinstance(item, str) else item
        table = getattr(item, "table", None)
        if table is not None:
            return table.name
        if isinstance(name, str) and name in SIGNAL_TABLES:
            return name
    return None


def test_migration_matches_models(engine):
    assert "0002_signals" in current_revisions(engine)
    metadata = all_tables()
    assert SIGNAL_TABLES <= set(metadata.tables)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(context, metadata) if _table_of(d) in SIGNAL_TABLES]
    assert diffs == []


def test_no_jobs_without_configuration(engine):
    assert provide_for(parse_config({}), Runtime(engine)) == []


def test_jobs_for_each_configured_source(engine, tmp_path):
    config = parse_config({
        "dnsbl": {"ips": ["192.0.2.1"], "interval_s": 600},
        "dns_auth": {"domains": ["example.com"], "interval_s": 1800},
        "postmaster": {"google": {"service_account_file": str(tmp_path / "sa.json")},
                       "snds": {"data_key": "k", "interval_s": 7200}},
    })
    jobs = {job.name: job.interval_s for job in provide_for(config, Runtime(engine))}
    assert jobs == {"signals:dnsbl": 600, "signals:dns-auth": 1800, "signals:google-postmaster": 21600,
                    "signals:snds": 7200}


def test_missing_dqs_key_fails_at_start_up(engine, monkeypatch):
    monkeypatch.delenv("REPMON_NO_SUCH_KEY", raising=False)
    config = parse_config({"dnsbl": {"ips": ["192.0.2.1"], "dqs_key_env": "REPMON_NO_SUCH_KEY"}})
    with pytest.raises(ConfigError, match="REPMON_NO_SUCH_KEY"):
        provide_for(config, Runtime(engine))
