"""repmon's configuration: one validated model, read from TOML.

Every section is a strict pydantic model: an unknown key or a bad value stops
start-up with a message that names the key (`dnsbl.zones[2].kind: ...`), never
a traceback. Relative paths are resolved against the config file's folder so
that `repmon run --config /etc/repmon/repmon.toml` works from any directory.

Sections are added here by the part of the loop that owns them; keep each
section's model next to its siblings and document every field.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration file that cannot be used, with a message for people."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def resolve_secret(what: str, value: str | None, env: str | None, file: Path | None = None) -> str | None:
    """A secret given inline, by environment variable or by file; None when
    none of them is given. Errors name where it was looked for, never a value;
    an empty variable or file counts as missing."""
    if value is not None:
        return value
    if env is not None:
        found = os.environ.get(env)
        if not found:
            raise ConfigError(f"{what}: environment variable {env} is not set")
        return found
    if file is not None:
        try:
            found = file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {file}: {exc.strerror}") from None
        if not found:
            raise ConfigError(f"{what}: {file} is empty")
        return found
    return None


def require_unique(values: list[str], what: str) -> None:
    """Raise a validation error naming every value given more than once."""
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{what} must be unique, repeated: {', '.join(repeated)}")


# --- storage -------------------------------------------------------------------

class DatabaseConfig(Section):
    # SQLite (the embedded default, a file next to the config) or a
    # postgresql+psycopg://user@host/db URL shared by several nodes.
    url: str = "sqlite:///repmon.db"
    echo: bool = False


# --- feedback mail sources -------------------------------------------------------

class MailboxConfig(Section):
    name: str | None = None  # shown in logs and metrics; defaults to username@host
    host: str
    port: int | None = None  # default: 993 for tls, 143 otherwise
    security: Literal["tls", "starttls", "none"] = "tls"
    username: str
    password: str | None = Field(default=None, repr=False)
    password_env: str | None = None
    password_file: Path | None = None
    folders: list[str] = Field(default_factory=lambda: ["INBOX"])
    processed_folder: str = "repmon/processed"
    quarantine_folder: str = "repmon/quarantine"
    idle: bool = True  # use IDLE where the server offers it
    poll_interval_s: float = Field(default=60.0, gt=0)
    batch_size: int = Field(default=200, gt=0, le=5000)
    timeout_s: float = Field(default=30.0, gt=0)
    verify_tls: bool = True
    ca_file: Path | None = None  # CA bundle for a private CA / self-signed server certificate
    use_move: bool = True  # MOVE when offered; false forces COPY + EXPUNGE
    # Back-off after a failed connection or login: doubles from initial to max.
    retry_initial_s: float = Field(default=5.0, gt=0)
    retry_max_s: float = Field(default=600.0, gt=0)
    # Larger messages are not fetched: quarantined by reference, left on the server.
    max_message_mb: float = Field(default=100.0, gt=0)
    # A message whose storing fails this many times is quarantined.
    max_attempts: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _one_password_source(self) -> MailboxConfig:
        given = [x for x in (self.password, self.password_env, self.password_file) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of password, password_env, password_file")
        return self

    @property
    def display_name(self) -> str:
        return self.name or f"{self.username}@{self.host}"

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "tls" else 143)

    def resolve_password(self) -> str:
        """The secret itself; errors name where it was looked for, never its value."""
        password = resolve_secret(f"mailbox {self.display_name} password", self.password, self.password_env,
                                  self.password_file)
        assert password is not None  # the validator requires one source
        return password


class FolderSourceConfig(Section):
    # A local folder of .eml files or a maildir (cur/ new/), read by the embedded default.
    path: Path
    name: str | None = None
    # Messages are never moved out of a local folder: a checkpoint of content
    # hashes makes reading it again a no-op.
    poll_interval_s: float = Field(default=30.0, gt=0)


class SuppressionConfig(Section):
    # Soft bounces suppress only when they repeat: `soft_bounce_count` soft bounces
    # spread over at least `soft_bounce_min_days` days.
    soft_bounce_count: int = Field(default=3, ge=1)
    soft_bounce_min_days: float = Field(default=3.0, ge=0)
    # How long a suppression for a soft reason lasts; hard reasons never expire.
    soft_expiry_days: float = Field(default=30.0, gt=0)


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    as_json: bool = Field(default=False, alias="json")  # one JSON object per log line


# --- sender (sender/; see config.example.toml) --------------------------------------

def _check_rate(value: str | float | None) -> str | float | None:
    from sender.units import parse_rate
    parse_rate(value)
    return value


def _check_duration(value: str | float) -> str | float:
    from sender.units import parse_duration
    parse_duration(value)
    return value


TlsMode = Literal["opportunistic", "required", "none"]


class LaneLimits(Section):
    # Limits of one lane (source IP x provider, or source IP x relay). A value
    # left unset falls back to [sender.lane_defaults].
    connections: int | None = Field(default=None, ge=1, le=2000)
    deliveries_per_connection: int | None = Field(default=None, ge=1)
    rate: str | float | None = None  # "10/s", "600/min", "1000/h"; absent: no limit
    burst: int | None = Field(default=None, ge=1)  # messages allowed back to back; default: one second's worth
    daily_cap: int | None = Field(default=None, ge=1)  # per UTC day
    tls: TlsMode | None = None

    _rate_ok = field_validator("rate")(classmethod(lambda cls, v: _check_rate(v)))


class RelayConfig(LaneLimits):
    # A smarthost that takes every message instead of the recipients' MX hosts.
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    connections: int | None = Field(default=10, ge=1, le=2000)


class ProviderConfig(LaneLimits):
    # [sender.providers.NAME]: MX host suffixes rolled up into this provider
    # (added to the built-in ones when NAME is a built-in provider).
    mx_suffixes: list[str] = Field(default_factory=list)


class SendingIpConfig(Section):
    address: str  # the source address bound for each connection
    ehlo_name: str  # should match the address's PTR record
    pool: str = "default"
    weight: float = Field(default=1.0, gt=0)
    warmup: bool = False  # cap daily volume per provider by the [sender.warmup] schedule

    @field_validator("address")
    @classmethod
    def _ip(cls, value: str) -> str:
        import ipaddress
        return str(ipaddress.ip_address(value))


class DkimKeyConfig(Section):
    domain: str  # the d= domain; signs mail whose From: is this domain or a subdomain
    selector: str
    key_file: Path  # PEM private key (RSA or Ed25519)
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"


class UnsubscribeConfig(Section):
    # One-click unsubscribe (RFC 8058): List-Unsubscribe points at
    # `url`/<token>; the endpoint listening on `listen` suppresses the address.
    url: str
    mailto: str | None = None  # optional mailto: alternative
    listen: str = "127.0.0.1:8026"  # host:port of the POST endpoint
    secret: str | None = Field(default=None, repr=False)  # HMAC key of the tokens
    secret_env: str | None = None

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL (RFC 8058 asks for https)")
        return value.rstrip("/")


class WarmupConfig(Section):
    # Daily volume per (new IP, provider), one entry per warm-up day. An IP
    # moves to the next day only when it delivered `advance_fraction` of the
    # day's target with at most `max_deferral_rate` of its attempts deferred.
    schedule: list[int] = Field(default_factory=lambda: [
        150, 300, 600, 1_000, 1_600, 2_500, 4_000, 6_000, 9_000, 13_000, 19_000, 27_000, 38_000, 52_000, 70_000,
        95_000, 125_000, 165_000, 215_000, 280_000, 360_000, 460_000, 590_000, 750_000, 950_000,
        1_200_000, 1_500_000, 1_900_000, 2_400_000, 3_000_000])
    advance_fraction: float = Field(default=0.9, gt=0, le=1)
    max_deferral_rate: float = Field(default=0.05, ge=0, le=1)
    overflow_pool: str | None = None  # where mail over a cold IP's cap goes; none: it waits


class SenderConfig(Section):
    # Envelope sender. Its local part gets the VERP tracking token:
    # bounces+rm-<token>@bounce.example.com.
    mail_from: str = "bounces@localhost"
    feedback_id_sender: str = "repmon"  # last field of Feedback-ID
    relay: RelayConfig | None = None
    ips: list[SendingIpConfig] = Field(default_factory=list)
    lane_defaults: LaneLimits = Field(default_factory=lambda: LaneLimits(
        connections=10, deliveries_per_connection=100, rate="100/s", tls="opportunistic"))
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    dkim: list[DkimKeyConfig] = Field(default_factory=list)
    unsubscribe: UnsubscribeConfig | None = None
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    rules_file: Path | None = None  # lane rules; the shipped defaults apply after it
    default_rules: bool = True
    max_age: str | float = "3d"  # a message still deferred after this expires into a bounce
    retry_initial: str | float = "5m"
    retry_max: str | float = "4h"
    resume_step: str | float = "30s"  # after a suspension: one more connection per step
    batch_size: int = Field(default=500, ge=1, le=10_000)
    nameservers: list[str] = Field(default_factory=list)  # "host" or "host:port"; default: the system's
    mx_port: int = Field(default=25, ge=1, le=65535)  # port of MX hosts (only tests change it)
    connect_timeout_s: float = Field(default=30.0, gt=0)
    command_timeout_s: float = Field(default=300.0, gt=0)

    _durations_ok = field_validator("max_age", "retry_initial", "retry_max", "resume_step")(
        classmethod(lambda cls, v: _check_duration(v)))

    @field_validator("ips")
    @classmethod
    def _unique_ips(cls, value: list[SendingIpConfig]) -> list[SendingIpConfig]:
        require_unique([ip.address for ip in value], "sending addresses")
        return value

    @field_validator("mail_from")
    @classmethod
    def _address(cls, value: str) -> str:
        if value.count("@") != 1 or not all(value.split("@")):
            raise ValueError("must be an address local@domain")
        return value


# --- reputation signals (monitor/signals/) ----------------------------------------

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
        import ipaddress
        from monitor.signals.dnsclient import parse_resolver
        host, _ = parse_resolver(value)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{value!r}: give the resolver as IP:PORT (e.g. 127.0.0.1:53), not a host name") from None
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        from monitor.signals.dnsclient import parse_resolver
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
        from monitor.signals.zones import zone_spec
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
        from monitor.signals.targets import TargetError, parse_network
        for entry in value:
            try:
                parse_network(entry)
            except TargetError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("domains", "link_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        from monitor.signals.targets import TargetError, normalize_domain
        try:
            return [normalize_domain(d) for d in value]
        except TargetError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _consistent(self) -> DnsblConfig:
        from monitor.signals.targets import range_size
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


# --- observability (monitor/metrics/) -----------------------------------------------

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
        import ipaddress
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r}: give an IP address (e.g. 127.0.0.1)") from None

    @field_validator("dmarc_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress
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
        from urllib.parse import urlparse
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


# --- health, policy and alerts (monitor/health/, monitor/policy/, monitor/alerts/) ---

Window = Literal["1h", "24h", "7d"]
Severity = Literal["info", "warning", "critical"]


def _fraction(value: float | str | None) -> float | None:
    """0.003, "0.3%" -> 0.003. Rates in the config are fractions or percentages."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%"):
            raise ValueError(f"{value!r}: write a fraction (0.003) or a percentage (\"0.3%\")")
        value = float(text[:-1]) / 100.0
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{value!r}: a rate must be between 0 and 1 (or 0% and 100%)")
    return float(value)


