"""The [api] section: where the HTTP API listens and the token it wants."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from monitor.core.config import Section


class ApiConfig(Section):
    # Present: `repmon run` serves the HTTP API under /api/v1 and the operator
    # page at / on this address. Every request needs the bearer token.
    listen: str = "127.0.0.1:8025"
    token_env: str | None = None
    token_file: Path | None = None
    # Bounds against slow or greedy clients.
    max_connections: int = Field(default=100, ge=1, le=10000)
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)  # request headers complete within (also idle keep-alive)
    body_timeout_s: float = Field(default=10.0, gt=0, le=300)
    max_body_bytes: int = Field(default=65536, ge=1024, le=10 * 1024 * 1024)
    db_threads: int = Field(default=4, ge=1, le=64)  # database calls run in this many threads
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)  # operator page login lifetime
    secure_cookie: bool = False  # set when a TLS proxy fronts the page

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, port = split_listen(value)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @model_validator(mode="after")
    def _one_token(self) -> ApiConfig:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("give the bearer token with exactly one of token_env or token_file")
        return self


def split_listen(value: str) -> tuple[str, int]:
    """("127.0.0.1", 8025) from "127.0.0.1:8025" or "[::1]:8025"; ValueError otherwise."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{value!r}: write HOST:PORT, e.g. 127.0.0.1:8025")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: the host must be an IP address") from None
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r}: port out of range")
    return host, port
