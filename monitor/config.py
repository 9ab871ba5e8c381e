"""repmon's configuration: one validated model, read from TOML.

The file model is composed here, at the top of the house, from the sections
each part owns (sender/settings.py, monitor/signals/settings.py, ...; the
config base is monitor/core/config.py). A part is handed its own section
only. Relative paths are resolved against the config file's folder so that
`repmon run --config /etc/repmon/repmon.toml` works from any directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from monitor.alerts.settings import AlertsConfig
from monitor.api.settings import ApiConfig
from monitor.cluster.settings import ClusterConfig
from monitor.core.config import (
    ConfigError,
    DatabaseConfig,
    LoggingConfig,
    Section,
    format_validation_error,
    read_toml,
    require_unique,
)
from monitor.health.settings import HealthConfig
from monitor.ingest.settings import DmarcConfig, FolderSourceConfig, MailboxConfig, SuppressionConfig
from monitor.metrics.settings import GrafanaConfig, MetricsConfig
from monitor.mtalogs.settings import DeliveryLogConfig, check_unique_names
from monitor.policy.settings import PolicyConfig
from monitor.signals.settings import DnsAuthConfig, DnsblConfig, DnsConfig, PostmasterConfig
from monitor.webhooks.settings import WebhookConfig, unique_names
from sender.settings import SenderConfig

__all__ = ["ConfigError", "RepmonConfig", "load_config", "parse_config"]


class RepmonConfig(Section):
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
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
    api: ApiConfig | None = None  # absent: no HTTP API / operator page
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    delivery_logs: list[DeliveryLogConfig] = Field(default_factory=list)  # an MTA's logs (Postfix, PowerMTA, KumoMTA)
    dmarc: DmarcConfig = Field(default_factory=DmarcConfig)  # DMARC record sources (monitor/ingest/settings.py)

    # Set by load_config: the folder relative paths are resolved against.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @field_validator("mailboxes")
    @classmethod
    def _unique_mailbox_names(cls, value: list[MailboxConfig]) -> list[MailboxConfig]:
        require_unique([m.display_name for m in value], "mailbox names")
        return value

    @field_validator("delivery_logs")
    @classmethod
    def _unique_delivery_logs(cls, value: list[DeliveryLogConfig]) -> list[DeliveryLogConfig]:
        return check_unique_names(value)

    @field_validator("webhooks")
    @classmethod
    def _unique_webhook_names(cls, value: list[WebhookConfig]) -> list[WebhookConfig]:
        return unique_names(value)

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



def parse_config(data: dict[str, Any], base_dir: Path | None = None) -> RepmonConfig:
    try:
        config = RepmonConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("invalid configuration:\n" + format_validation_error(exc)) from None
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
    if config.api is not None and config.api.token_file is not None:
        config.api.token_file = config.resolve_path(config.api.token_file)
    for log in config.delivery_logs:
        if str(log.path) != "-":
            log.path = config.resolve_path(log.path)
    for hook in config.webhooks:
        if hook.secret_file is not None:
            hook.secret_file = config.resolve_path(hook.secret_file)
    for mailbox in config.mailboxes:
        if mailbox.password_file is not None:
            mailbox.password_file = config.resolve_path(mailbox.password_file)
        if mailbox.ca_file is not None:
            mailbox.ca_file = config.resolve_path(mailbox.ca_file)
    return config




def load_config(path: str | Path) -> RepmonConfig:
    path = Path(path)
    data = read_toml(path)
    try:
        return parse_config(data, base_dir=path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
