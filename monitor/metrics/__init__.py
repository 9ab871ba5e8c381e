"""Observability: Prometheus metrics read from the database at scrape time
(collector.py), served by `repmon run` (server.py, jobs.py), and the Grafana
dashboards built on them (dashboards.py, grafana.py).

Other parts can add process counters of their own: put a prometheus_client
collector in `runtime.shared["metrics_collectors"]` (a list) from their
provider, and the metrics endpoint serves it too.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version

SHARED_COLLECTORS_KEY = "metrics_collectors"


def version() -> str:
    try:
        return _package_version("repmon")
    except PackageNotFoundError:
        return "unknown"
