"""Alerts: Slack incoming webhooks and email, deduplicated per subject and
cause with a cooldown, "resolved" when the cause clears, and one digest when
many fire at once.

    health StateChanges / policy ActionChanges ──(notify.py: observe / announce)──► alert_states + alert_notifications
    alert_notifications ──(dispatch.py, every second)──► alert_deliveries ──► slack.py / email.py

Alerts is handed its [alerts] section only; the reaction loop (monitor/loop.py)
hands it what health and policy report.
"""
