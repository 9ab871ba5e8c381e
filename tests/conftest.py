"""Test-wide settings. Fixtures that start real peers (Dovecot, PostgreSQL,
smtp-sink, rbldnsd, ...) live in tests/fixtures/, one module per peer, and
are loaded here automatically (modules starting with "_" are helpers, not
plugins).

A missing peer skips its tests locally, with the reason (`make test` lists
the reasons: pytest -rs), and fails them under CI (`CI=true`, or
REPMON_REQUIRE_PEERS=1 to try it locally): see tests/fixtures/_peers.py.
The ../shared data folder is data, not a peer: where it is absent the
evaluation tests skip, under CI too."""

from __future__ import annotations

import os
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The shared data folder sits beside the repository (../shared); evaluation
# tests that read it skip cleanly where it is absent.
SHARED = Path(os.environ.get("REPMON_SHARED", ROOT.parent / "shared"))

pytest_plugins = [
    f"tests.fixtures.{m.name}"
    for m in pkgutil.iter_modules([str(Path(__file__).parent / "fixtures")])
    if not m.name.startswith("_")
]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    return SHARED
