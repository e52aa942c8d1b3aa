"""Outgoing messages: written to the log by default, mailed when SMTP is configured."""

import logging
import smtplib
import ssl
from email.message import EmailMessage

import anyio

from app.core.config import Settings

logger = logging.getLogger(__name__)


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def send(self, to: str, subject: str, body: str) -> None:
        """Sends, or logs when no SMTP host is set.

        Never raises: losing a message is not worth failing the caller's work.
        """
        if not self._settings.smtp_host:
            logger.info("message for %s: %s\n%s", to, subject, body)
            return
        message = EmailMessage()
        message["From"] = self._settings.smtp_from
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            await anyio.to_thread.run_sync(self._deliver, message)
        except Exception as error:  # the message is lost, the caller's work is not
            logger.warning("could not send %r to %s: %s", subject, to, type(error).__name__)
        else:
            logger.info("sent %r to %s", subject, to)

    def _deliver(self, message: EmailMessage) -> None:
        settings = self._settings
        with smtplib.SMTP(
            settings.smtp_host or "", settings.smtp_port, timeout=settings.smtp_timeout
        ) as smtp:
            if settings.smtp_starttls:
                # starttls() without a context checks no certificate, so anyone on the
                # path could take the login; this one checks it and the host name.
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username and settings.smtp_password:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            smtp.send_message(message)


async def send_welcome(mailer: Mailer, username: str, email: str) -> None:
    await mailer.send(
        email,
        "Welcome",
        f"Hello {username},\n\nyour account is ready. Sign in with your username or this email.\n",
    )
