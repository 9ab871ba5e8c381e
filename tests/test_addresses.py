"""parsers.addresses.normalize: the address in a DSN/ARF field, or None."""

from __future__ import annotations

import pytest

from parsers.addresses import is_host_name, normalize


@pytest.mark.parametrize(("text", "address"), [
    ("rfc822; <Foo@Example.COM>", "Foo@example.com"),
    ('"Jo Smith" <jo.smith+tag@sub.example.org>', "jo.smith+tag@sub.example.org"),
    ("Mailbox of joe@example.com is full", "joe@example.com"),
    ("user@example.com.", "user@example.com"),
    ("root@localhost", "root@localhost"),
])
def test_ordinary_addresses(text: str, address: str) -> None:
    assert normalize(text) == address


@pytest.mark.parametrize(("text", "address"), [
    ("utf-8; jöhn@exämple.com", "jöhn@exämple.com"),
    ("rfc822; JÖHN@EXÄMPLE.COM", "JÖHN@exämple.com"),
    ('"Jöhn" <jöhn@exämple.com>', "jöhn@exämple.com"),
    ("用户@例子.广告", "用户@例子.广告"),
    ("δοκιμή@παράδειγμα.δοκιμή", "δοκιμή@παράδειγμα.δοκιμή"),
    ("utf-8; j\\x{F6}hn@example.com", "jöhn@example.com"),  # RFC 6533 embedded-unicode
])
def test_internationalized_addresses_round_trip(text: str, address: str) -> None:
    assert normalize(text) == address


@pytest.mark.parametrize("text", [
    "a\x00b@example.com",
    "rfc822; <a@example.com\x00>",
    "rfc822; victim@example.com\x00@attacker.example",
    "a@[127.0.0.1]",
    "a@127.0.0.1",
    "rfc822; <a@[IPv6:::1]>",
    "a@-example.com",
    "a@example-.com",
    "a@example..com",
    "a@.example.com",
    "x@@y.com",
    "<@a>",
    "undisclosed-recipients:;",
    "",
    None,
])
def test_not_recipient_addresses(text: str | None) -> None:
    assert normalize(text) is None


def test_host_names() -> None:
    assert is_host_name("mail.example.com") and is_host_name("xn--exmple-cua.com") and is_host_name("exämple.com")
    assert not is_host_name("a" * 64 + ".com") and not is_host_name("[192.0.2.1]") and not is_host_name("")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", [
    "a" * 100_000,  # an auto-reply From of 100,000 letters: 22-37 s with the old patterns
    "a" * 100_000 + "@",
    "<" + "a@" * 50_000,
    "a@" * 50_000,
    "@a" * 50_000,
    "a." * 50_000 + "@",
    ("x" * 1_000 + " ") * 100,
])
def test_hostile_text_is_read_in_linear_time(text: str) -> None:
    normalize(text)  # finishing at all is the test: quadratic scans take minutes here
