"""Settings of observability: [metrics] (Prometheus endpoint) and [grafana]."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator

from monitor.core.config import Section


class MetricsConfig(Section):
    # Present: `repmon run` serves Prometheus metrics at
    # http://listen_address:port/metrics. Values come from the database at
    # scrape time, queried at most every refresh_s seconds.
    listen_address: str = "127.0.0.1"
    port: int = Field(default=9478, ge=1, le=65535)
    refresh_s: float = Field(default=15.0, ge=0)
    # DMARC source IPs get their own label value only inside these networks,
    # [dnsbl] ips and [[sender.ips]]; every other source is "other".
    dmarc_networks: list[str] = Field(default_factory=list)
    # Above this many (target, zone) pairs only listed / unknown pairs are
    # exported one by one (the per-zone counts stay complete).
    dnsbl_series_limit: int = Field(default=20000, ge=0)

    @field_validator("listen_address")
    @classmethod
    def _listen_ip(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r}: give an IP address (e.g. 127.0.0.1)") from None

    @field_validator("dmarc_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP network") from None
        return value


class GrafanaConfig(Section):
    # `repmon dashboards push` uploads the dashboards to this Grafana with a
    # service-account token (Editor on the folder). The token is never logged.
    url: str  # http(s)://grafana.example.com[:port][/sub-path]
    token: str | None = Field(default=None, repr=False)
    token_env: str | None = None
    token_file: Path | None = None
    folder: str = "repmon"  # folder title; created when missing
    folder_uid: str | None = None  # default: derived from the title
    datasource: str | None = None  # Prometheus data source (name or uid) preselected in ${DS_PROMETHEUS}
    org_id: int | None = Field(default=None, ge=1)
    timeout_s: float = Field(default=30.0, gt=0)
    verify_tls: bool = True
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{value!r}: give an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_token_source(self) -> GrafanaConfig:
        given = [x for x in (self.token, self.token_env, self.token_file) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of token, token_env, token_file")
        return self

