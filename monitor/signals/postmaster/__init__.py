"""Mailbox providers' postmaster data: Google Postmaster Tools and Microsoft SNDS.

Parsers are pure (JSON / CSV -> typed rows); fetching goes through
`http.fetch`, which retries 429 and 5xx with back-off and turns every
failure into a FetchError with a message for people - never a crash.
"""