class RateThreshold(Section):
    # A rate where more is worse (complaints / delivered, ...). `min_volume` is
    # the smallest denominator the rate is judged on in a window: 1 complaint
    # in 50 messages is not a 2 % complaint rate anyone can act on.
    warning: float | str | None = None
    critical: float | str | None = None
    min_volume: int = Field(default=100, ge=1)
    windows: list[Window] = Field(default_factory=lambda: ["24h", "7d"])

    _rates = field_validator("warning", "critical")(classmethod(lambda cls, v: _fraction(v)))

    @model_validator(mode="after")
    def _ordered(self) -> RateThreshold:
        if self.warning is not None and self.critical is not None and self.warning > self.critical:
            raise ValueError("warning must not be above critical")
        return self


class PassRateThreshold(Section):
    # A rate where less is worse (DMARC pass rate): warn below `warning`.
    warning: float | str | None = None
    critical: float | str | None = None
    min_volume: int = Field(default=100, ge=1)
    windows: list[Window] = Field(default_factory=lambda: ["7d"])

    _rates = field_validator("warning", "critical")(classmethod(lambda cls, v: _fraction(v)))

    @model_validator(mode="after")
    def _ordered(self) -> PassRateThreshold:
        if self.warning is not None and self.critical is not None and self.warning < self.critical:
            raise ValueError("warning must not be below critical (a pass rate: lower is worse)")
        return self


