"""The metrics job of `repmon run`: the endpoint it serves, format negotiation,
collectors other parts share, `--once`, and the [metrics] section."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket

import aiohttp
import pytest
from prometheus_client.core import CounterMetricFamily

from monitor.config import RepmonConfig, parse_config
from monitor.core.config import ConfigError
from monitor.core.db import make_engine
from monitor.core.runtime import Runtime
from monitor.metrics import SHARED_COLLECTORS_KEY
from monitor.metrics.jobs import provide
from monitor.parts import collect_jobs, upgrade_schema
from tests.fixtures._ports import free_port
from tests.fixtures._waiting import eventually


@pytest.fixture
def runtime_for(tmp_path):
    engines = []

    def make(metrics: dict | None) -> tuple[RepmonConfig, Runtime]:
        url = f"sqlite:///{tmp_path / 'repmon.db'}"
        upgrade_schema(url)
        data = {"database": {"url": url}}
        if metrics is not None:
            data["metrics"] = metrics
        config = parse_config(data, base_dir=tmp_path)
        engine = make_engine(url)
        engines.append(engine)
        return config, Runtime(engine=engine)

    yield make
    for engine in engines:
        engine.dispose()


class JobsDone:
    """A process counter another part could share through runtime.shared."""

    def collect(self):
        counter = CounterMetricFamily("repmon_test_jobs_done", "Jobs done.", labels=["job"])
        counter.add_metric(["ingest"], 3)
        yield counter


def test_the_provider_is_registered_and_needs_the_section(runtime_for) -> None:
    config, runtime = runtime_for(None)
    assert provide(config.metrics, runtime, database_url=config.database_url) == []
    assert not [job for job in collect_jobs(config, runtime) if job.name.startswith("metrics")]
    config, runtime = runtime_for({"port": free_port()})
    assert [job.name for job in collect_jobs(config, runtime) if job.name.startswith("metrics")] == ["metrics:http"]


async def test_the_daemon_service_serves_metrics_until_stopped(runtime_for) -> None:
    port = free_port()
    config, runtime = runtime_for({"port": port, "refresh_s": 0})
    runtime.shared[SHARED_COLLECTORS_KEY] = [JobsDone()]
    [job] = provide(config.metrics, runtime, database_url=config.database_url)
    assert job.name == "metrics:http" and job.service is not None
    task = asyncio.create_task(job.service())
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session:
        async def scrape() -> tuple[str, str] | None:
            try:
                async with session.get(url) as response:
                    return await response.text(), response.headers["Content-Type"]
            except aiohttp.ClientConnectionError:
                return None  # not listening yet

        text, content_type = await eventually(scrape, what="the metrics endpoint to come up")
        assert content_type.startswith("text/plain; version=0.0.4")
        assert 'repmon_build_info{version="' in text
        assert 'repmon_metrics_family_up{family="events"} 1.0' in text
        assert "process_cpu_seconds_total" in text
        assert 'repmon_test_jobs_done_total{job="ingest"} 3.0' in text

        headers = {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"}
        async with session.get(url, headers=headers, auto_decompress=False) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert response.headers["Content-Encoding"] == "gzip"
            body = gzip.decompress(await response.read()).decode()
        assert body.rstrip().endswith("# EOF")
        assert "repmon_quarantine_held_messages 0.0" in body

    runtime.stopping.set()
    await asyncio.wait_for(task, 10)
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))


async def test_a_taken_port_fails_the_service_with_os_error(runtime_for) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config, runtime = runtime_for({"port": busy.getsockname()[1]})
        [job] = provide(config.metrics, runtime, database_url=config.database_url)
        assert job.service is not None
        with pytest.raises(OSError):
            await asyncio.wait_for(job.service(), 10)


async def test_once_reads_every_family_and_logs_what_was_skipped(runtime_for, caplog) -> None:
    config, runtime = runtime_for({"port": free_port()})
    [job] = provide(config.metrics, runtime, database_url=config.database_url)
    with caplog.at_level(logging.INFO, logger="repmon.metrics"):
        await job.run()
    messages = [r.getMessage() for r in caplog.records if r.name == "repmon.metrics"]
    assert any(m.startswith("metrics: ") and " series" in m for m in messages), messages


@pytest.mark.parametrize("section, error", [
    ({"listen_address": "localhost"}, "metrics.listen_address"),
    ({"port": 70000}, "metrics.port"),
    ({"dmarc_networks": ["192.0.2.0/33"]}, "metrics.dmarc_networks"),
    ({"refresh": 3}, "metrics.refresh: unknown key"),
])
def test_metrics_section_is_validated(section: dict, error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace(".", r"\.")):
        parse_config({"metrics": section})


def test_metrics_section_defaults() -> None:
    config = parse_config({"metrics": {}})
    assert config.metrics is not None
    assert (config.metrics.listen_address, config.metrics.port, config.metrics.refresh_s) == ("127.0.0.1", 9478, 15.0)
    assert parse_config({}).metrics is None
