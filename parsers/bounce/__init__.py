"""Bounce and DSN parser: every failed recipient of a bounce becomes a
`BounceEvent`, a 2.x.x DSN becomes a `DeliverySuccessEvent`.

Readers, most structured first:
1. RFC 3464 delivery-status parts (dsn.py), also when written into a text
   part;
2. provider notifications with a format of their own (vendors.py: Amazon
   SES/SNS JSON);
3. the human-readable notice (plaintext.py), which also completes DSN
   records that lack a diagnostic or the SMTP command.
Each recipient is then classified (classify.py, whose knowledge is the data
in tables/, read once by knowledge.py) from its status, reply code,
diagnostic text, SMTP command and answering server; assemble.py ties these
together. Challenge-response requests are left to the auto-reply parser.
"""

from __future__ import annotations

from parsers.bounce.assemble import parse_bounce

__all__ = ["parse_bounce"]
