"""The house's floors, checked on the source: a part imports only the floors
below it, every import is at the top of its module (command handlers excepted,
for `repmon --help`), and no part imports another part's tables or names them in
its SQL text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# part -> floor; a part may import parts on lower floors (and itself).
FLOORS: dict[str, float] = {
    "monitor.core": 0, "parsers": 0.5,
    "monitor.storage": 1, "monitor.cluster": 1,
    "monitor.signals": 2, "monitor.ingest": 2, "sender": 2, "monitor.mtalogs": 2,
    "monitor.health": 3, "monitor.policy": 4, "monitor.alerts": 5,
    "monitor.config": 5.5,  # the composed file model: every part's settings section
    "monitor.loop": 6, "monitor.metrics": 6, "monitor.webhooks": 6,
    "monitor.api": 7, "monitor.parts": 8, "monitor.daemon": 8.5,
    "monitor.commands": 9, "monitor.cli": 9.5,
}
# Who may import a part's tables (`<part>.models`) besides the part itself.
TABLE_READERS = {"monitor.parts"}


def part_of(module: str) -> str | None:
    found = [p for p in FLOORS if module == p or module.startswith(p + ".")]
    return max(found, key=len) if found else None


def modules() -> list[tuple[str, Path]]:
    out = []
    for top in ("monitor", "sender", "parsers"):
        for path in sorted((ROOT / top).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            if part_of(name) is not None:  # the bare `monitor` package holds no code
                out.append((name, path))
    return out


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import of ours."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    type_checking = {id(n) for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                     for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if part_of(name) is not None:
                found.append((name, node.lineno, id(node) in top_level or id(node) in type_checking))
                break
    return found


def test_no_part_imports_a_floor_above_or_beside_it() -> None:
    bad = []
    for module, path in modules():
        me = part_of(module)
        assert me is not None
        for name, line, _ in imports(path):
            other = part_of(name)
            assert other is not None
            settings_only = me == "monitor.config" and name.endswith(".settings")
            if other != me and FLOORS[other] >= FLOORS[me] and not settings_only:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {me} imports {name}")
    assert not bad, "\n".join(bad)


def test_imports_are_at_the_top_of_modules() -> None:
    bad = [f"{path.relative_to(ROOT)}:{line}: {name}" for module, path in modules()
           if part_of(module) != "monitor.commands"
           for name, line, top in imports(path) if not top]
    assert not bad, "\n".join(bad)


def test_no_part_imports_another_parts_tables() -> None:
    bad = []
    for module, path in modules():
        me = part_of(module)
        for name, line, _ in imports(path):
            other = part_of(name)
            is_tables = name.startswith(f"{other}.models") or ".models." in name or name.endswith(".models")
            if is_tables and other != me and me not in TABLE_READERS:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {me} imports {name}")
    assert not bad, "\n".join(bad)


# Raw SQL of another part's table (issue 9), still to move into the owner's read API:
# (module path, table). An entry that no longer occurs fails the test: remove it.
SQL_KNOWN: set[tuple[str, str]] = {
    ("monitor/health/rollup.py", "events"),  # Rollup._events -> monitor/storage/reading.py
    ("monitor/health/rollup.py", "dmarc_records"),  # Rollup._dmarc -> monitor/storage/reading.py
    ("monitor/policy/replay.py", "signal_events"),
    ("monitor/policy/replay.py", "postmaster_domain_days"),
    ("monitor/policy/replay.py", "snds_ip_days"),
    ("monitor/commands/lanes.py", "sender_lane"),
    ("monitor/commands/lanes.py", "sender_message"),
}


def table_owners() -> dict[str, str]:
    """table name -> the part whose models.py declares it (`__tablename__`)."""
    owners: dict[str, str] = {}
    for module, path in modules():
        if not (module.endswith(".models") or ".models." in module):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)
                    and any(isinstance(t, ast.Name) and t.id == "__tablename__" for t in node.targets)):
                part = part_of(module)
                assert part is not None
                owners[node.value.value] = part
    return owners


def sql_tables(path: Path, pattern: re.Pattern[str]) -> list[tuple[int, str]]:
    """(line, table) of every table named after FROM / JOIN / INTO / UPDATE (so DELETE FROM
    too) in the string constants of a module, the literal parts of f-strings included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [(node.lineno, m.group(1)) for m in pattern.finditer(node.value)]
    return found


def test_no_part_names_another_parts_tables_in_sql() -> None:
    owners = table_owners()
    assert {"sender_delivery_log", "signal_events", "events", "health_counts"} <= set(owners)
    names = "|".join(re.escape(n) for n in sorted(owners, key=len, reverse=True))
    # SQL keywords in capitals, as the house writes SQL (prose "from events" is not SQL)
    pattern = re.compile(rf"\b(?:FROM|JOIN|INTO|UPDATE)\s+({names})\b")
    bad, seen = [], set()
    for module, path in modules():
        me = part_of(module)
        where = path.relative_to(ROOT).as_posix()
        for line, table in sql_tables(path, pattern):
            if owners[table] == me or me in TABLE_READERS:
                continue
            seen.add((where, table))
            if (where, table) not in SQL_KNOWN:
                bad.append(f"{where}:{line}: {me} reads or writes {table} ({owners[table]}'s table): "
                           f"call {owners[table]}'s read API instead")
    assert not bad, "\n".join(bad)
    stale = SQL_KNOWN - seen
    assert not stale, f"no longer found, remove from SQL_KNOWN: {sorted(stale)}"
