"""`repmon --help` answers at once and `repmon parse` does not pay for the other
commands: building the parser imports no command's dependencies (issues 9, 13).
Structural checks, not timings: see the rule in monitor/cli.py."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ROOT / "monitor" / "commands"
HEAVY = ("pydantic", "sqlalchemy", "sqlmodel", "aiohttp", "alembic", "lxml", "parsers.mime")


def test_building_the_parser_imports_nothing_heavy():
    script = ("import json, sys\n"
              "import monitor.cli\n"
              "monitor.cli.build_parser()\n"
              f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def _top_level_imports(tree: ast.Module) -> list[str]:
    """Modules imported at the top of a file, leaving out `if TYPE_CHECKING:` blocks."""
    out = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append("." * node.level + (node.module or ""))
    return out


@pytest.mark.parametrize("path", sorted(COMMANDS.glob("*.py")), ids=lambda p: p.name)
def test_a_command_module_imports_only_the_standard_library_at_its_top(path):
    for module in _top_level_imports(ast.parse(path.read_text())):
        assert module.split(".")[0] in sys.stdlib_module_names, f"{path.name} imports {module} at its top"


def test_constants_repeated_for_the_parser_agree():
    from monitor.commands import actions_export, health
    from monitor.health.assess import STATES
    from monitor.mtalogs.actions_export import FORMATS

    assert health.STATES == STATES
    assert actions_export.FORMATS == FORMATS