class ProviderHealthConfig(Section):
    # [health.providers.NAME]: thresholds for one destination (yahoo, microsoft, ...).
    complaint_rate: RateThreshold | None = None
    deferral_rate: RateThreshold | None = None


class ZoneWeightConfig(Section):
    # How much a listing on a zone weighs (added to / overriding the built-in
    # table in monitor/health/zones.py). `major`: receivers block on it, so the
    # subject is "blocked". `used_by` / `not_used_by`: the destinations whose
    # lanes the listing affects ("*" = every destination).
    zone: str
    codes: list[str] = Field(default_factory=list)  # only these answers (empty: any listing code)
    weight: float = Field(ge=0, le=100)
    major: bool = False
    used_by: list[str] = Field(default_factory=lambda: ["*"])
    not_used_by: list[str] = Field(default_factory=list)


def _default_rate(warning: str, critical: str, min_volume: int, windows: list[str]):
    return Field(default_factory=lambda: RateThreshold(warning=warning, critical=critical, min_volume=min_volume,
                                                       windows=windows))


class HealthConfig(Section):
    # Defaults follow published thresholds (see README, health section):
    # Gmail / Yahoo spam rate under 0.1 %, never 0.3 %; SES-style bounce
    # levels (review at 5 %, pause at 10 %); hard bounces 2 % / 5 %.
    interval_s: float = Field(default=0.25, gt=0, le=60)  # how often new rows are rolled up
    full_every_s: float = Field(default=30.0, gt=0)  # every subject re-assessed (windows slide)
    domains: list[str] = Field(default_factory=list)  # sending domains; default: [dnsbl] + [dns_auth] domains
    complaint_rate: RateThreshold = _default_rate("0.1%", "0.3%", 100, ["24h", "7d"])
    spam_rate: RateThreshold = _default_rate("0.1%", "0.3%", 1, ["24h", "7d"])  # Google Postmaster, per day
    hard_bounce_rate: RateThreshold = _default_rate("2%", "5%", 100, ["24h", "7d"])
    bounce_rate: RateThreshold = _default_rate("5%", "10%", 100, ["24h", "7d"])
    deferral_rate: RateThreshold = _default_rate("20%", "50%", 50, ["1h", "24h"])
    # 5xx answers that refuse us for reputation (blocked, badreputation, requireptr).
    block_rate: RateThreshold = _default_rate("5%", "20%", 20, ["1h", "24h"])
    dmarc_pass_rate: PassRateThreshold = Field(default_factory=lambda: PassRateThreshold(
        warning="98%", critical="90%", min_volume=100, windows=["7d"]))
    dkim_pass_rate: PassRateThreshold = Field(default_factory=lambda: PassRateThreshold(
        warning="98%", critical=None, min_volume=100, windows=["7d"]))
    providers: dict[str, ProviderHealthConfig] = Field(default_factory=dict)
    zones: list[ZoneWeightConfig] = Field(default_factory=list)
    # DMARC aggregate rows count for a domain only from our own sending IPs
    # ([[sender.ips]], [dnsbl] ips): forwarders and spoofers are not our mail.
    dmarc_own_ips_only: bool = True
    retention_days: int = Field(default=400, ge=8)  # day buckets kept (hour buckets: 8 days)

    @field_validator("domains")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().rstrip(".") for d in value if d.strip()]


