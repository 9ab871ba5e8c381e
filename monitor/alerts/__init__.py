"""Alerts: Slack incoming webhooks and email, deduplicated per subject and
cause with a cooldown, "resolved" when the cause clears, and one digest when
many fire at once.

    health changes / policy actions ──(notify.py)──► alert_states + alert_notifications
    alert_notifications ──(dispatch.py, every second)──► alert_deliveries ──► slack.py / email.py
"""
