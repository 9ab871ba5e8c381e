"""Settings of the feedback mail sources: [[mailboxes]], [[folders]], [suppression]."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from monitor.core.config import Section, resolve_secret


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
    # A bounce or complaint naming more recipients than this suppresses none of
    # them and is quarantined for review (a forged DSN must not empty the list).
    max_recipients_per_report: int = Field(default=100, ge=1)


class DmarcConfig(Section):
    """[dmarc]: what ingestion adds to DMARC aggregate records."""

    # Country, AS and sending service of each record's source IP, offline
    # (parsedmarc's bundled IP database and service map): on by default.
    sources: bool = True
    # PTR lookups of the source IPs (the service is then named from the PTR
    # name's base domain, as parsedmarc does online). Off by default.
    reverse_dns: bool = False
    reverse_dns_timeout_s: float = Field(default=2.0, gt=0, le=30)
    # HOST or HOST:PORT of the resolver; default: the system's (/etc/resolv.conf).
    reverse_dns_resolver: str | None = None
    reverse_dns_concurrency: int = Field(default=50, ge=1, le=1000)


class ParsingConfig(Section):
    """How ingestion parses: a pool of worker processes (0: in a thread of the
    daemon) and the time a message may take before it is quarantined."""

    workers: int = Field(default=2, ge=0, le=64)
    parse_timeout_s: float = Field(default=30.0, gt=0)
