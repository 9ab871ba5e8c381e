"""Storage: the core tables (ledger, events, reports, quarantine, suppressions)
and their migrations, and the suppression-list API.

`monitor.storage.models` holds the tables, `monitor.storage.suppression` the
suppression list every other part reads and writes through. Engines and schema
upgrades are on the ground floor (monitor/core/db.py).
"""
