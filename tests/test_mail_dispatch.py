"""parsers.mail.parse_mail: which parser answers for which mail, in what order."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

import parsers.mail
from parsers.events import (
    AutoReplyEvent,
    BounceEvent,
    DeliverySuccessEvent,
    DmarcAggregateEvent,
    DmarcFailureEvent,
    FeedbackEvent,
    NotBounceEvent,
    UnparseableEvent,
)
from parsers.mail import parse_mail


def dsn(action: str, status: str, recipient: str = "gone@example.net", *, extra_head: str = "", diagnostic: str = "") -> bytes:
    diag = f"Diagnostic-Code: smtp; {diagnostic}\n" if diagnostic else ""
    return (
        "From: MAILER-DAEMON@mta.example.com (Mail Delivery System)\nTo: news@example.com\n"
        f"Subject: Delivery status\nAuto-Submitted: auto-replied\n{extra_head}MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="D"\n\n'
        "--D\nContent-Type: text/plain\n\nThe mail system reports on your message.\n"
        "--D\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mta.example.com\n\n"
        f"Final-Recipient: rfc822; {recipient}\nAction: {action}\nStatus: {status}\n"
        f"Remote-MTA: dns; mx.example.net\n{diag}"
        "\n--D\nContent-Type: text/rfc822-headers\n\nFrom: news@example.com\n"
        f"To: {recipient}\nSubject: June\nMessage-ID: <june-1@example.com>\n\n--D--\n"
    ).encode()


ARF = (
    "From: fbl@feedback.example.org\nTo: fbl@example.com\nSubject: FW: June\nMIME-Version: 1.0\n"
    'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\n\n'
    "--B\nContent-Type: text/plain\n\nAbuse report.\n"
    "--B\nContent-Type: message/feedback-report\n\nFeedback-Type: {type}\nUser-Agent: t/1\nVersion: 1\n"
    "Original-Rcpt-To: reader@example.net\nSource-IP: 192.0.2.25\nReported-Domain: example.com\n{fields}"
    "\n--B\nContent-Type: text/rfc822-headers\n\nFrom: news@example.com\nTo: reader@example.net\n"
    "Subject: June\nDate: Mon, 15 Jun 2026 09:58:30 +0000\nMessage-ID: <june-1@example.com>\n\n--B--\n"
)

VACATION = (b"From: Jane Roe <jane@partner.example.org>\nTo: news@example.com\nSubject: Automatic reply: June\n"
            b"Auto-Submitted: auto-replied\nIn-Reply-To: <june-1@example.com>\n\nI am away until Monday.\n")

ORDINARY = b"From: lena@example.net\nTo: news@example.com\nSubject: Re: June\nMessage-ID: <r-1@example.net>\n\nThanks!\n"


def kinds(events) -> list[str]:
    return [e.kind for e in events]


def test_complaint_comes_before_bounce_handling():
    events = parse_mail(ARF.format(type="abuse", fields="").encode())
    assert kinds(events) == ["feedback"]
    assert events[0].recipient == "reader@example.net"


def test_auth_failure_report_gives_feedback_and_dmarc_failure():
    fields = "Auth-Failure: dmarc\nDelivery-Result: reject\nArrival-Date: Mon, 15 Jun 2026 09:58:40 +0000\n"
    events = parse_mail(ARF.format(type="auth-failure", fields=fields).encode())
    assert isinstance(events[0], FeedbackEvent) and events[0].feedback_type == "auth-failure"
    failures = [e for e in events if isinstance(e, DmarcFailureEvent)]
    assert len(failures) == 1 and failures[0].reported_domain == "example.com"


def test_dsn_marked_auto_replied_stays_a_bounce():
    events = parse_mail(dsn("failed", "5.1.1", diagnostic="550 5.1.1 user unknown"))
    assert kinds(events) == ["bounce"]
    assert isinstance(events[0], BounceEvent)
    assert (events[0].recipient, events[0].hard_or_soft) == ("gone@example.net", "hard")


def test_delivery_success_dsn_is_not_an_auto_reply():
    events = parse_mail(dsn("delivered", "2.0.0", "ok@example.net"))
    assert kinds(events) == ["delivery_success"]
    assert isinstance(events[0], DeliverySuccessEvent) and events[0].recipient == "ok@example.net"


def test_vacation_message_is_an_auto_reply():
    events = parse_mail(VACATION)
    assert kinds(events) == ["auto_reply"]
    assert isinstance(events[0], AutoReplyEvent) and events[0].recipient == "jane@partner.example.org"


def test_ordinary_mail_is_not_bounce_with_subject_and_message_id():
    [event] = parse_mail(ORDINARY)
    assert isinstance(event, NotBounceEvent)
    assert (event.subject, event.message_id) == ("Re: June", "<r-1@example.net>")


def test_non_mail_input_is_unparseable_with_reason():
    [event] = parse_mail(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert isinstance(event, UnparseableEvent)
    assert event.error.startswith("not a mail message:")


def test_dmarc_aggregate_report_attached_to_a_mail():
    xml = (b'<?xml version="1.0"?><feedback><report_metadata><org_name>receiver.example.net</org_name>'
           b"<email>dmarc@receiver.example.net</email><report_id>r-1</report_id><date_range><begin>1781136000</begin>"
           b"<end>1781222399</end></date_range></report_metadata><policy_published><domain>example.com</domain>"
           b"<p>none</p></policy_published><record><row><source_ip>192.0.2.25</source_ip><count>3</count>"
           b"<policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated>"
           b"</row><identifiers><header_from>example.com</header_from></identifiers><auth_results>"
           b"<dkim><domain>example.com</domain><result>pass</result></dkim></auth_results></record></feedback>")
    import base64

    attachment = base64.encodebytes(gzip.compress(xml)).decode()
    data = ("From: noreply-dmarc@receiver.example.net\nTo: dmarc@example.com\n"
            "Subject: Report domain: example.com Submitter: receiver.example.net Report-ID: r-1\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="M"\n\n--M\nContent-Type: text/plain\n\nReport attached.\n'
            "--M\nContent-Type: application/gzip\nContent-Transfer-Encoding: base64\n"
            'Content-Disposition: attachment; filename="receiver.example.net!example.com!1781136000!1781222399.xml.gz"\n\n'
            + attachment + "--M--\n").encode()
    events = parse_mail(data)
    assert kinds(events) == ["dmarc_aggregate"]
    assert isinstance(events[0], DmarcAggregateEvent) and events[0].domain == "example.com"


def test_bounce_of_a_complaint_is_a_bounce():
    inner = ARF.format(type="abuse", fields="")
    outer = dsn("failed", "5.1.1", "abuse@example.org", diagnostic="550 5.1.1 no such user").decode()
    outer = outer.replace("--D--\n", "--D\nContent-Type: message/rfc822\n\n" + inner + "\n--D--\n")
    outer = outer.replace("Content-Type: text/rfc822-headers\n\nFrom: news@example.com\nTo: abuse@example.org\n"
                          "Subject: June\nMessage-ID: <june-1@example.com>\n\n", "Content-Type: text/plain\n\nheaders\n")
    assert kinds(parse_mail(outer.encode())) == ["bounce"]


def test_a_stage_answering_with_an_empty_list_does_not_swallow_the_mail(monkeypatch):
    monkeypatch.setattr(parsers.mail, "parse_report_mail", lambda msg: [])
    assert kinds(parse_mail(VACATION)) == ["auto_reply"]
    assert kinds(parse_mail(ORDINARY)) == ["not_bounce"]


def test_unreadable_arf_part_is_dropped_when_the_report_parser_understood_the_mail(monkeypatch):
    failure = DmarcFailureEvent(reported_domain="example.com", source_ip="192.0.2.25", feedback_type="auth-failure",
                                auth_failure="dmarc")
    monkeypatch.setattr(parsers.mail, "parse_report_mail", lambda msg: [failure])
    broken = ARF.format(type="x", fields="").replace("Content-Type: message/feedback-report", "Content-Type: image/png")
    broken = broken.replace("Feedback-Type: x\n", "").replace("Abuse report.", "See attachment.").replace("FW: June", "Report")
    assert parse_mail(broken.encode()) == [failure]
    monkeypatch.setattr(parsers.mail, "parse_report_mail", lambda msg: None)
    assert kinds(parse_mail(broken.encode())) == ["unparseable"]


# --- the shared corpus --------------------------------------------------------------------

MINE = ("feedback", "auto_reply", "not_bounce")


@pytest.mark.evaluation
def test_corpus_rows_of_the_mail_glue_kinds_and_no_false_alarms(shared_dir):
    """Every feedback / auto_reply / not_bounce row is answered with that
    kind (feedback with its type), and no message labelled as a bounce is
    reported as a complaint or an auto-reply."""
    from parsers import parse_bytes

    corpus = shared_dir / "corpus" / "bounces"
    rows = [json.loads(line) for line in (corpus / "labels.jsonl").read_text().splitlines() if line.strip()]
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(row["file"], []).append(row)
    wrong, false_alarms, scored = [], [], Counter()
    for name, file_rows in sorted(by_file.items()):
        events = parse_bytes((corpus / name).read_bytes())
        labelled = {r["kind"] for r in file_rows}
        if "bounce" in labelled and {"feedback", "auto_reply"} & set(kinds(events)):
            false_alarms.append((name, kinds(events)))
        for row in file_rows:
            if row["kind"] not in MINE:
                continue
            scored[row["kind"]] += 1
            if row["recipient"] is None:
                index = (row.get("recipient_index") or 1) - 1
                match = events[index] if index < len(events) else None
            else:
                match = next((e for e in events if getattr(e, "recipient", None) == row["recipient"]), None)
            if match is None or match.kind != row["kind"] or (
                    row["kind"] == "feedback" and match.feedback_type != row["feedback_type"]):
                wrong.append((name, row["recipient"], row["kind"], match and match.kind))
    assert scored["feedback"] >= 18 and scored["auto_reply"] >= 3 and scored["not_bounce"] >= 1
    assert wrong == []
    assert false_alarms == []
