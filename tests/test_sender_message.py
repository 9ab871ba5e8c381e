"""Templates, personalisation, the per-delivery headers and DKIM signing
(verified by dkimpy, an independent implementation)."""

from __future__ import annotations

import email
import email.policy

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from parsers import tracking
from sender.dkim import DkimKeyError, DkimSigner, body_hash, signer_for
from sender.message import Personaliser, Template, TemplateError
from sender.smtp import dot_stuff
from sender.unsubscribe import TokenMaker

TEMPLATE = (b"From: News <news@example.com>\nSubject: Hello {{name}}\nMessage-ID: <fixed@template>\n"
            b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
            b"Dear {{name}},\n.a line starting with a dot\ntrailing   \n\n")


def unstuff(wire: bytes) -> bytes:
    data = wire.replace(b"\r\n..", b"\r\n.")
    return data[1:] if data.startswith(b"..") else data


def render(values: dict[str, str], **kw):
    template = Template.parse(TEMPLATE)
    return Personaliser(template, "spring", "default", "repmon", sign_body=True, **kw).render(values["email"], values)


def test_personalisation_headers_and_wire_form():
    m = render({"email": "bob@example.org", "name": "Bøb\r\nBcc: evil@example.net"})
    parsed = email.message_from_bytes(m.headers + b"\r\n" + unstuff(m.body), policy=email.policy.default)
    assert parsed["Subject"] == "Hello Bøb  Bcc: evil@example.net"  # no header injection: CR/LF gone, encoded word
    assert parsed["Bcc"] is None
    assert parsed["To"].addresses[0].addr_spec == "bob@example.org"
    assert parsed["Message-ID"] != "<fixed@template>" and parsed["Message-ID"].endswith("@example.com>")
    assert parsed["Feedback-ID"] == "spring:default:bulk:repmon"
    assert parsed["Date"]
    assert b"\r\n..a line starting with a dot\r\n" in m.body  # dot-stuffed for DATA
    assert m.eight_bit  # the body holds the UTF-8 name
    other = render({"email": "eve@example.org", "name": "Eve"})
    assert other.message_id != m.message_id


def test_template_errors_are_explained(tmp_path):
    with pytest.raises(TemplateError, match="no From"):
        Template.parse(b"Subject: x\n\nbody\n")
    with pytest.raises(TemplateError, match="no blank line"):
        Template.parse(b"From: a@b.c\nSubject: x")
    with pytest.raises(TemplateError, match="base64"):
        Template.parse(b"From: a@b.c\nContent-Transfer-Encoding: base64\n\n{{name}}\n")
    with pytest.raises(TemplateError, match="cannot read"):
        Template.load(tmp_path / "missing.eml")


def test_quoted_printable_templates_get_encoded_values():
    t = Template.parse(b"From: a@example.com\nContent-Transfer-Encoding: quoted-printable\n\nHi {{name}}=21\n")
    body = t.render_body({"name": "Zoë = 1"})
    assert body == b"Hi Zo=C3=AB =3D 1=21\r\n"


def test_list_unsubscribe_headers():
    maker = TokenMaker(b"secret")
    m = render({"email": "bob@example.org", "name": "Bob"},
               unsubscribe_header=lambda a, c: f"<https://u.example.com/u/{maker.make(a, c)}>")
    text = m.headers.decode()
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in text
    token = text.split("https://u.example.com/u/")[1].split(">")[0]
    assert maker.read(token) == ("bob@example.org", "spring")
    assert maker.read(token[:-2] + "xx") is None  # tampered
    assert TokenMaker(b"other").read(token) is None


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.mark.parametrize("make_key", [
    lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ed25519.Ed25519PrivateKey.generate,
], ids=["rsa-sha256", "ed25519-sha256"])
def test_dkim_signature_verifies_with_dkimpy(make_key):
    signer = DkimSigner.from_pem("example.com", "s2024", _pem(make_key()))
    m = render({"email": "bob@example.org", "name": "Bob"},
               unsubscribe_header=lambda a, c: "<https://u.example.com/u/t>")
    token = tracking.encode(m.message_id, "127.0.0.2", "spring")
    headers = b"X-Repmon-Track: " + token.encode() + b"\r\n" + m.headers
    signed = signer.sign(headers, m.body_hash) + headers + b"\r\n" + unstuff(m.body)
    record = signer.public_record().encode()
    lookups = []

    def dns(name, timeout=5):
        lookups.append(name)
        return record

    assert dkim.verify(signed, dnsfunc=dns)
    assert lookups == [b"s2024._domainkey.example.com."]
    sig = email.message_from_bytes(signed)["DKIM-Signature"]
    signed_names = sig.split(" h=")[1].split(";")[0].split(":")
    # RFC 8058 asks for both unsubscribe headers to be signed; From is over-signed.
    assert {"list-unsubscribe", "list-unsubscribe-post", "x-repmon-track", "feedback-id"} <= set(signed_names)
    assert signed_names.count("from") == 2
    assert not dkim.verify(signed.replace(b"Dear Bob", b"Dear Rob"), dnsfunc=dns)  # body changed
    assert not dkim.verify(signed.replace(b"Subject: Hello Bob", b"Subject: Hello Rob"), dnsfunc=dns)


def test_body_hash_relaxed_rules():
    assert body_hash(b"a  b \r\n\r\n\r\n") == body_hash(b"a b\r\n")
    assert body_hash(b"") == body_hash(b"\r\n\r\n")
    assert body_hash(b"x\r\n") != body_hash(b"y\r\n")


def test_key_problems_and_parent_domain_keys():
    with pytest.raises(DkimKeyError, match="not a usable PEM"):
        DkimSigner.from_pem("example.com", "s", b"garbage")
    ed = DkimSigner.from_pem("example.com", "s", _pem(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(DkimKeyError, match="holds a ed25519-sha256 key"):
        DkimSigner.from_pem("example.com", "s", _pem(ed25519.Ed25519PrivateKey.generate()), "rsa-sha256")
    signers = {"example.com": ed}
    assert signer_for(signers, "news.example.com") is ed
    assert signer_for(signers, "example.org") is None


def test_dot_stuff_normalises_line_ends():
    assert dot_stuff(b".x\nmid\r\n.y") == b"..x\r\nmid\r\n..y\r\n"
