"""Handing a message over: to an SMTP server, or to the log when none is set."""

import asyncio
import logging
import ssl
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib
from opentelemetry import trace

from app.core.config import Settings
from app.core.models import utc_now
from app.mail.messages import Letter

logger = logging.getLogger("app.mail")

_tracer = trace.get_tracer("app.mail")

LINK_WITHHELD = "<the link is written to the log only with ENVIRONMENT=development>"


class MailTransport:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @property
    def uses_smtp(self) -> bool:
        return bool(self._settings.smtp_host)

    async def send(self, letter: Letter) -> None:
        """Hands the message to the SMTP server, or writes it to the log.

        Raises whatever SMTP did; the whole exchange is cut off after
        SMTP_TIMEOUT. aiosmtplib is asyncio-native, so a slow or silent
        server costs a waiting coroutine, never a thread or the event loop.
        """
        if not self.uses_smtp:
            self._log(letter)
            return
        settings = self._settings
        message = EmailMessage()
        message["From"] = settings.smtp_from
        message["To"] = letter.to
        message["Subject"] = letter.subject
        message["Message-ID"] = letter.message_id
        message["Date"] = format_datetime(utc_now())
        message.set_content(letter.body)
        # Logs in only with both; aiosmtplib would try with a username alone.
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        login = bool(settings.smtp_username and password)
        # A client span (a no-op with tracing off). A failure is recorded on
        # it by class only: an SMTP server's reply may echo anything back.
        with _tracer.start_as_current_span(
            "SMTP send",
            kind=trace.SpanKind.CLIENT,
            attributes={"server.address": settings.smtp_host, "server.port": settings.smtp_port},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                async with asyncio.timeout(settings.smtp_timeout):
                    await aiosmtplib.send(
                        message,
                        hostname=settings.smtp_host,
                        port=settings.smtp_port,
                        timeout=settings.smtp_timeout,
                        # True: STARTTLS or nothing (no login or mail in clear
                        # text); False: never, for a local relay.
                        start_tls=settings.smtp_starttls,
                        # Made per send: it reads SSL_CERT_FILE and checks the host name.
                        tls_context=ssl.create_default_context()
                        if settings.smtp_starttls
                        else None,
                        username=settings.smtp_username if login else None,
                        password=password if login else None,
                    )
            except Exception as error:
                span.set_status(trace.StatusCode.ERROR, type(error).__name__)
                span.set_attribute("error.type", type(error).__name__)
                raise

    def _log(self, letter: Letter) -> None:
        body = letter.body
        if self._settings.environment != "development":
            # Only a developer's own machine may show a one-time token in the log.
            body = body.replace(letter.link, LINK_WITHHELD)
        logger.info("message for %s: %s\n%s", letter.to, letter.subject, body)
