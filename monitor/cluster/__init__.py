"""Several `repmon run` nodes on one PostgreSQL database, behaving as one.

The ground for it, on floor 1 beside storage (it imports only monitor/core):
- nodes.py: each node registers itself and heartbeats; `repmon nodes` lists them.
- leases.py: named leases in the database (one owner per job, renewed by the
  heartbeat, taken over when the owner stops renewing).
- budget.py: a lane's rate, daily cap and connection count held across nodes
  by granting time slots of the lane's budget (see the README's design notes).
"""
