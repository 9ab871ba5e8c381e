"""Hostile input for the parsers and for `repmon parse` (issue 14): texts built
to make a backtracking pattern quadratic, and paths that are not regular files.

The pattern tests have no timing assertion: before the fix each took from
twenty seconds to minutes, so finishing within the generous timeout is the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parsers import parse_bytes
from parsers.events import DmarcFailureEvent
from parsers.reports.failure import _address_domain

ROOT = Path(__file__).resolve().parents[1]
LETTERS = "a" * 100_000


def cli(*args: str | bytes, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "monitor.cli", "parse", *args], cwd=ROOT, capture_output=True,
                          timeout=timeout, check=False)


@pytest.mark.timeout(120)
def test_auto_reply_whose_from_is_100000_letters() -> None:
    raw = (f"From: {LETTERS}\r\nTo: news@example.com\r\nSubject: Out of office\r\n"
           "Auto-Submitted: auto-replied\r\n\r\nI am away.\r\n").encode()
    events = parse_bytes(raw)
    assert events and all(e.kind in ("auto_reply", "not_bounce") for e in events), events


@pytest.mark.timeout(120)
def test_failure_report_with_hostile_from_and_fields() -> None:
    sample = f"From: {LETTERS}@{'b' * 1000}\r\nSubject: x\r\n"
    raw = ("From: ruf@receiver.example\r\nTo: dmarc@example.com\r\nSubject: DMARC failure\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n"
           "--b\r\nContent-Type: text/plain\r\n\r\nDMARC failure report\r\n"
           "--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: auth-failure\r\nVersion: 1\r\n"
           "Auth-Failure: dmarc\r\nSource-IP: 192.0.2.7\r\n"
           f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\n{sample}\r\n--b--\r\n").encode()
    [event] = [e for e in parse_bytes(raw) if isinstance(e, DmarcFailureEvent)]
    assert event.source_ip == "192.0.2.7"


@pytest.mark.timeout(120)
def test_plain_text_failure_report_with_a_field_of_blanks() -> None:
    text = "DMARC failure\r\n  Sender Domain:" + " " * 100_000 + "example.com\r\n  Sender IP Address: 192.0.2.8\r\n"
    raw = ("From: ruf@receiver.example\r\nSubject: DMARC failure\r\nContent-Type: text/plain\r\n\r\n" + text).encode()
    [event] = [e for e in parse_bytes(raw) if isinstance(e, DmarcFailureEvent)]
    assert (event.reported_domain, event.source_ip) == ("example.com", "192.0.2.8")


@pytest.mark.timeout(60)
def test_address_scan_of_failure_reports_is_linear() -> None:
    assert _address_domain(LETTERS) is None
    assert _address_domain("a@;" * 30_000 + " x@example.com") == "example.com"
    assert _address_domain("<bounce+x@mail.example.org>;") == "mail.example.org"


# --- repmon parse on what is not a regular file ----------------------------------

def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.eml"
    os.mkfifo(fifo)
    done = cli("--json", str(fifo), timeout=30)
    assert done.returncode == 1
    assert b"not a regular file (a FIFO)" in done.stderr and done.stdout == b""


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_dev_zero_is_refused_not_read_forever() -> None:
    done = cli("/dev/zero", timeout=30)
    assert done.returncode == 1
    assert b"/dev/zero: not a regular file (a character device)" in done.stderr


def test_regular_files_next_to_a_fifo_are_still_parsed(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.eml")
    mail = tmp_path / "mail.eml"
    mail.write_bytes(b"From: a@example.com\r\nSubject: hello\r\n\r\nhi\r\n")
    done = cli("--json", str(tmp_path / "pipe.eml"), str(mail), timeout=30)
    assert done.returncode == 1
    assert [json.loads(line)["kind"] for line in done.stdout.splitlines()] == ["not_bounce"]


def test_json_output_is_valid_utf8_for_a_non_utf8_file_name(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/caf\xe9-\xff.eml"
    with open(name, "wb") as handle:
        handle.write(b"From: a@example.com\r\nSubject: hello\r\n\r\nhi\r\n")
    done = cli("--json", name)
    assert done.returncode == 0, done.stderr
    [record] = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]  # strict UTF-8
    assert record["file"].endswith("/caf\\xe9-\\xff.eml") and record["kind"] == "not_bounce"
    text = cli(name)
    assert text.returncode == 0 and "caf\\xe9-\\xff.eml: not_bounce" in text.stdout.decode("utf-8")
