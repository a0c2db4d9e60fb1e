"""Notifications to people: a webhook (JSON POST) and e-mail, for relayed targets (the alert daemon) and alerts
that wait for an operator's hold (the telescope). Off by default; a failure is logged and never stops the work."""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.request
from email.message import EmailMessage

from pydantic import Field

from toros.runtime.config import Section

log = logging.getLogger(__name__)


class Notifications(Section):
    """Where notifications go (off by default; failures never stop the work)."""

    webhook: str | None = None
    email_to: tuple[str, ...] = ()
    email_from: str = "toros@localhost"
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)

    @property
    def enabled(self) -> bool:
        return bool(self.webhook or (self.email_to and self.smtp_host))


def notify(settings: Notifications, subject: str, text: str, details: dict[str, object]) -> None:
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
