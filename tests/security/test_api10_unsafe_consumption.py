"""OWASP API10:2023 Unsafe Consumption of APIs, applied to this service.

The service consumes one outside service: an SMTP server, for the messages
of its mail outbox (a welcome with a verification link after registration,
verification and password reset links), and only when `SMTP_HOST` is set
(otherwise the message goes to the log). It calls no other third-party API. The risk is
trusting that server: letting its failure or its answers break
registration, hang a request, flow into logs or responses, or letting a
server that refuses STARTTLS receive the login and the mail in clear text.
The other direction counts too: what the service hands to SMTP must not
let a client inject headers or recipients.

The defences shown here: the mail is sent after the response by the outbox
dispatcher (aiosmtplib, asyncio-native), with one timeout on the whole
exchange, and any failure is caught, logged by its exception type only and
left for a later retry; with `SMTP_STARTTLS` on (the default) nothing past
EHLO is sent unless TLS starts; the recipient is a validated email address
and the subject a constant, so no CR/LF reaches a header.
"""

import asyncio
import datetime
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from app.core.config import Settings
from app.users.models import User
from tests.conftest import make_settings
from tests.security.common import APP_ROOT, SMTP_ONLY, USER_FIELDS, network_use
from tests.support import DatabaseProbe, assert_problem, client_for, login

MARKER = "HOSTILE-SMTP-7e3f"
SMTP_PASSWORD = "smtp-password-never-in-clear"
PASSWORD = "correct horse battery"


@dataclass
class ScriptedSMTP:
    """A TCP server on localhost that answers with a script instead of speaking SMTP properly.

    `greeting` is sent on connect (None: say nothing); then each line the
    client sends gets `replies[verb]`, or a plain 250. Everything received is kept.
    """

    greeting: bytes | None = b"220 smtp.example ESMTP\r\n"
    replies: dict[str, bytes] = field(default_factory=dict)
    close_after_greeting: bool = False
    # Set: STARTTLS is answered 220 and TLS started with this context.
    tls: ssl.SSLContext | None = None
    port: int = 0
    connections: int = 0
    received: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.greeting is not None:
                writer.write(self.greeting)
                await writer.drain()
            if self.close_after_greeting:
                return
            while line := await reader.readline():
                self.received.append(line)
                verb = line.split(b" ")[0].strip().upper().decode("latin-1")
                if verb == "STARTTLS" and self.tls is not None:
                    writer.write(b"220 go ahead\r\n")
                    await writer.drain()
                    await writer.start_tls(self.tls)
                    continue
                if verb == "DATA" and verb not in self.replies:
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    while (data := await reader.readline()) not in (b".\r\n", b""):
                        self.received.append(b"  " + data)  # indented: not a command
                writer.write(self.replies.get(verb, b"250 ok\r\n"))
                await writer.drain()
                if verb == "QUIT":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    @property
    def verbs(self) -> list[str]:
        """The commands received, in order (message lines left out)."""
        return [
            line.split(b" ")[0].strip().upper().decode("latin-1")
            for line in self.received
            if not line.startswith(b"  ")
        ]


@asynccontextmanager
async def serving(script: ScriptedSMTP) -> AsyncIterator[ScriptedSMTP]:
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    script.port = server.sockets[0].getsockname()[1]
    async with server:
        yield script


def smtp_settings(
    database_url: str, tmp_path: Path, script: ScriptedSMTP, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": script.port,
        "smtp_starttls": False,
        "smtp_timeout": 1.0,
    }
    return make_settings(database_url, tmp_path / f"smtp{script.port}", **(values | extra))


