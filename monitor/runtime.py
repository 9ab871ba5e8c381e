"""How the parts of repmon plug their jobs into `repmon run`.

Each part has a provider, a function `provide(config, runtime) -> list[JobSpec]`.
The daemon (monitor/daemon.py) imports the providers listed in PROVIDERS
(a part that is not installed is skipped), schedules interval jobs with
APScheduler and supervises services (long-running tasks, e.g. an IMAP IDLE
loop) by restarting them with back-off when they fail.

`repmon run --once` calls every job's `run` exactly once instead, so a job must
be able to do one complete pass when asked (a service's `run` is its one pass).

Logging is configured here too, from the [logging] section: key=value text or
one JSON object per line, with every registered secret masked.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from monitor.config import LoggingConfig, RepmonConfig

PROVIDERS = (
    "monitor.ingest.jobs:provide",
    "monitor.signals.jobs:provide",
    "sender.jobs:provide",
    "monitor.metrics.jobs:provide",
    "monitor.health.jobs:provide",
)

log = logging.getLogger("repmon.runtime")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job of the daemon.

    name: unique, shown in logs ("ingest:imap:bounces@mx1/INBOX").
    run: one complete pass (what `--once` calls, and what the interval trigger calls).
    interval_s: run `run` every interval_s seconds (first run at start-up).
    service: a long-running coroutine function used instead of the interval
        schedule in the daemon; it returns only when asked to stop (runtime.stopping)
        and is restarted with back-off when it raises.
    A job has an interval or a service (or both: then the daemon uses the service).
    """

    name: str
    run: Callable[[], Awaitable[Any]]
    interval_s: float | None = None
    service: Callable[[], Awaitable[Any]] | None = None

    def __post_init__(self) -> None:
        if self.interval_s is None and self.service is None:
            raise ValueError(f"job {self.name}: give an interval or a service")
        if self.interval_s is not None and self.interval_s <= 0:
            raise ValueError(f"job {self.name}: interval must be positive")


@dataclass(slots=True)
class Runtime:
    """What a running repmon shares with its jobs."""

    config: RepmonConfig
    engine: Engine
    once: bool = False  # `repmon run --once`
    progress: bool = False  # show progress bars (stderr)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Anything parts want to share between their jobs (e.g. a metrics registry).
    shared: dict[str, Any] = field(default_factory=dict)

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True when stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True


Provider = Callable[[RepmonConfig, Runtime], list[JobSpec]]


def load_providers(names: tuple[str, ...] = PROVIDERS) -> list[Provider]:
    providers = []
    for spec in names:
        module_name, _, func_name = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Skip a part that does not exist yet, not a broken import inside it.
            if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                log.debug("provider %s not installed, skipped", spec)
                continue
            raise
        providers.append(getattr(module, func_name))
    return providers


def collect_jobs(config: RepmonConfig, runtime: Runtime, names: tuple[str, ...] = PROVIDERS) -> list[JobSpec]:
    jobs: list[JobSpec] = []
    for provider in load_providers(names):
        jobs.extend(provider(config, runtime))
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise ValueError(f"two jobs are named {job.name!r}")
        seen.add(job.name)
    return jobs


class Backoff:
    """Exponential back-off with a cap: 1, 2, 4, ... x initial, reset on success."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.max_s, self.initial_s * (2 ** min(self.failures, 30)))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


# --- logging --------------------------------------------------------------------------

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask this value wherever it would appear in a log line."""
    if value and len(value) >= 3:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


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


def configure_logging(settings: LoggingConfig, stream=None) -> None:
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
