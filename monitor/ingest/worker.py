"""`python -m monitor.ingest.worker READ_FD WRITE_FD`: one worker of the parse
pool (monitor/ingest/pool.py), started by the pool with two pipes.

A module of its own so that what the worker pickles is named after
monitor.ingest.pool, not __main__.
"""

from __future__ import annotations

import sys

from monitor.ingest.pool import worker_main

if __name__ == "__main__":
    worker_main(sys.argv[1:])