MetricName = Literal["complaint_rate", "spam_rate", "hard_bounce_rate", "bounce_rate", "deferral_rate",
                     "block_rate", "dmarc_pass_rate", "dkim_pass_rate", "spf_pass_rate", "score",
                     "hostunknown_rate", "complaints", "hard_bounces", "deferred", "delivered", "sent", "hostunknown"]


class PolicyRuleConfig(Section):
    # One rule: every condition given must hold for a subject; then `action`.
    name: str = Field(min_length=1, max_length=100)
    subjects: list[Literal["ip", "domain", "lane", "rdomain"]] = Field(default_factory=lambda: ["lane"])
    providers: list[str] | None = None  # lanes / per-provider figures of these destinations only
    state: list[Literal["warning", "critical", "blocked"]] | None = None
    metric: MetricName | None = None
    window: Window = "24h"
    above: float | str | None = None  # metric >= above (rates: fraction or "0.3%")
    below: float | str | None = None  # metric < below
    min_volume: int | None = Field(default=None, ge=0)  # default: the [health] threshold's
    listed_on: list[str] | None = None  # zone names, "major" or "any"
    action: Literal["pause", "slow", "resume", "suppress", "alert"]
    # pause / slow: "lane" (the subject's lane), "ip" (every destination of the
    # IP) or "zone_users" (the IP for the destinations that use the listing zone).
    scope: Literal["lane", "ip", "zone_users"] | None = None
    rate: str | float | None = None  # slow: "10/min"
    duration: str | float | None = None  # absent: until the condition clears
    ramp: bool = True  # when a pause / slow ends, resume with the [policy.ramp]
    severity: Severity = "critical"  # of the alert the action sends

    _rate_ok = field_validator("rate")(classmethod(lambda cls, v: _check_rate(v)))

    @field_validator("duration")
    @classmethod
    def _duration_ok(cls, value: str | float | None) -> str | float | None:
        return None if value is None else _check_duration(value)

    @model_validator(mode="after")
    def _complete(self) -> PolicyRuleConfig:
        rate_metric = self.metric is not None and self.metric.endswith("_rate")
        for name in ("above", "below"):
            value = getattr(self, name)
            if isinstance(value, str) or (rate_metric and value is not None):
                setattr(self, name, _fraction(value))
        if self.state is None and self.metric is None and self.listed_on is None:
            raise ValueError(f"rule {self.name}: give a condition (state, metric or listed_on)")
        if self.metric is not None and self.above is None and self.below is None:
            raise ValueError(f"rule {self.name}: metric {self.metric} needs above or below")
        if (self.above is not None or self.below is not None) and self.metric is None:
            raise ValueError(f"rule {self.name}: above / below need a metric")
        if self.action == "slow" and self.rate is None:
            raise ValueError(f"rule {self.name}: slow needs a rate")
        if self.action in ("pause", "slow") and not set(self.subjects) <= {"ip", "lane"}:
            raise ValueError(f"rule {self.name}: {self.action} acts on ip or lane subjects")
        if self.action == "suppress" and self.subjects != ["rdomain"]:
            raise ValueError(f"rule {self.name}: suppress acts on recipient domains (subjects = [\"rdomain\"])")
        if self.scope == "zone_users" and self.listed_on is None:
            raise ValueError(f"rule {self.name}: scope zone_users needs listed_on")
        return self


