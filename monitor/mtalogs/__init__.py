"""Delivery logs in: sending volume and outcomes from the MTA a team already
runs (Postfix, PowerMTA, KumoMTA), per source IP, sending domain and
destination, so health, policy and dashboards work without repmon's sender.

- settings.py: the `[[delivery_logs]]` sections;
- models.py / migrations/: checkpoints, outcomes, rejected lines, hook ledger;
- tail.py + ingest.py: following files exactly once (inode + offset, rotation),
  and `ingest_kumo_records` for KumoMTA's log hook (monitor/api calls it);
- store.py: records -> outcome rows, bounce / feedback events, suppressions;
- reading.py: `delivery_counts` for health's roll-up, status for the CLI;
- jobs.py: the daemon's jobs; actions_export.py: policy actions -> MTA config.
The parsers are pure functions in parsers/mtalogs/.
"""
