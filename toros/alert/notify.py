"""Optional notifications of relayed targets: a webhook (JSON POST) and e-mail. Off by default; a failure is
logged and never stops the relay."""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.request
from email.message import EmailMessage

from toros.alert.settings import Notifications

log = logging.getLogger(__name__)


def notify(settings: Notifications, subject: str, text: str, details: dict) -> None:
    if settings.webhook:
        try:
            request = urllib.request.Request(
                settings.webhook,
                data=json.dumps({"subject": subject, "text": text, **details}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        except OSError as exc:
            log.warning("webhook %s failed: %s", settings.webhook, exc)
    if settings.email_to and settings.smtp_host:
        message = EmailMessage()
        message["Subject"], message["From"], message["To"] = subject, settings.email_from, ", ".join(settings.email_to)
        message.set_content(text)
        try:
            with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("e-mail to %s failed: %s", ", ".join(settings.email_to), exc)
