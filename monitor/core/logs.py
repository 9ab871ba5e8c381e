"""Logging for every part: key=value text or one JSON object per line, to stderr,
with every registered secret masked (configured from the [logging] section)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from monitor.core.config import LoggingConfig

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask this value wherever it would appear in a log line."""
    if value and len(value) >= 3:
        _SECRETS.add(value)


# Secrets that were never registered still have a recognisable shape: a URL
# parameter such as SNDS's `?key=...` (servers echo the request URL in error
# pages), a password in a URL's user-info, an Authorization value, a JSON field.
_SECRET_NAMES = (r"(?:api[_-]?|dqs[_-]?|data[_-]?|ipstatus[_-]?)?key|apikey|(?:access|refresh|id|auth)?[_-]?token|"
                 r"(?:client[_-]?)?secret|password|passwd|pwd|sig|signature|credentials?")
_PARAM_RE = re.compile(rf"(?<![A-Za-z0-9_-])({_SECRET_NAMES})=([^&\s\"'<>#;,)]+)", re.IGNORECASE)
_JSON_RE = re.compile(rf"(\"(?:{_SECRET_NAMES})\"\s*:\s*\")([^\"]+)", re.IGNORECASE)
_USERINFO_RE = re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s:@]*):([^@\s/]+)@", re.IGNORECASE)
_AUTH_RE = re.compile(r"\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every registered secret and every secret-looking value
    (URL parameters such as key= or token=, URL passwords, Authorization
    values, JSON "password" fields) replaced by ***. For everything repmon
    logs *or stores* (error texts, event reasons): a secret must not reach
    the database either."""
    if not text:
        return text
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    if "=" in text:
        text = _PARAM_RE.sub(r"\1=***", text)
    if '"' in text and ":" in text:
        text = _JSON_RE.sub(r"\1***", text)
    if "@" in text:
        text = _USERINFO_RE.sub(r"\1:***@", text)
    if " " in text:
        text = _AUTH_RE.sub(r"\1 ***", text)
    return text


def redact_value(value: Any) -> Any:
    """redact() through the strings of a JSON-like value (event details)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class KeyValueFormatter(logging.Formatter):
    """`2024-05-01T10:00:00Z INFO repmon.ingest message key=value ...`"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        parts = [stamp, record.levelname, record.name, record.getMessage()]
        for key, value in _extras(record).items():
            text = str(value)
            parts.append(f"{key}={json.dumps(text) if (' ' in text or not text) else text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str, ensure_ascii=False))


def configure_logging(settings: LoggingConfig, stream: TextIO | None = None) -> None:
    """Route repmon's logs (and the libraries') to stderr in the configured format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.as_json else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_repmon", False):
            root.removeHandler(old)
    handler._repmon = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.level)
    # Libraries that log whole protocol lines (message bodies, LOGIN) at DEBUG
    # stay at WARNING whatever our level is.
    for noisy in ("aioimaplib", "aioimaplib.aioimaplib", "apscheduler", "sqlalchemy.engine", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
