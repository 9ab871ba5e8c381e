"""Bounce and DSN parser: every failed recipient of a bounce becomes a
`BounceEvent`, a 2.x.x DSN becomes a `DeliverySuccessEvent`.

Readers, most structured first:
1. RFC 3464 delivery-status parts (dsn.py);
2. provider notifications with a format of their own (vendors.py, e.g.
   Amazon SES JSON);
3. the human-readable notice (plaintext.py), which also completes DSN
   records that lack a diagnostic or the SMTP command.
Each recipient is then classified (classify.py) from its status, reply code
and diagnostic text.
"""

from __future__ import annotations

from parsers.bounce.assemble import parse_bounce

__all__ = ["parse_bounce"]
