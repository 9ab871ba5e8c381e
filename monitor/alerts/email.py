"""Alert mail through aiosmtplib."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from monitor.alerts.settings import AlertSmtpConfig
from monitor.alerts.slack import SendOutcome


def build_message(sender: str, to: list[str], subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to alerts
    message.set_content(body)
    return message


async def send_mail(smtp: AlertSmtpConfig, to: list[str], subject: str, body: str) -> SendOutcome:
    message = build_message(smtp.sender, to, subject, body)
    try:
        await aiosmtplib.send(
            message, hostname=smtp.host, port=smtp.port, username=smtp.username,
            password=smtp.resolve_password() if smtp.username else None, timeout=smtp.timeout_s,
            use_tls=smtp.security == "tls", start_tls=True if smtp.security == "starttls" else False,
            validate_certs=smtp.verify_tls)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        permanent = all(500 <= c < 600 for c in codes)
        return SendOutcome(False, permanent=permanent, error=f"recipients refused: {codes}")
    except aiosmtplib.SMTPAuthenticationError as exc:
        return SendOutcome(False, permanent=True, error=f"authentication failed: {exc.code}")
    except aiosmtplib.SMTPResponseException as exc:
        return SendOutcome(False, permanent=500 <= exc.code < 600, error=f"SMTP {exc.code} {exc.message[:200]}")
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return SendOutcome(False, error=f"{type(exc).__name__}: {str(exc)[:200]}")
    return SendOutcome(True)
