"""`repmon parse`: the command line over the shipped examples, and the JSON
Lines contract other tools read."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli import main
from parsers import parse_bytes
from parsers.events import DmarcAggregateEvent
from parsers.reports.sources import default_enricher
from tests.fixtures._reports import REPORT_NAME, aggregate_xml, attachment, make_zip, record_xml, report_mail

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# The fields each kind must carry in `repmon parse --json` (besides file, kind).
CONTRACT = {
    "feedback": {"recipient", "feedback_type", "source_ip", "reported_domain", "original_mail_from", "feedback_id",
                 "original_message_id"},
    "bounce": {"recipient", "reason", "status", "reply_code", "hard_or_soft", "diagnostic", "remote_mta",
               "original_message_id"},
    "unparseable": {"error"},
    "auto_reply": set(),
    "delivery_success": set(),
    "not_bounce": set(),
}


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["parse", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check_contract(records: list[dict]) -> None:
    for record in records:
        assert isinstance(record.get("file"), str) and record["file"], record
        assert isinstance(record.get("kind"), str), record
        missing = CONTRACT.get(record["kind"], set()) - record.keys()
        assert not missing, (record["kind"], missing)


@pytest.fixture(scope="module")
def example_records() -> list[dict]:
    """`repmon parse --json examples/` run as a separate process, as a user would."""
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "parse", "--json", "examples"], cwd=ROOT,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return json_lines(done.stdout.decode("utf-8"))  # strict UTF-8: the output must be valid


def by_file(records: list[dict], name: str) -> list[dict]:
    return [r for r in records if Path(r["file"]).name == name]


def test_examples_follow_the_json_contract(example_records):
    check_contract(example_records)
    shipped = {p.name for p in EXAMPLES.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert {Path(r["file"]).name for r in example_records} == shipped  # every file answers
    assert not [r for r in example_records if r["kind"] == "unparseable"]


def test_in_process_and_subprocess_agree(capsys, example_records):
    status, out, _ = run_cli(capsys, "--json", str(EXAMPLES))
    assert status == 0
    in_process = json_lines(out)
    strip = lambda records: sorted(json.dumps({**r, "file": Path(r["file"]).name}, sort_keys=True) for r in records)  # noqa: E731
    assert strip(in_process) == strip(example_records)


def test_complaint_examples(example_records):
    [abuse] = by_file(example_records, "arf-abuse-yahoo-style.eml")
    assert abuse["kind"] == "feedback"
    assert (abuse["recipient"], abuse["feedback_type"], abuse["source_ip"]) == ("reader-417@example.net", "abuse", "192.0.2.25")
    assert (abuse["reported_domain"], abuse["original_mail_from"]) == ("example.com", "newsletter@example.com")
    assert abuse["feedback_id"] == "summer-2026:newsletter:exampleshop"
    assert abuse["original_message_id"] == "<20260614094110.3c9e@mta1.example.com>"
    assert abuse["arrival_date"] == "2026-06-14T09:41:17Z"
    [opt_out] = by_file(example_records, "arf-opt-out.eml")
    assert (opt_out["feedback_type"], opt_out["recipient"]) == ("opt-out", "m.rossi@isp.example.org")
    [tracked] = by_file(example_records, "arf-tracked-repmon.eml")
    assert tracked["tracking"] == {"message_id": "20260614.a81f@mta1.example.com", "source_ip": "192.0.2.25",
                                   "campaign": "spring-sale"}


def test_bounce_examples(example_records):
    postfix = by_file(example_records, "dsn-postfix-hard-and-soft.eml")
    assert [(r["kind"], r["recipient"], r["hard_or_soft"], r["status"]) for r in postfix] == [
        ("bounce", "nobody-here@example.net", "hard", "5.1.1"),
        ("bounce", "full.box@example.org", "soft", "5.2.2"),
    ]
    assert {r["tracking"]["campaign"] for r in postfix} == {"june-newsletter"}
    [exim] = by_file(example_records, "bounce-exim-plain.eml")
    assert (exim["kind"], exim["recipient"], exim["hard_or_soft"], exim["reply_code"]) == (
        "bounce", "old.account@example.org", "hard", 550)
    [gmail] = by_file(example_records, "dsn-gmail-style-550-5.1.1.eml")
    assert (gmail["recipient"], gmail["reason"], gmail["status"]) == ("no.such.user@example.net", "userunknown", "5.1.1")
    [delayed] = by_file(example_records, "dsn-delayed-4.4.1.eml")
    assert (delayed["kind"], delayed["hard_or_soft"], delayed["status"]) == ("bounce", "soft", "4.4.1")


def test_auto_reply_and_ordinary_examples(example_records):
    [reply] = by_file(example_records, "autoreply-out-of-office.eml")
    assert (reply["kind"], reply["recipient"]) == ("auto_reply", "jonas.berg@partner.example.org")
    [plain] = by_file(example_records, "ordinary-reply.eml")
    assert (plain["kind"], plain["subject"]) == ("not_bounce", "Re: June newsletter")


def test_human_output_names_file_and_kind(capsys):
    status, out, _ = run_cli(capsys, str(EXAMPLES / "arf-opt-out.eml"), str(EXAMPLES / "ordinary-reply.eml"))
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith(str(EXAMPLES / "arf-opt-out.eml") + ": feedback opt-out")
    assert lines[1].startswith(str(EXAMPLES / "ordinary-reply.eml") + ": not_bounce")


def test_missing_path_is_reported_and_the_rest_still_parsed(capsys, tmp_path):
    status, out, err = run_cli(capsys, "--json", str(tmp_path / "nope.eml"), str(EXAMPLES / "ordinary-reply.eml"))
    assert status == 1
    assert "nope.eml: no such file or folder" in err
    assert [r["kind"] for r in json_lines(out)] == ["not_bounce"]


def test_bad_files_are_reported_as_unparseable(capsys, tmp_path):
    (tmp_path / "empty.eml").write_bytes(b"")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "hidden").mkdir()
    (tmp_path / ".seen").write_bytes(b"From: a@example.com\n\nx")  # dot files are skipped
    status, out, _ = run_cli(capsys, "--json", str(tmp_path))
    records = json_lines(out)
    check_contract(records)
    assert status == 0
    assert sorted((Path(r["file"]).name, r["kind"]) for r in records) == [
        ("blob.bin", "unparseable"), ("empty.eml", "unparseable")]
    assert all(r["error"] for r in records)


def test_output_is_valid_utf8_for_hostile_headers(tmp_path):
    # charsets whose decoders yield lone surrogates, raw 8-bit and NUL bytes
    (tmp_path / "hostile.eml").write_bytes(
        b"From: \xff\xfe <a@example.com>\nSubject: =?utf-7?Q?+2AA-?= =?unicode_escape?Q?=5Cud800?= caf\xc3\xa9 \x00\n"
        b"Message-ID: <\xed\xa0\x80@example.com>\nContent-Type: text/plain; charset=utf-7\n\n+2AA-\n")
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "parse", "--json", str(tmp_path)], cwd=ROOT,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    [record] = json_lines(done.stdout.decode("utf-8"))
    assert record["kind"] == "not_bounce"
    assert "café" in record["subject"]


# --- DMARC aggregate reports: sources on by default, output streamed record by record ---

def _aggregate_with(ip: str) -> bytes:
    return aggregate_xml([record_xml(ip, 3), record_xml("192.0.2.1", 2, dkim="fail", spf="fail")])


def test_aggregate_records_carry_their_source_by_default(capsys, tmp_path):
    report = tmp_path / "receiver.example!example.com!1700000000!1700086399.xml"
    report.write_bytes(_aggregate_with("100.24.188.149"))
    status, out, _ = run_cli(capsys, "--json", str(report))
    assert status == 0
    [event] = json_lines(out)
    amazon, documentation = event["records"]
    assert (amazon["source_country"], amazon["source_asn"], amazon["source_name"]) == ("US", 14618, "Amazon")
    assert amazon["source_reverse_dns"] is None and amazon["source_base_domain"] is None  # no reverse DNS here
    assert documentation["source_asn"] is None
    status, out, _ = run_cli(capsys, "--json", "--no-sources", str(report))
    assert status == 0 and json_lines(out)[0]["records"][0]["source_country"] is None


def test_streamed_json_equals_the_event_dict(capsys, tmp_path):
    data = _aggregate_with("2001:db8::5")
    (tmp_path / "r.xml").write_bytes(data)
    [event] = parse_bytes(data)
    assert isinstance(event, DmarcAggregateEvent)
    default_enricher().enrich(event)
    status, out, _ = run_cli(capsys, "--json", str(tmp_path / "r.xml"))
    assert status == 0
    assert json_lines(out) == [json.loads(json.dumps({"file": str(tmp_path / "r.xml"), **event.to_dict()}))]


@pytest.mark.parametrize("packing", ["zip", "gzip"])
def test_compressed_report_by_mail(capsys, tmp_path, packing):
    xml = _aggregate_with("100.24.188.149")
    data, kind, name = ((make_zip({f"{REPORT_NAME}.xml": xml}), "application/zip", f"{REPORT_NAME}.zip")
                        if packing == "zip" else (gzip.compress(xml), "application/gzip", f"{REPORT_NAME}.xml.gz"))
    (tmp_path / "report.eml").write_bytes(report_mail(attachment(data, kind, name)))
    status, out, _ = run_cli(capsys, "--json", str(tmp_path / "report.eml"))
    assert status == 0
    [event] = json_lines(out)
    assert event["kind"] == "dmarc_aggregate" and event["records"][0]["source_as_domain"] == "amazon.com"


def test_human_line_of_a_report_without_policy_evaluated(capsys, tmp_path):
    bare = ("<record><row><source_ip>192.0.2.5</source_ip><count>7</count></row>"
            "<identifiers><header_from>example.com</header_from></identifiers></record>")
    (tmp_path / "r.xml").write_bytes(aggregate_xml([bare]))
    status, out, _ = run_cli(capsys, str(tmp_path / "r.xml"))
    assert status == 0 and "1 rows, 7 messages, 0 failing DMARC" in out
