"""Health: per sending IP, sending domain and lane (IP x destination), over
1 h, 24 h and 7 d, from incremental roll-ups of the stored events.

    event tables ──(rollup.py, by id watermark)──► health_counts (5m / 1h / 1d buckets)
    health_counts + listings + postmaster + SNDS ──(assess.py)──► state, score, reasons
"""
