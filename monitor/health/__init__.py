"""Health: per sending IP, sending domain and lane (IP x destination), over
1 h, 24 h and 7 d, from incremental roll-ups of the stored events.

    event tables ──(rollup.py, by id watermark)──► health_counts (5m / 1h / 1d buckets)
    health_counts + listings + postmaster + SNDS ──(service.py, assess.py)──► state, score, reasons
    assessments ──(service.HealthStore)──► health_states, and the StateChanges alerts hear of

Health is handed its [health] section and the sending domains / addresses
(HealthService); it imports neither policy nor alerts: the reaction loop
(monitor/loop.py) passes its assessments on.
"""
