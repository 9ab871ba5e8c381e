"""Small pieces of SQL text shared by the parts that write raw SQL for both
SQLite and PostgreSQL: time buckets, the text after a separator, id filters,
and the names of the tables a database has. `dialect` is SQLAlchemy's name
for it (`conn.dialect.name`): "sqlite" or "postgresql"."""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.engine import Connection

# An id range (lo, hi] or a list of ids.
Ids = tuple[int, int] | list[int]


def bucket_epoch(dialect: str, column: str, seconds: int) -> str:
    """The start (Unix seconds) of the `seconds`-long bucket of a Unix-seconds column."""
    if dialect == "postgresql":
        return f"(FLOOR({column} / {seconds}) * {seconds})::bigint"
    return f"((CAST({column} AS INTEGER) / {seconds}) * {seconds})"


def bucket_time(dialect: str, column: str, seconds: int) -> str:
    """The start (Unix seconds) of the `seconds`-long bucket of a timestamp column."""
    if dialect == "postgresql":
        return f"(FLOOR(EXTRACT(EPOCH FROM {column}) / {seconds}) * {seconds})::bigint"
    return f"((CAST(strftime('%s', {column}) AS INTEGER) / {seconds}) * {seconds})"


def after_separator(dialect: str, column: str, separator: str = "|") -> str:
    """The text of a column after the first `separator` (one character, not a quote)."""
    if dialect == "postgresql":
        return f"split_part({column}, '{separator}', 2)"
    return f"substr({column}, instr({column}, '{separator}') + 1)"


def id_filter(column: str, ids: Ids) -> str:
    """`column` in an id range (lo, hi] or in a list of ids (a non-empty one)."""
    if isinstance(ids, tuple):
        return f"{column} > {int(ids[0])} AND {column} <= {int(ids[1])}"
    return f"{column} IN ({','.join(str(int(i)) for i in ids)})"


def table_names(conn: Connection) -> set[str]:
    """The names of the tables the database has now. Readers ask the part that
    owns a table whether it is among them (e.g. sender.stats.has_delivery_log)."""
    return set(inspect(conn).get_table_names())
