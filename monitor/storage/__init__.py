"""Storage: SQLModel tables, the engine (SQLite or PostgreSQL) and Alembic migrations.

`monitor.storage.db` makes engines and applies the schema, `monitor.storage.models`
holds the core tables, `monitor.storage.suppression` the suppression-list API.
"""
