"""The API job of `repmon run` ([api] present): a service serving the API and
the operator page until the daemon stops. With `--once` its pass only checks
that the token can be read."""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine

from monitor.api.data import ApiData, reader_engine
from monitor.api.server import ApiServer
from monitor.api.settings import ApiConfig
from monitor.config import RepmonConfig
from monitor.core.config import ConfigError, resolve_secret
from monitor.core.logs import register_secret
from monitor.core.runtime import JobSpec, Runtime

log = logging.getLogger("repmon.api")


def provide(config: RepmonConfig, runtime: Runtime) -> list[JobSpec]:
    if config.api is None:
        return []
    settings: ApiConfig = config.api
    token_file = config.resolve_path(settings.token_file) if settings.token_file is not None else None

    def token() -> str:
        value = resolve_secret("api.token", None, settings.token_env, token_file)
        assert value is not None  # the section requires one of the two
        register_secret(value)
        if len(value) < 16:
            raise ConfigError("api.token: use at least 16 characters")
        return value

    async def check() -> None:
        token()

    async def serve() -> None:
        reader, owned = _reader(config, runtime.engine, settings.db_threads)
        server = ApiServer(settings, ApiData(config, runtime.engine, reader), token())
        try:
            await server.start()
            log.info("api at %s", server.url)
            await runtime.stopping.wait()
        finally:
            await server.stop()
            if owned:
                reader.dispose()

    return [JobSpec(name="api:http", run=check, service=serve)]


def _reader(config: RepmonConfig, engine: Engine, threads: int) -> tuple[Engine, bool]:
    url = config.database_url
    if url.startswith("sqlite") and ":memory:" in url:
        return engine, False
    return reader_engine(url, threads), True
