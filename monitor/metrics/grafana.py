"""Uploading the dashboards to Grafana (grafana-client, async).

The folder is looked up by uid (when configured) or title and created when
missing; each dashboard is then saved with POST /api/dashboards/db and
overwrite, so pushing again updates the dashboards in place (Grafana keeps
the previous versions). The token goes only into the Authorization header:
it is never logged and never part of an error message.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import niquests
from grafana_client import AsyncGrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaServerError,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

from monitor.core.config import ConfigError, resolve_secret
from monitor.metrics.settings import GrafanaConfig


class PushError(Exception):
    """Grafana refused or could not be reached; the message says what to fix."""


@dataclass(slots=True)
class PushResult:
    title: str
    uid: str
    url: str
    version: int | None


def require_settings(settings: GrafanaConfig | None) -> GrafanaConfig:
    """The [grafana] section, or a ConfigError saying what to add."""
    if settings is None:
        raise ConfigError("no [grafana] section: give url and token_env (or token_file) to push dashboards")
    return settings


def _relative_to(base_dir: Path, path: Path) -> Path:
    return path if path.is_absolute() else base_dir / path


def resolve_token(settings: GrafanaConfig, base_dir: Path) -> str:
    """The API token; a relative token_file is read from `base_dir` (the config file's folder)."""
    token_file = _relative_to(base_dir, settings.token_file) if settings.token_file is not None else None
    token = resolve_secret("grafana token", settings.token, settings.token_env, token_file)
    assert token is not None  # the validator requires one source
    return token.strip()


def load_dashboard_files(folder: Path) -> list[dict[str, Any]]:
    """Dashboards from *.json files: a bare dashboard model or an export
    wrapper {"dashboard": {...}}."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ConfigError(f"no dashboard files (*.json) in {folder}")
    dashboards = []
    for path in files:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable JSON file: {exc}") from None
        if isinstance(document, dict) and isinstance(document.get("dashboard"), dict):
            document = document["dashboard"]
        if not isinstance(document, dict) or not document.get("title") or not isinstance(document.get("panels"), list):
            raise ConfigError(f"{path}: not a Grafana dashboard (needs a title and a panels list)")
        dashboards.append(document)
    return dashboards


def with_datasource(dashboard: dict[str, Any], datasource: str | None) -> dict[str, Any]:
    """A copy whose ${DS_PROMETHEUS} variable preselects `datasource`."""
    dashboard = json.loads(json.dumps(dashboard))
    dashboard["id"] = None  # Grafana matches on uid; a stale numeric id would be refused
    if datasource:
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "datasource" and variable.get("name") == "DS_PROMETHEUS":
                variable["current"] = {"selected": True, "text": datasource, "value": datasource}
    return dashboard


def _client(settings: GrafanaConfig, token: str, base_dir: Path) -> AsyncGrafanaApi:
    parsed = urlparse(settings.url)
    verify: bool | str = settings.verify_tls
    if settings.ca_file is not None and settings.verify_tls:
        verify = str(_relative_to(base_dir, settings.ca_file))
    return AsyncGrafanaApi(
        auth=token, protocol=parsed.scheme, host=parsed.hostname, port=parsed.port,
        url_path_prefix=parsed.path.strip("/") + "/" if parsed.path.strip("/") else "",
        verify=verify, timeout=settings.timeout_s, organization_id=settings.org_id,
    )


def _explain(exc: Exception, settings: GrafanaConfig, doing: str) -> PushError:
    where = f"Grafana at {settings.url}"
    if isinstance(exc, GrafanaUnauthorizedError):
        return PushError(f"{where} refused the token (401 Unauthorized) while {doing}: check [grafana] "
                         "token / token_env / token_file and that the service account token is still valid")
    if isinstance(exc, GrafanaClientError) and exc.status_code == 403:
        return PushError(f"{where} denied {doing} (403 Forbidden): the service account needs the Editor role "
                         f"(or edit rights on folder {settings.folder!r})")
    if isinstance(exc, GrafanaServerError):
        return PushError(f"{where} failed while {doing}: HTTP {exc.status_code}: {_detail(exc)}")
    if isinstance(exc, GrafanaTimeoutError):
        return PushError(f"{where} did not answer within {settings.timeout_s:g} s while {doing}")
    if isinstance(exc, GrafanaClientError):
        return PushError(f"{where} refused {doing}: HTTP {exc.status_code}: {_detail(exc)}")
    if isinstance(exc, GrafanaException):
        return PushError(f"cannot reach {where} while {doing}: {exc.message}")
    return PushError(f"cannot reach {where} while {doing}: {type(exc).__name__}: {exc}")


def _detail(exc: Any) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("message"):
        return str(response["message"])[:300]
    return str(response or getattr(exc, "message", ""))[:300] or "no details"


async def _call(settings: GrafanaConfig, doing: str, coroutine: Awaitable[Any]) -> Any:
    try:
        return await coroutine
    except (GrafanaException, niquests.exceptions.RequestException) as exc:
        raise _explain(exc, settings, doing) from None


async def push(settings: GrafanaConfig, dashboards: list[dict[str, Any]], *, message: str,
               base_dir: Path) -> list[PushResult]:
    """Save `dashboards` into the configured folder; relative token/CA files are read from `base_dir`."""
    token = resolve_token(settings, base_dir)
    api = _client(settings, token, base_dir)
    try:
        folder_uid = await _folder(api, settings)
        results = []
        for dashboard in dashboards:
            payload = {"dashboard": with_datasource(dashboard, settings.datasource), "folderUid": folder_uid,
                       "overwrite": True, "message": message}
            title = dashboard.get("title", "?")
            answer = await _call(settings, f"saving dashboard {title!r}", api.dashboard.update_dashboard(payload))
            answer = answer if isinstance(answer, dict) else {}
            results.append(PushResult(title=title, uid=str(answer.get("uid") or dashboard.get("uid") or ""),
                                      url=settings.url + str(answer.get("url") or ""),
                                      version=answer.get("version")))
        return results
    finally:
        await _close(api)



async def _close(api: AsyncGrafanaApi) -> None:
    """Close the client's HTTP session (niquests' AsyncSession: close() is a coroutine)."""
    session: Any = api.client.s
    closing = session.close()
    if closing is not None:
        await closing


async def _folder(api: AsyncGrafanaApi, settings: GrafanaConfig) -> str:
    folders = await _call(settings, "listing folders", api.folder.get_all_folders())
    for folder in folders if isinstance(folders, list) else []:
        if settings.folder_uid is not None and folder.get("uid") == settings.folder_uid:
            return folder["uid"]
        if settings.folder_uid is None and folder.get("title") == settings.folder:
            return folder["uid"]
    created = await _call(settings, f"creating folder {settings.folder!r}",
                          api.folder.create_folder(settings.folder, uid=settings.folder_uid))
    if not isinstance(created, dict) or not created.get("uid"):
        raise PushError(f"Grafana at {settings.url} created folder {settings.folder!r} but sent no uid back")
    return created["uid"]
