"""Settings of the reputation signals: [dns], [dnsbl], [dns_auth], [postmaster]."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from monitor.core.config import Section, require_unique, resolve_secret
from monitor.signals.dnsclient import parse_resolver
from monitor.signals.targets import TargetError, normalize_domain, parse_network, range_size
from monitor.signals.zones import zone_spec


class DnsConfig(Section):
    # The recursive resolver blocklist and DNS-authentication lookups go to.
    # Use a resolver of your own (e.g. Unbound, not forwarding): Spamhaus and
    # others refuse public resolvers and answer with error codes.
    resolver: str = "127.0.0.1:53"  # IP:PORT, [IPv6]:PORT
    timeout_s: float = Field(default=3.0, gt=0, le=60)  # one lookup, all attempts
    attempts: int = Field(default=2, ge=1, le=5)  # UDP sends per lookup
    concurrency: int = Field(default=200, ge=1, le=4096)  # lookups in flight

    @field_validator("resolver")
    @classmethod
    def _ip_port(cls, value: str) -> str:
        host, _ = parse_resolver(value)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{value!r}: give the resolver as IP:PORT (e.g. 127.0.0.1:53), not a host name") from None
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_resolver(self.resolver)


class DnsblZoneConfig(Section):
    # One blocklist. Zones of the built-in catalog (monitor/signals/zones.py)
    # need only `name`; anything given overrides the catalog. Only answers in
    # listed_codes (or listed_bits) are listings; everything else is an error.
    name: str  # query suffix; "<key>.zen.dq.spamhaus.net" takes [dnsbl] dqs_key
    kind: Literal["ip", "domain"] | None = None
    listed_codes: dict[str, str] | None = None  # "127.0.0.2" = "SBL"
    error_codes: dict[str, str] | None = None  # "127.255.255.254" = "public resolver"
    clean_codes: dict[str, str] | None = None  # reputation zones: answers that are not listings
    listed_bits: dict[str, str] | None = None  # bitmask zones: "2" = "black"
    error_bits: dict[str, str] | None = None  # bitmask zones: "1" = "query refused"
    test_listed: str | None = None  # RFC 5782 test point that must be listed ("" = none)
    test_unlisted: str | None = None  # test point that must not be listed ("" = none)
    ipv6: bool | None = None  # the zone answers IPv6 (nibble) queries
    delist_url: str | None = None

    @model_validator(mode="after")
    def _usable(self) -> DnsblZoneConfig:
        zone_spec(self, key="validation-key")  # raises ValueError with the reason
        return self


class DnsblConfig(Section):
    ips: list[str] = Field(default_factory=list)  # sending IPs and CIDR ranges, IPv4 and IPv6
    domains: list[str] = Field(default_factory=list)  # sending domains
    link_domains: list[str] = Field(default_factory=list)  # domains of links in the mail
    interval_s: float = Field(default=900.0, gt=0)
    # A state turns unknown only after this many failed cycles in a row:
    # one timeout never flips a listed or clean state.
    unknown_after_errors: int = Field(default=3, ge=1, le=100)
    max_range_addresses: int = Field(default=4096, ge=1, le=65536)  # per CIDR entry
    fetch_txt: bool = True  # ask for the zone's TXT reason when it answers
    dqs_key: str | None = Field(default=None, repr=False)  # Spamhaus DQS key
    dqs_key_env: str | None = None
    zones: list[DnsblZoneConfig] | None = None  # absent: the shipped defaults

    @field_validator("ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                parse_network(entry)
            except TargetError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("domains", "link_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        try:
            return [normalize_domain(d) for d in value]
        except TargetError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _consistent(self) -> DnsblConfig:
        for entry in self.ips:
            if range_size(entry) > self.max_range_addresses:
                raise ValueError(f"ips: range {entry} has {range_size(entry)} addresses, more than "
                                 f"max_range_addresses = {self.max_range_addresses}")
        if self.dqs_key is not None and self.dqs_key_env is not None:
            raise ValueError("give dqs_key or dqs_key_env, not both")
        has_key = self.dqs_key is not None or self.dqs_key_env is not None
        names = [z.name.lower().rstrip(".") for z in self.zones or []]
        require_unique(names, "zone names")
        for index, name in enumerate(names):
            if "<key>" in name and not has_key:
                raise ValueError(f"zones.{index} ({name}) needs a Spamhaus DQS key: set dqs_key or dqs_key_env")
        return self

    def resolve_dqs_key(self) -> str | None:
        return resolve_secret("dnsbl dqs_key", self.dqs_key, self.dqs_key_env)


class DnsAuthConfig(Section):
    # SPF / DMARC / DKIM / MTA-STS / TLS-RPT of the sending domains (checkdmarc).
    domains: list[str] | None = None  # default: [dnsbl] domains
    ips: list[str] | None = None  # addresses SPF must authorise; default: [dnsbl] ips
    dkim_selectors: dict[str, list[str]] = Field(default_factory=dict)  # domain -> selectors
    interval_s: float = Field(default=3600.0, gt=0)
    timeout_s: float = Field(default=60.0, gt=0, le=600)  # whole check of one domain
    # The MTA-STS policy is fetched over HTTPS from mta-sts.<domain> (through
    # the system resolver, not [dns] resolver).
    fetch_mta_sts_policy: bool = True


class GooglePostmasterConfig(Section):
    # Postmaster Tools API with a service account (JWT bearer grant). The
    # account must be a user of the domains in Postmaster Tools, or act for
    # `subject` through domain-wide delegation.
    service_account_file: Path  # the JSON key downloaded from Google Cloud
    subject: str | None = None
    domains: list[str] = Field(default_factory=list)  # empty: every domain the account sees
    api_url: str = "https://gmailpostmastertools.googleapis.com"
    token_url: str | None = None  # default: the key file's token_uri
    traffic_stats_v1: bool = False  # also read v1 trafficStats (deprecated; has reputation)
    lookback_days: int = Field(default=3, ge=1, le=120)  # Google backfills late days
    interval_s: float = Field(default=21600.0, gt=0)


class SndsConfig(Section):
    # Microsoft SNDS automated access: the data and IP-status feeds have
    # separate keys. Keys are secrets; they are never logged.
    data_url: str = "https://sendersupport.olc.protection.outlook.com/snds/data.aspx"
    ipstatus_url: str = "https://sendersupport.olc.protection.outlook.com/snds/ipStatus.aspx"
    data_key: str | None = Field(default=None, repr=False)
    data_key_env: str | None = None
    ipstatus_key: str | None = Field(default=None, repr=False)
    ipstatus_key_env: str | None = None
    lookback_days: int = Field(default=3, ge=1, le=90)  # SNDS data lags a day or two
    interval_s: float = Field(default=21600.0, gt=0)

    def resolve_data_key(self) -> str | None:
        return resolve_secret("postmaster.snds data_key", self.data_key, self.data_key_env)

    def resolve_ipstatus_key(self) -> str | None:
        return resolve_secret("postmaster.snds ipstatus_key", self.ipstatus_key, self.ipstatus_key_env)


class PostmasterConfig(Section):
    google: GooglePostmasterConfig | None = None
    snds: SndsConfig | None = None
    timeout_s: float = Field(default=30.0, gt=0)  # one HTTP request
    max_attempts: int = Field(default=4, ge=1, le=10)  # per request, on 429 / 5xx / network errors
    backoff_s: float = Field(default=2.0, ge=0)  # first retry delay, doubled each time
    max_backoff_s: float = Field(default=300.0, ge=0)  # cap, also for Retry-After

