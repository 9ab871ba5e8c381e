"""Events out: every new stored event, suppression (and removal) and policy
action POSTed as signed JSON to the [[webhooks]] that want it, from a durable
outbox. settings.py is the section, models.py the outbox, cursor and state
tables (migrations/), feed.py what is new, deliver.py the signed POSTs in
order with back-off, jobs.py the daemon job, status.py what `repmon webhooks
status` shows."""
