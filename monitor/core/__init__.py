"""The ground floor: what every part of repmon builds on and nothing else.

config (the settings base, secrets, [database] and [logging]), units (rates,
durations, fractions), db (engines, sessions, schema upgrades), runtime (jobs,
back-off, the shared run state) and logs (logging with secrets masked). Nothing
here imports a part of repmon.
"""