class RampConfig(Section):
    # After a policy pause or slow ends: slow to `start`, multiply by `factor`
    # every `step`, and stop ramping after `steps` steps.
    start: str | float = "1/s"
    factor: float = Field(default=2.0, gt=1.0, le=100.0)
    step: str | float = "10m"
    steps: int = Field(default=6, ge=1, le=50)

    _rate_ok = field_validator("start")(classmethod(lambda cls, v: _check_rate(v)))
    _step_ok = field_validator("step")(classmethod(lambda cls, v: _check_duration(v)))


class PolicyConfig(Section):
    enabled: bool = True
    dry_run: bool = False  # decide and log, touch nothing
    defaults: bool = True  # the shipped rules (monitor/policy/defaults.py) after your own
    rules: list[PolicyRuleConfig] = Field(default_factory=list)
    ramp: RampConfig = Field(default_factory=RampConfig)

    @field_validator("rules")
    @classmethod
    def _unique(cls, value: list[PolicyRuleConfig]) -> list[PolicyRuleConfig]:
        require_unique([r.name for r in value], "rule names")
        return value


class SlackAlertConfig(Section):
    # A Slack incoming webhook. The URL is a secret: never logged.
    name: str = "slack"
    webhook_url: str | None = Field(default=None, repr=False)
    webhook_url_env: str | None = None
    min_severity: Severity = "warning"

    @model_validator(mode="after")
    def _one_source(self) -> SlackAlertConfig:
        if (self.webhook_url is None) == (self.webhook_url_env is None):
            raise ValueError("give exactly one of webhook_url, webhook_url_env")
        return self

    def resolve_url(self) -> str:
        url = resolve_secret(f"alerts.slack {self.name}", self.webhook_url, self.webhook_url_env)
        assert url is not None
        return url


