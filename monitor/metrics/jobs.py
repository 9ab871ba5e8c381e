"""The metrics job of `repmon run`: a service serving /metrics while the
daemon runs ([metrics] section present). With `--once` its pass reads every
metric family once and logs which could not be read, so a configuration can
be checked without starting the endpoint."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.engine import Engine

from monitor.cluster.leases import LEADER
from monitor.core.runtime import JobSpec, Runtime
from monitor.metrics import SHARED_COLLECTORS_KEY
from monitor.metrics.collector import RepmonCollector
from monitor.metrics.reading import reader_engine
from monitor.metrics.server import MetricsServer
from monitor.metrics.settings import MetricsConfig

LaneRate = Callable[[str], float | None]

log = logging.getLogger("repmon.metrics")


def provide(settings: MetricsConfig | None, runtime: Runtime, *, database_url: str,
            own_networks: Sequence[str] = (), lane_rate: LaneRate | None = None) -> list[JobSpec]:
    """The endpoint job when the [metrics] section is present. `own_networks`:
    our sending addresses/networks (DMARC source IPs outside them are "other";
    the section's dmarc_networks are added); `lane_rate`: the configured rate
    limit of a destination's lanes (messages/s, None: no limit)."""
    if settings is None:
        return []
    exporter = Exporter(settings, runtime, database_url=database_url,
                        own_networks=[*own_networks, *settings.dmarc_networks], lane_rate=lane_rate)
    return [JobSpec(name="metrics:http", run=exporter.run_once, service=exporter.serve)]


class LeaderOnly(Collector):
    """Database-wide families, exported by the cluster's leader only: with N
    nodes every node reads the same database, and `sum()` over instances in
    Grafana would count N times. Per-node metrics (process, the sender's own
    counters) stay on every node, told apart by Prometheus's `instance` label.
    `repmon_cluster_leader` says which node exports the database's figures.
    With one node (the cluster off) the node is the leader."""

    def __init__(self, inner: Collector, runtime: Runtime) -> None:
        self.inner = inner
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        leader = self.runtime.holds(LEADER)
        gauge = GaugeMetricFamily("repmon_cluster_leader",
                                  "1 on the node that exports the database-wide figures, 0 on the others.",
                                  labels=["node"])
        gauge.add_metric([self.runtime.node_id], 1.0 if leader else 0.0)
        yield gauge
        if leader:
            yield from self.inner.collect()


def build_registry(collector: Collector, extra: Sequence[Collector] | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    for other in extra or []:
        registry.register(other)
    return registry


class Exporter:
    def __init__(self, settings: MetricsConfig, runtime: Runtime, *, database_url: str,
                 own_networks: Sequence[str] = (), lane_rate: LaneRate | None = None) -> None:
        self.settings = settings
        self.runtime = runtime
        self.database_url = database_url
        self.own_networks = list(own_networks)
        self.lane_rate = lane_rate

    def _engine(self) -> tuple[Engine, bool]:
        """The engine to read with, and whether it is ours to dispose."""
        url = self.database_url
        if url.startswith("sqlite") and ":memory:" in url:
            return self.runtime.engine, False  # another engine would open another, empty, database
        return reader_engine(url), True

    def _registry(self, engine: Engine) -> tuple[CollectorRegistry, RepmonCollector]:
        collector = RepmonCollector(engine, own_networks=self.own_networks, lane_rate=self.lane_rate,
                                    refresh_s=self.settings.refresh_s,
                                    dnsbl_series_limit=self.settings.dnsbl_series_limit)
        extra = list(self.runtime.shared.get(SHARED_COLLECTORS_KEY, []))
        return build_registry(LeaderOnly(collector, self.runtime), extra), collector

    async def run_once(self) -> None:
        engine, owned = self._engine()
        try:
            _, collector = self._registry(engine)
            metrics = await asyncio.to_thread(lambda: list(collector.collect()))
            up = next(m for m in metrics if m.name == "repmon_metrics_family_up")
            down = sorted(s.labels["family"] for s in up.samples if s.value == 0)
            series = sum(len(m.samples) for m in metrics)
            if down:
                log.warning("metrics: %d series; families skipped: %s", series, ", ".join(down))
            else:
                log.info("metrics: %d series, every family read", series)
        finally:
            if owned:
                engine.dispose()

    async def serve(self) -> None:
        engine, owned = self._engine()
        registry, _ = self._registry(engine)
        server = MetricsServer(registry, self.settings.listen_address, self.settings.port)
        try:
            await server.start()
            log.info("metrics at %s", server.url)
            await self.runtime.stopping.wait()
        finally:
            await server.stop()
            if owned:
                engine.dispose()
