"""Reputation signals from outside: DNS blocklists, the sender's own DNS
authentication records, and the mailbox providers' postmaster data.

Every part follows one rule above all: an answer we do not understand is an
*error/unknown* state, never a listing and never a clean bill of health.
"""
