"""DKIM through the running sender: keys in the config, `repmon send --wait` as
a real process to an aiosmtpd receiver on 127.0.0.1, and the received
messages verified by dkimpy (an independent implementation) against the
public key's TXT record. Then a key rotation: a new selector and key in the
config, and the next messages verify with the new key only."""

from __future__ import annotations

import base64
import email
import json
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.fixtures._cli import repmon
from tests.fixtures._configs import relay_sender, write_config
from tests.fixtures.smtp_receivers import Received, Script, ScriptedSmtp

DOMAIN = "example.com"
RECIPIENTS = ["ann@example.org", "bob@example.org", "cy@example.net"]


class Key:
    """A private key on disk and the TXT record that publishes its public half."""

    def __init__(self, algorithm: str, folder: Path, name: str) -> None:
        self.algorithm = algorithm
        if algorithm == "rsa-sha256":
            private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa.generate_private_key(65537, 2048)
            public = private.public_key().public_bytes(serialization.Encoding.DER,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
            self.record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
        else:
            private = ed25519.Ed25519PrivateKey.generate()
            public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            self.record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)
        self.path = folder / f"{name}.pem"
        self.path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        self.path.chmod(0o600)


def dns_publishing(records: dict[str, bytes], lookups: list[str] | None = None) -> Callable[..., bytes | None]:
    """A dkimpy dnsfunc answering TXT records for selector -> record under DOMAIN."""
    by_name = {f"{selector}._domainkey.{DOMAIN}.".encode(): record for selector, record in records.items()}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        if lookups is not None:
            lookups.append(name.decode())
        return by_name.get(name)

    return dnsfunc


def signing_config(folder: Path, db_url: str, port: int, selector: str, key: Key) -> Path:
    return write_config(folder, relay_sender(db_url, port, dkim=[
        {"domain": DOMAIN, "selector": selector, "key_file": str(key.path), "algorithm": key.algorithm}]))


def send(config: Path, template: Path, recipients: Path, campaign: str) -> dict:
    done = repmon("send", "--config", str(config), "--template", str(template), "--recipients", str(recipients),
                  "--campaign", campaign, "--wait", "--json", console_script=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["queued"], result["delivered"]) == (len(RECIPIENTS), len(RECIPIENTS)), result
    return result


def signature_tags(message: Received) -> dict[str, str]:
    header = email.message_from_bytes(message.content)["DKIM-Signature"]
    assert header, "no DKIM-Signature on the received message"
    tags = {}
    for part in "".join(str(header).split()).split(";"):
        if "=" in part:
            name, value = part.split("=", 1)
            tags[name] = value
    return tags


@pytest.fixture
def campaign(tmp_path: Path) -> tuple[Path, Path]:
    template = tmp_path / "news.eml"
    template.write_text(f"From: News <news@{DOMAIN}>\nSubject: Hello {{{{first_name}}}}\n"
                        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
                        "Hi {{first_name}},\n.a line that starts with a dot\ntrailing spaces   \n\nBye\n")
    recipients = tmp_path / "list.csv"
    recipients.write_text("email,first_name\n" + "".join(f"{a},{a.split('@')[0].title()}\n" for a in RECIPIENTS))
    return template, recipients


@pytest.fixture
def receiver(scripted_smtp: Callable[..., ScriptedSmtp]) -> ScriptedSmtp:
    return scripted_smtp(Script())


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_sent_messages_verify_and_a_rotated_key_takes_over(algorithm, receiver, campaign, tmp_path):
    template, recipients = campaign
    db_url = f"sqlite:///{tmp_path / 'repmon.db'}"
    old_key, new_key = Key(algorithm, tmp_path, "old"), Key(algorithm, tmp_path, "new")

    config = signing_config(tmp_path, db_url, receiver.port, "s2025", old_key)
    send(config, template, recipients, "spring")
    first = list(receiver.received)
    assert sorted(r for m in first for r in m.rcpt_tos) == sorted(RECIPIENTS)
    lookups: list[str] = []
    for message in first:
        tags = signature_tags(message)
        assert (tags["d"], tags["s"], tags["a"]) == (DOMAIN, "s2025", algorithm)
        assert dkim.verify(message.content, dnsfunc=dns_publishing({"s2025": old_key.record}, lookups)), \
            message.content[:2000]
        # the body and the signed headers are what dkimpy checked: a change breaks it
        tampered = message.content.replace(b"Bye", b"Bye!")
        assert not dkim.verify(tampered, dnsfunc=dns_publishing({"s2025": old_key.record}))
    assert set(lookups) == {f"s2025._domainkey.{DOMAIN}."}

    # rotation: a new selector and key in the config; both selectors are published meanwhile
    config = signing_config(tmp_path, db_url, receiver.port, "s2026", new_key)
    send(config, template, recipients, "summer")
    second = receiver.received[len(first):]
    assert len(second) == len(first)
    both = dns_publishing({"s2025": old_key.record, "s2026": new_key.record})
    for message in second:
        tags = signature_tags(message)
        assert (tags["d"], tags["s"], tags["a"]) == (DOMAIN, "s2026", algorithm)
        assert dkim.verify(message.content, dnsfunc=both)
        # not with the old key, whichever selector it were published under
        assert not dkim.verify(message.content, dnsfunc=dns_publishing({"s2026": old_key.record}))
        assert not dkim.verify(message.content, dnsfunc=dns_publishing({"s2025": old_key.record}))
    for message in first:  # mail signed before the rotation still verifies while s2025 stays published
        assert dkim.verify(message.content, dnsfunc=both)
        assert not dkim.verify(message.content, dnsfunc=dns_publishing({"s2025": new_key.record}))
