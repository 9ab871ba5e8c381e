"""DKIM signing (RFC 6376) with rsa-sha256 and ed25519-sha256 (RFC 8463),
relaxed/relaxed canonicalization.

Why our own signer and not dkimpy's `dkim.sign`: dkimpy does its RSA
arithmetic in pure Python and re-parses the key and the whole message on every
call, about 6.5 ms a message here, so signing alone would cap the sender at
~150 messages/s against the 1,500/s it must reach. Here the key is loaded
once, the body hash is computed once at enqueue (the body never changes
after), and the per-delivery work is canonicalizing a dozen header lines plus
one OpenSSL signature (~0.25 ms RSA-2048, ~0.04 ms Ed25519). dkimpy stays the
independent verifier in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

K = TypeVar("K")  # what signer_for picks: a signer, or a key's settings

# Header fields we sign when present. From is listed twice (over-signing), so
# nobody can add a second From: after signing without breaking the signature.
DEFAULT_SIGNED_HEADERS = (
    "from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version",
    "content-type", "content-transfer-encoding", "list-id", "list-unsubscribe",
    "list-unsubscribe-post", "feedback-id", "x-repmon-track",
)

_WSP_RUN = re.compile(rb"[ \t]+")
_BODY_WSP_RUN = re.compile(rb"[ \t]+")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")


class DkimKeyError(ValueError):
    """A key file that cannot be used for signing."""


def body_hash(body: bytes) -> str:
    """bh= of an (unstuffed, CRLF) body under relaxed canonicalization."""
    text = _TRAILING_WSP.sub(b"\r\n", _BODY_WSP_RUN.sub(b" ", body))
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    text = text.rstrip(b"\r\n")
    text = text + b"\r\n" if text else b""
    return base64.b64encode(hashlib.sha256(text).digest()).decode("ascii")


def body_hash_of_wire(wire_body: bytes) -> str:
    """bh= of a body stored in wire form (dot-stuffed)."""
    unstuffed = wire_body.replace(b"\r\n..", b"\r\n.")
    if unstuffed.startswith(b".."):
        unstuffed = unstuffed[1:]
    return body_hash(unstuffed)


def split_fields(header_block: bytes) -> list[tuple[bytes, bytes]]:
    """(lowercased name, whole raw field incl. folded lines and final CRLF)."""
    fields: list[tuple[bytes, bytes]] = []
    for line in header_block.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line + b"\r\n")
            continue
        name, sep, _ = line.partition(b":")
        if not sep:
            continue  # not a header field; left to the receiver to judge
        fields.append((name.strip().lower(), line + b"\r\n"))
    return fields


def _relaxed_header(name: bytes, raw: bytes) -> bytes:
    _, _, value = raw.partition(b":")
    value = value.replace(b"\r\n", b"")
    value = _WSP_RUN.sub(b" ", value).strip(b" ")
    return name + b":" + value


@dataclass(slots=True)
class DkimSigner:
    domain: str
    selector: str
    algorithm: str  # rsa-sha256 | ed25519-sha256
    _key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    signed_headers: tuple[str, ...] = DEFAULT_SIGNED_HEADERS

    @classmethod
    def from_pem(cls, domain: str, selector: str, pem: bytes, algorithm: str | None = None) -> DkimSigner:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise DkimKeyError(f"DKIM key for {selector}._domainkey.{domain}: "
                               f"not a usable PEM private key ({exc})") from None
        if isinstance(key, rsa.RSAPrivateKey):
            found = "rsa-sha256"
            if key.key_size < 1024:
                raise DkimKeyError(f"DKIM key for {domain}: "
                                   "RSA keys under 1024 bits are refused by receivers (RFC 8301)")
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            found = "ed25519-sha256"
        else:
            raise DkimKeyError(f"DKIM key for {domain}: only RSA and Ed25519 keys can sign")
        if algorithm is not None and algorithm != found:
            raise DkimKeyError(f"DKIM key for {domain}: configured as {algorithm} but the key file holds a {found} key")
        return cls(domain=domain.lower(), selector=selector, algorithm=found, _key=key)

    @classmethod
    def from_file(cls, domain: str, selector: str, path: Path, algorithm: str | None = None) -> DkimSigner:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise DkimKeyError(f"DKIM key for {domain}: cannot read {path}: {exc.strerror}") from None
        return cls.from_pem(domain, selector, pem, algorithm)

    def public_record(self) -> str:
        """The TXT record to publish at <selector>._domainkey.<domain>."""
        key = self._key
        if isinstance(key, rsa.RSAPrivateKey):
            der = key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
            return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()

    def sign(self, header_block: bytes, bh: str, timestamp: int | None = None) -> bytes:
        """The DKIM-Signature field (with CRLF) for a header block and body hash."""
        fields = split_fields(header_block)
        # Sign the bottom-most instance of each name first (RFC 6376 5.4.2).
        by_name: dict[bytes, list[bytes]] = {}
        for name, raw in fields:
            by_name.setdefault(name, []).append(raw)
        names: list[str] = []
        canon: list[bytes] = []
        for wanted in self.signed_headers:
            instances = by_name.get(wanted.encode())
            if not instances:
                continue
            for raw in reversed(instances):
                names.append(wanted)
                canon.append(_relaxed_header(wanted.encode(), raw))
        if "from" in names:
            names.append("from")  # over-signed: an added From: breaks the signature
        tags = f"v=1; a={self.algorithm}; c=relaxed/relaxed; d={self.domain}; s={self.selector};"
        if timestamp is not None:
            tags += f" t={timestamp};"
        tags += f" h={':'.join(names)}; bh={bh}; b="
        data = b"\r\n".join(canon) + b"\r\n" + _relaxed_header(b"dkim-signature", b"DKIM-Signature: " + tags.encode())
        key = self._key
        if isinstance(key, rsa.RSAPrivateKey):
            signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        else:
            # RFC 8463: Ed25519 signs the SHA-256 hash of the header data.
            signature = key.sign(hashlib.sha256(data).digest())
        b64 = base64.b64encode(signature).decode("ascii")
        folded = "\r\n\t".join(b64[i:i + 72] for i in range(0, len(b64), 72))
        return f"DKIM-Signature: {tags}{folded}\r\n".encode("ascii")


def signer_for(signers: Mapping[str, K], from_domain: str) -> K | None:
    """The key of the From: domain or of its closest configured parent domain
    (DMARC relaxed alignment accepts a parent's signature)."""
    domain = from_domain.lower().rstrip(".")
    while domain:
        signer = signers.get(domain)
        if signer is not None:
            return signer
        _, _, domain = domain.partition(".")
    return None
