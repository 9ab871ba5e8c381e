"""The HTTP API and the operator page (`[api]`): suppressions, the sender's
per-message check, the event feed, health states and policy actions, behind one
bearer token. settings.py is the section, server.py the aiohttp server
(connection cap, header and body timeouts), routes.py the JSON API, page.py the
operator page, openapi.py the description of it all, jobs.py the daemon job."""
