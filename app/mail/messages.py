"""The texts of the messages the service sends; plain text, one link each."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Letter:
    """A message ready to send. `link` carries a one-time token: it is never logged
    outside development."""

    to: str
    subject: str
    body: str
    message_id: str
    link: str


def welcome(username: str, link: str, hours: int) -> tuple[str, str]:
    return (
        "Welcome: please confirm your email address",
        f"Hello {username},\n\n"
        "your account is ready. Sign in with your username or this email.\n\n"
        f"To confirm that this address is yours, open this link within {hours} hours:\n\n"
        f"{link}\n\n"
        "If you did not create an account, you can ignore this message.\n",
    )


def verification(username: str, link: str, hours: int) -> tuple[str, str]:
    return (
        "Confirm your email address",
        f"Hello {username},\n\n"
        f"to confirm that this address is yours, open this link within {hours} hours:\n\n"
        f"{link}\n\n"
        "If you did not ask for this, you can ignore this message.\n",
    )


def password_reset(username: str, link: str, minutes: int) -> tuple[str, str]:
    return (
        "Reset your password",
        f"Hello {username},\n\n"
        "someone, hopefully you, asked to reset the password of your account. To choose "
        f"a new one, open this link within {minutes} minutes:\n\n"
        f"{link}\n\n"
        "The link works once. If you did not ask for this, ignore this message: your "
        "password stays as it is.\n",
    )
