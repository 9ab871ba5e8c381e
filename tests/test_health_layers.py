"""Health, policy and alerts stay on their floors: health imports neither
policy nor alerts, policy not alerts, none of them the composed top-level
config or the loop above them; imports sit at the top of their modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "monitor"
ABOVE = {
    "health": ("monitor.policy", "monitor.alerts", "monitor.loop", "monitor.config", "monitor.parts",
               "monitor.commands"),
    "policy": ("monitor.alerts", "monitor.loop", "monitor.config", "monitor.parts", "monitor.commands"),
    "alerts": ("monitor.loop", "monitor.config", "monitor.parts", "monitor.commands"),
}


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(module, at the top level of the file) of every import."""
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, id(node) in top))
    return out


@pytest.mark.parametrize("part", sorted(ABOVE))
def test_a_part_imports_nothing_above_it_and_only_at_the_top(part):
    for path in sorted((ROOT / part).rglob("*.py")):
        for module, at_top in _imports(ast.parse(path.read_text())):
            assert not module.startswith(ABOVE[part]), f"{path.relative_to(ROOT)} imports {module}"
            assert at_top, f"{path.relative_to(ROOT)} imports {module} inside a function"


def test_the_loop_composes_the_parts():
    modules = {m for m, _ in _imports(ast.parse((ROOT / "loop.py").read_text()))}
    assert {"monitor.health.service", "monitor.policy.evaluate", "monitor.alerts.notify", "monitor.config"} <= modules
