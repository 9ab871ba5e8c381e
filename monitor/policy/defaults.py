"""The shipped rules: what a careful deliverability engineer does by default.

They run after the rules of the config ([[policy.rules]]) unless
`[policy] defaults = false`; a config rule with the same name replaces one.

- A listing on a major blocklist pauses that IP for the destinations whose
  receivers use the list, until it is delisted (monitor/health/zones.py says
  which lists are major and who uses them).
- A lane whose complaint rate reaches 0.3 % over 24 h stops for 4 hours:
  Gmail and Yahoo both draw the line there. (Gmail sends no feedback loop;
  its spam rate is per domain, and alerts say when it crosses.)
- Half of the attempts of a lane deferred within the hour: pause 30 minutes;
  a fifth: slow to one message a second for an hour.
- 10 % hard bounces over 24 h on a lane: a list problem; pause 2 hours
  before the provider draws its own conclusions.
- A fifth of a lane's mail refused for reputation within the hour: pause 1 hour.
- A recipient domain that only ever answers "host unknown" (3 or more, no
  delivery in 7 days) is suppressed for 30 days.
When a pause or slow ends, the lane resumes with the [policy.ramp].
"""

from __future__ import annotations

DEFAULT_RULES: list[dict] = [
    {"name": "major-listing-pause", "subjects": ["ip"], "listed_on": ["major"], "action": "pause",
     "scope": "zone_users", "severity": "critical"},
    {"name": "lane-complaint-rate-pause", "subjects": ["lane"], "metric": "complaint_rate", "window": "24h",
     "above": "0.3%", "action": "pause", "duration": "4h", "severity": "critical"},
    {"name": "lane-deferral-rate-pause", "subjects": ["lane"], "metric": "deferral_rate", "window": "1h",
     "above": "50%", "action": "pause", "duration": "30m", "severity": "warning"},
    {"name": "lane-deferral-rate-slow", "subjects": ["lane"], "metric": "deferral_rate", "window": "1h",
     "above": "20%", "action": "slow", "rate": "1/s", "duration": "1h", "severity": "warning"},
    {"name": "lane-hard-bounce-pause", "subjects": ["lane"], "metric": "hard_bounce_rate", "window": "24h",
     "above": "10%", "action": "pause", "duration": "2h", "severity": "critical"},
    {"name": "lane-block-rate-pause", "subjects": ["lane"], "metric": "block_rate", "window": "1h",
     "above": "20%", "action": "pause", "duration": "1h", "severity": "critical"},
    {"name": "dead-recipient-domain", "subjects": ["rdomain"], "metric": "hostunknown_rate", "window": "7d",
     "above": "99%", "min_volume": 3, "action": "suppress", "duration": "30d", "severity": "info"},
]
