"""Injection: a template and a recipient CSV into the durable queue.

Rows are read, checked, personalised and written in chunks (one transaction
each); the suppression list is checked per chunk, and a suppressed address
is recorded as such (never queued), so the campaign's counts add up.

An address is queued once per campaign: a second row for it (the domain
compared case-insensitively, the local part as written, RFC 5321) is counted
as a duplicate, and so is an address the campaign already holds from an
earlier run. So a run that stopped half-way (a broken CSV line, Ctrl-C, a
database error) is resumed by running the same command again: the rows
already queued are skipped. `allow_duplicates` turns this off.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from monitor.storage.suppression import suppressed_addresses
from parsers.addresses import MAX_ADDRESS_LENGTH, normalize
from sender.dkim import signer_for
from sender.message import Personaliser, Template, TemplateError
from sender.models import SUPPRESSED
from sender.queue import NewMessage, enqueue
from sender.settings import DkimKeyConfig, SenderConfig

CHUNK = 2000


class CampaignError(ValueError):
    """Input that cannot be sent (bad CSV, template/column mismatch), for people."""


class CsvLineError(CampaignError):
    """A line of the CSV that cannot be read, found after earlier rows were queued."""


def campaign_recipients(engine: Engine, campaign: str) -> set[str]:
    """Every address the campaign holds (queued, sent, suppressed, ...), as stored."""
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(text("SELECT recipient FROM sender_message WHERE campaign = :c"),
                                          {"c": campaign})}


@dataclass
class InjectResult:
    queued: int = 0
    suppressed: int = 0
    duplicates: int = 0  # rows whose address this campaign already has (this file or an earlier run)
    invalid: list[tuple[int, str, str]] = field(default_factory=list)  # (line, value, why)
    first_id: int | None = None


# The everyday address (dot-atom local part, LDH host name): a strict subset
# of RFC 5321's grammar, accepted without the full parser (which costs ~50 us).
_PLAIN = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")


def clean_address(value: str) -> str | None:
    """A strict recipient: one addr-spec, domain lower-cased, or None.

    Everything but the everyday form goes through parsers.addresses (flanker's
    parser, then a host-name check): no domain literal (`a@[127.0.0.1]`), no
    label starting or ending with '-' (`a@-example.com`), no empty label; an
    internationalized (SMTPUTF8) address is kept as written. The value must be
    the address itself, not text that contains one."""
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    if not value or any(ch.isspace() for ch in value) or len(value) > MAX_ADDRESS_LENGTH:
        return None
    if len(value) <= 254 and _PLAIN.fullmatch(value):
        local, _, domain = value.rpartition("@")
        return f"{local}@{domain.lower()}" if len(local) <= 64 else None
    found = normalize(value)
    if found is None:
        return None
    local, _, domain = found.rpartition("@")
    given_local, _, given_domain = value.rpartition("@")
    if local != given_local or domain != given_domain.lower().rstrip("."):
        return None  # normalize() found an address inside something else
    if "." not in domain and domain != "localhost":
        return None
    if len(local.encode("utf-8")) > 64:
        return None
    return found


def read_recipients(path: Path, template: Template) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """CSV header and an iterator of (line number, row); checks the columns."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CampaignError(f"cannot read recipients {path}: {exc.strerror}") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CampaignError(f"{path}: not UTF-8 text ({exc})") from None
    reader = csv.DictReader(io.StringIO(content, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "email" not in columns:
        raise CampaignError(f"{path}: the CSV needs an 'email' column (found: {', '.join(columns) or 'no header'})")
    missing = sorted(template.placeholders - set(columns))
    if missing:
        used = ', '.join('{{' + m + '}}' for m in missing)
        raise CampaignError(f"the template uses {used} but {path} has no such column")
    reader.fieldnames = columns

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        try:
            for row in reader:
                yield reader.line_num, {k: (v if v is not None else "") for k, v in row.items() if k is not None}
        except csv.Error as exc:
            raise CsvLineError(f"{path}:{reader.line_num + 1}: not CSV: {exc}") from None

    return columns, rows()


def inject(engine: Engine, config: SenderConfig, template_path: Path, recipients_path: Path, *,
           campaign: str, pool: str, unsubscribe_header=None, allow_duplicates: bool = False) -> InjectResult:
    if "|" in campaign or not campaign.strip():
        raise CampaignError("campaign names may not be empty or contain '|'")
    try:
        template = Template.load(template_path)
    except TemplateError as exc:
        raise CampaignError(str(exc)) from None
    signers = {k.domain.lower(): k for k in config.dkim}
    sign = bool(signers) and _has_signer(signers, template.from_domain)
    personaliser = Personaliser(template, campaign, pool, config.feedback_id_sender,
                                unsubscribe_header=unsubscribe_header, sign_body=sign)
    _, rows = read_recipients(recipients_path, template)
    result = InjectResult()
    with engine.connect() as conn:
        result.first_id = (conn.execute(text("SELECT MAX(id) FROM sender_message")).scalar() or 0) + 1
    seen: set[str] | None = None if allow_duplicates else campaign_recipients(engine, campaign)
    chunk: list[tuple[int, str, dict[str, str]]] = []
    try:
        for line, row in rows:
            address = clean_address(row.get("email", ""))
            if address is None:
                result.invalid.append((line, row.get("email", ""), "not an email address"))
                continue
            if seen is not None:
                if address in seen:
                    result.duplicates += 1
                    continue
                seen.add(address)
            row["email"] = address
            chunk.append((line, address, row))
            if len(chunk) >= CHUNK:
                _write_chunk(engine, personaliser, config.mail_from, campaign, pool, chunk, result)
                chunk = []
    except CsvLineError as exc:
        done = result.queued + result.suppressed
        resume = (f"; the {done} rows before it are stored: fix the file and run the same command again to "
                  "queue the rest (rows already queued are skipped)") if done and seen is not None else ""
        raise CampaignError(f"{exc}{resume}") from None
    if chunk:
        _write_chunk(engine, personaliser, config.mail_from, campaign, pool, chunk, result)
    return result


def _has_signer(signers: dict[str, DkimKeyConfig], domain: str) -> bool:
    return signer_for(signers, domain) is not None


def _write_chunk(engine: Engine, personaliser: Personaliser, mail_from: str, campaign: str, pool: str,
                 chunk: list[tuple[int, str, dict[str, str]]], result: InjectResult) -> None:
    with engine.begin() as conn:
        with Session(bind=conn) as session:
            blocked = suppressed_addresses(session, [address for _, address, _ in chunk])
        messages = []
        for _, address, row in chunk:
            if address in blocked:
                messages.append(NewMessage(campaign, pool, address, mail_from, "", b"", b"", None, False,
                                           state=SUPPRESSED))
                result.suppressed += 1
                continue
            rendered = personaliser.render(address, row)
            messages.append(NewMessage(campaign, pool, address, mail_from, rendered.message_id, rendered.headers,
                                       rendered.body, rendered.body_hash, rendered.eight_bit))
            result.queued += 1
        enqueue(conn, messages)