class EmailAlertConfig(Section):
    name: str = "email"
    to: list[str] = Field(min_length=1)
    min_severity: Severity = "critical"


class AlertSmtpConfig(Section):
    # The server alert mails go through (aiosmtplib).
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["tls", "starttls", "none"] = "starttls"
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    password_env: str | None = None
    sender: str = "repmon@localhost"  # From:
    timeout_s: float = Field(default=30.0, gt=0)
    verify_tls: bool = True

    def resolve_password(self) -> str | None:
        return resolve_secret("alerts.smtp password", self.password, self.password_env)


class AlertsConfig(Section):
    # Alerts fire on health findings (a listing, a rate over its threshold),
    # on policy actions, and say "resolved" when they clear. Per subject and
    # cause, a repeat within `cooldown` is not sent again (an escalation is).
    min_severity: Severity = "warning"
    cooldown: str | float = "1h"
    # More notifications than this within `gather_s` go out as one digest per channel.
    digest_threshold: int = Field(default=5, ge=1)
    gather_s: float = Field(default=3.0, ge=0, le=300)
    max_attempts: int = Field(default=8, ge=1, le=100)  # per message, on 429 / 5xx / network errors
    slack: list[SlackAlertConfig] = Field(default_factory=list)
    email: list[EmailAlertConfig] = Field(default_factory=list)
    smtp: AlertSmtpConfig | None = None

    _cooldown_ok = field_validator("cooldown")(classmethod(lambda cls, v: _check_duration(v)))

    @model_validator(mode="after")
    def _smtp_for_email(self) -> AlertsConfig:
        if self.email and self.smtp is None:
            raise ValueError("email alerts need [alerts.smtp]")
        require_unique([t.name for t in [*self.slack, *self.email]], "alert channel names")
        return self


# --- the whole file ----------------------------------------------------------------

class RepmonConfig(Section):
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    mailboxes: list[MailboxConfig] = Field(default_factory=list)
    folders: list[FolderSourceConfig] = Field(default_factory=list)
    suppression: SuppressionConfig = Field(default_factory=SuppressionConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    dns: DnsConfig = Field(default_factory=DnsConfig)
    dnsbl: DnsblConfig = Field(default_factory=DnsblConfig)
    dns_auth: DnsAuthConfig = Field(default_factory=DnsAuthConfig)
    postmaster: PostmasterConfig = Field(default_factory=PostmasterConfig)
    sender: SenderConfig = Field(default_factory=SenderConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    metrics: MetricsConfig | None = None  # absent: no metrics endpoint
    grafana: GrafanaConfig | None = None  # for `repmon dashboards push`

    # Set by load_config: the folder relative paths are resolved against.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @field_validator("mailboxes")
    @classmethod
    def _unique_mailbox_names(cls, value: list[MailboxConfig]) -> list[MailboxConfig]:
        require_unique([m.display_name for m in value], "mailbox names")
        return value

    def resolve_path(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.base_dir / path)

    @property
    def database_url(self) -> str:
        """The database URL with a relative SQLite path made absolute."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
            return prefix + str(self.resolve_path(Path(url[len(prefix):])))
        return url


def _format_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        else:
            lines.append(f"{where}: {err['msg']}")
    return "\n".join(lines)


def parse_config(data: dict, base_dir: Path | None = None) -> RepmonConfig:
    try:
        config = RepmonConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("invalid configuration:\n" + _format_error(exc)) from None
    config.base_dir = base_dir or Path.cwd()
    for folder in config.folders:
        folder.path = config.resolve_path(folder.path)
    if config.postmaster.google is not None:
        google = config.postmaster.google
        google.service_account_file = config.resolve_path(google.service_account_file)
    for key in config.sender.dkim:
        key.key_file = config.resolve_path(key.key_file)
    if config.sender.rules_file is not None:
        config.sender.rules_file = config.resolve_path(config.sender.rules_file)
    for mailbox in config.mailboxes:
        if mailbox.password_file is not None:
            mailbox.password_file = config.resolve_path(mailbox.password_file)
        if mailbox.ca_file is not None:
            mailbox.ca_file = config.resolve_path(mailbox.ca_file)
    return config


def load_config(path: str | Path) -> RepmonConfig:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(data, base_dir=path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