# Made afresh for each test: a script keeps what it saw.
SCRIPTS: dict[str, Callable[[], ScriptedSMTP]] = {
    "garbage greeting": lambda: ScriptedSMTP(greeting=b"\x00\xff" + MARKER.encode() + b"\r\n"),
    "closes at once": lambda: ScriptedSMTP(greeting=None, close_after_greeting=True),
    "busy": lambda: ScriptedSMTP(greeting=f"421 {MARKER} go away\r\n".encode()),
    "endless line": lambda: ScriptedSMTP(greeting=b"220-" + MARKER.encode() * 20_000),
    "refuses the recipient": lambda: ScriptedSMTP(replies={"RCPT": f"550 {MARKER}\r\n".encode()}),
    "fails at DATA": lambda: ScriptedSMTP(replies={"DATA": f"451 {MARKER}\r\n".encode()}),
    "silent": lambda: ScriptedSMTP(greeting=None),
    "multi-line nonsense": lambda: ScriptedSMTP(
        replies={"EHLO": f"250-{MARKER}\r\n999 {MARKER}\r\n".encode()}
    ),
}


def test_smtp_is_the_only_outside_service_in_code_and_settings() -> None:
    assert network_use(APP_ROOT) == SMTP_ONLY
    endpoints = {
        name
        for name in Settings.model_fields
        if name.endswith(("_url", "_host", "_uri", "_endpoint")) or "webhook" in name
    }
    # Links written into messages for people to open; the service fetches none of them.
    links = {"public_url", "email_verification_url", "password_reset_url"}
    # The database twice: DATABASE_LISTEN_URL is its direct address, for LISTEN.
    # And its read replica (DATABASE_READ_URL): a copy of the same database.
    databases = {"database_url", "database_listen_url", "database_read_url"}
    assert endpoints == databases | {"smtp_host"} | links


