"""`repmon actions export`: the pauses and slows in force, as configuration for
the MTA a team runs instead of repmon's sender.

    repmon actions export --format kumomta|pmta|json --config FILE [--source IP=NAME ...] [-o FILE]

KumoMTA: a shaping override (TOML); PowerMTA: <virtual-mta>/<domain> blocks and
the `pmta pause queue` commands; json: one object per action. Names of the
sending IPs on the MTA (KumoMTA egress sources, PowerMTA virtual MTAs) come
from `source_ips` of the matching [[delivery_logs]] entries, and --source.

Hooked under `repmon actions` by monitor/commands/actions.py (`add_verb`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.mtalogs.actions_export import ExportAction

DOMAIN_LOOKBACK_S = 7 * 86400
# monitor.mtalogs.actions_export.FORMATS, repeated so that building the parser imports nothing
# (tests/test_cli_startup.py checks the two agree)
FORMATS = ("kumomta", "pmta", "json")


def add_verb(verbs: argparse._SubParsersAction) -> None:
    """Hook as `repmon actions export` (verbs: the sub-parsers of `repmon actions`)."""
    _arguments(verbs.add_parser("export", help="pauses and slows in force as KumoMTA / PowerMTA configuration"))


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="json")
    parser.add_argument("--config", dest="sub_config", metavar="FILE", help="repmon TOML configuration")
    parser.add_argument("--source", action="append", default=[], metavar="IP=NAME",
                        help="the MTA's name of a sending IP (egress source, virtual MTA); repeatable")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here (atomically) instead of stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.core.db import make_engine
    from monitor.core.errors import ConfigError
    from monitor.mtalogs.actions_export import render

    config_path = getattr(args, "sub_config", None) or getattr(args, "config", None)
    if not config_path:
        raise ConfigError("give the configuration with --config FILE")
    config = load_config(config_path)
    sources = _source_names(config, args.format)
    for item in args.source:
        ip, sep, name = item.partition("=")
        if not sep or not ip or not name:
            raise ConfigError(f"--source {item!r}: write IP=NAME")
        sources[ip.strip()] = name.strip()
    engine = make_engine(config.database_url)
    try:
        with engine.connect() as conn:
            actions = active_actions(conn)
            domains = _seen_domains(conn) if args.format == "pmta" else {}
    finally:
        engine.dispose()
    text = render(args.format, actions, sources=sources, domains=domains, extra_suffixes=_extra_suffixes(config))
    if args.output:
        _write_atomically(Path(args.output), text)
    else:
        sys.stdout.write(text)
    return 0


def active_actions(conn: Any) -> list[ExportAction]:
    """The pause, slow and ramp actions in force, through the policy's API (a ramp is a slow)."""
    from monitor.mtalogs.actions_export import ExportAction
    from monitor.policy import manual

    out: list[ExportAction] = []
    for row in manual.list_actions(conn, active_only=True):
        kind = "slow" if row.action == "ramp" else row.action
        if kind not in ("pause", "slow") or not row.source_ip:
            continue
        rate = (row.params or {}).get("rate")
        destinations = [d for d in (row.destinations or []) if isinstance(d, str)] or ["*"]
        if "*" in destinations:
            destinations = ["*"]
        expires = row.expires_at.astimezone(UTC) if row.expires_at else None
        for destination in destinations:
            out.append(ExportAction(ip=row.source_ip, destination=destination, kind=kind,
                                    rate=float(rate) if isinstance(rate, (int, float)) else None,
                                    expires_at=expires, action_id=row.id, rule=row.rule))
    return out


def _source_names(config: Any, fmt: str) -> dict[str, str]:
    """IP -> the MTA's name for it, from source_ips of [[delivery_logs]] of that MTA."""
    kind = {"kumomta": "kumomta", "pmta": "pmta"}.get(fmt)
    names: dict[str, str] = {}
    for log in getattr(config, "delivery_logs", None) or []:
        if kind is None or log.kind == kind:
            for name, ip in log.source_ips.items():
                names.setdefault(ip, name)
    return names


def _extra_suffixes(config: Any) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for log in getattr(config, "delivery_logs", None) or []:
        for name, suffixes in log.providers.items():
            merged.setdefault(name, []).extend(suffixes)
    return merged


def _seen_domains(conn: Any) -> dict[str, list[str]]:
    from sqlalchemy import inspect

    from monitor.mtalogs.reading import recipient_domains_by_destination

    if "mtalog_deliveries" not in inspect(conn).get_table_names():
        return {}
    return recipient_domains_by_destination(conn, time.time() - DOMAIN_LOOKBACK_S)


def _write_atomically(path: Path, text: str) -> None:
    """Write beside the target and rename: an MTA reloading the file never sees half of it."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
