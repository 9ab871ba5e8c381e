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
        if self.password is not None:
            return self.password
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"mailbox {self.display_name}: environment variable {self.password_env} is not set")
            return value
        assert self.password_file is not None
        try:
            return self.password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"mailbox {self.display_name}: cannot read password_file {self.password_file}: {exc.strerror}") from None


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


# --- the whole file ----------------------------------------------------------------

class RepmonConfig(Section):
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    mailboxes: list[MailboxConfig] = Field(default_factory=list)
    folders: list[FolderSourceConfig] = Field(default_factory=list)
    suppression: SuppressionConfig = Field(default_factory=SuppressionConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    # Set by load_config: the folder relative paths are resolved against.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @field_validator("mailboxes")
    @classmethod
    def _unique_mailbox_names(cls, value: list[MailboxConfig]) -> list[MailboxConfig]:
        names = [m.display_name for m in value]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"mailbox names must be unique, repeated: {', '.join(sorted(dupes))}")
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
    for mailbox in config.mailboxes:
        if mailbox.password_file is not None:
            mailbox.password_file = config.resolve_path(mailbox.password_file)
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