async def test_a_failing_or_hostile_smtp_server_never_fails_registration(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for index, (name, make_script) in enumerate(SCRIPTS.items()):
        script = make_script()
        username = f"carol{index}"
        async with (
            serving(script),
            client_for(smtp_settings(database_url, tmp_path, script)) as (app, client),
        ):
            response = await asyncio.wait_for(
                client.post(
                    "/api/v1/users",
                    json={
                        "username": username,
                        "email": f"{username}@example.com",
                        "password": PASSWORD,
                    },
                ),
                30,  # a guard against a hang, not a timing assertion
            )

            assert response.status_code == 201, (name, response.text)
            assert set(response.json()) == USER_FIELDS, name
            assert MARKER not in response.text, name
            assert (await login(client, username, PASSWORD)).status_code == 200, name
            assert script.connections == 1, name

        count = await DatabaseProbe(app.state.database).scalar(
            select(func.count()).select_from(User)
        )
        assert count == index + 1, name

    # Each message ends in one line: a failed attempt (retried later), or, for
    # the server whose nonsense EHLO is followed by a plain HELO, delivered.
    outcomes = [
        r.getMessage().split(":")[0]
        for r in caplog.records
        if r.name == "app.mail" and ("could not send" in r.getMessage() or "sent" in r.msg)
    ]
    assert len(outcomes) == len(SCRIPTS), outcomes
    failed = [r for r in caplog.records if r.name == "app.mail" and r.levelno == logging.WARNING]
    assert len(failed) >= len(SCRIPTS) - 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert MARKER not in logged  # the server's words are not copied into our logs


@pytest.mark.parametrize(
    "ehlo",
    [
        b"250-smtp.example\r\n250 AUTH PLAIN LOGIN\r\n",  # does not offer STARTTLS
        b"250-smtp.example\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n",  # offers, then fails
    ],
    ids=["not offered", "offered then refused"],
)
async def test_nothing_is_sent_in_clear_when_starttls_does_not_happen(
    database_url: str, tmp_path: Path, ehlo: bytes
) -> None:
    script = ScriptedSMTP(replies={"EHLO": ehlo, "STARTTLS": b"454 TLS not available\r\n"})
    async with serving(script):
        settings = smtp_settings(
            database_url,
            tmp_path,
            script,
            smtp_starttls=True,
            smtp_username="mailer",
            smtp_password=SMTP_PASSWORD,
        )
        async with client_for(settings) as (_, client):
            response = await client.post(
                "/api/v1/users",
                json={"username": "carol", "email": "carol@example.com", "password": PASSWORD},
            )

    assert response.status_code == 201, response.text
    assert script.connections == 1
    assert set(script.verbs) <= {"EHLO", "STARTTLS", "QUIT"}, script.verbs
    received = b"".join(script.received)
    assert b"carol@example.com" not in received
    assert SMTP_PASSWORD.encode() not in received
    assert b"mailer" not in received


async def test_no_header_can_be_injected_into_the_welcome_mail(
    database_url: str, tmp_path: Path
) -> None:
    script = ScriptedSMTP()
    async with serving(script):
        settings = smtp_settings(database_url, tmp_path, script)
        async with client_for(settings) as (app, client):
            for email, full_name in (
                ("carol@example.com\r\nBcc: victim@evil.example", None),
                ("carol@example.com\nBcc: victim@evil.example", None),
                ("carol@example.com, victim@evil.example", None),
                ("carol@example.com", "Carol\r\nBcc: victim@evil.example"),
            ):
                refused = await client.post(
                    "/api/v1/users",
                    json={
                        "username": "carol",
                        "email": email,
                        "password": PASSWORD,
                        "full_name": full_name,
                    },
                )
                assert_problem(refused, 422)
            assert script.connections == 0

            accepted = await client.post(
                "/api/v1/users",
                json={"username": "carol", "email": "carol@example.com", "password": PASSWORD},
            )
            assert accepted.status_code == 201
            count = await DatabaseProbe(app.state.database).scalar(
                select(func.count()).select_from(User)
            )

    assert count == 1
    recipients = [line for line in script.received if line.upper().startswith(b"RCPT")]
    assert [line.upper() for line in recipients] == [b"RCPT TO:<CAROL@EXAMPLE.COM>\r\n"]
    assert b"evil.example" not in b"".join(script.received)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no public authority vouches for: (cert, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp impostor")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def tls_script(directory: Path) -> tuple[ScriptedSMTP, Path]:
    cert_file, key_file = self_signed_certificate(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    script = ScriptedSMTP(
        replies={
            "EHLO": b"250-smtp.example\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n",
            "AUTH": b"235 welcome\r\n",
        },
        tls=context,
    )
    return script, cert_file


async def register_with_tls_smtp(
    database_url: str, tmp_path: Path, script: ScriptedSMTP
) -> httpx.Response:
    async with serving(script):
        settings = smtp_settings(
            database_url,
            tmp_path,
            script,
            smtp_starttls=True,
            smtp_username="mailer",
            smtp_password=SMTP_PASSWORD,
        )
        async with client_for(settings) as (_, client):
            return await client.post(
                "/api/v1/users",
                json={"username": "carol", "email": "carol@example.com", "password": PASSWORD},
            )


async def test_an_smtp_server_with_an_unverifiable_certificate_gets_no_login(
    database_url: str, tmp_path: Path
) -> None:
    """An impostor on the path can complete STARTTLS with any certificate it likes; the
    client must check it, or the SMTP login and the mail go to the impostor."""
    script, _ = tls_script(tmp_path)

    response = await register_with_tls_smtp(database_url, tmp_path, script)

    assert response.status_code == 201, response.text
    assert "STARTTLS" in script.verbs
    assert "AUTH" not in script.verbs, "the SMTP login was sent to an unverified server"
    assert "MAIL" not in script.verbs


async def test_an_smtp_server_with_a_trusted_certificate_gets_the_mail(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private CA is trusted the usual OpenSSL way, through SSL_CERT_FILE."""
    script, cert_file = tls_script(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))

    response = await register_with_tls_smtp(database_url, tmp_path, script)

    assert response.status_code == 201, response.text
    assert script.verbs[:2] == ["EHLO", "STARTTLS"]
    assert {"AUTH", "MAIL", "RCPT", "DATA"} <= set(script.verbs)
