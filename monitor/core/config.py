"""The configuration base every part builds its settings section on.

Each part owns one section model (sender/settings.py, monitor/signals/settings.py,
...), built from `Section`; monitor/config.py composes them into the one validated
file model. Every section is a strict pydantic model: an unknown key or a bad value
stops start-up with a message that names the key (`dnsbl.zones[2].kind: ...`),
never a traceback. Also here: the two sections of the ground floor itself
([database] and [logging]) and the validators parts share.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from monitor.core.errors import ConfigError  # defined there (stdlib only, for monitor/cli.py); re-exported
from monitor.core.units import parse_duration, parse_fraction, parse_rate


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
            found = file.read_bytes().decode("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{what}: {file} is not UTF-8 text") from None
        if not found:
            raise ConfigError(f"{what}: {file} is empty")
        return found
    return None


def require_unique(values: list[str], what: str) -> None:
    """Raise a validation error naming every value given more than once."""
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{what} must be unique, repeated: {', '.join(repeated)}")


def check_rate(value: str | float | None) -> str | float | None:
    """Validator: a rate people can write ("10/s"); raises ValueError otherwise."""
    parse_rate(value)
    return value


def check_duration(value: str | float) -> str | float:
    """Validator: a duration people can write ("15m"); raises ValueError otherwise."""
    parse_duration(value)
    return value


def fraction(value: float | str | None) -> float | None:
    """Validator: 0.003 or "0.3%" -> 0.003."""
    return parse_fraction(value)


class DatabaseConfig(Section):
    # SQLite (the embedded default, a file next to the config) or a
    # postgresql+psycopg://user@host/db URL shared by several nodes.
    url: str = "sqlite:///repmon.db"
    echo: bool = False
    # SQLite: `repmon run` makes the database file's folder when it is missing.
    # Off by default: a mistyped path is a ConfigError naming the folder, never a
    # new empty database.
    create_dir: bool = False



class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    as_json: bool = Field(default=False, alias="json")  # one JSON object per log line



def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        else:
            lines.append(f"{where}: {err['msg']}")
    return "\n".join(lines)


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file as a dict; a ConfigError that names the file otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
