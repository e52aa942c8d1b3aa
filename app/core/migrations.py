"""Alembic, driven from Python: the schema revision this code needs, and upgrading to it."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    if database_url is not None:
        # Passed as an attribute, not an option: a URL may hold "%", which
        # ini interpolation would misread.
        config.attributes["database_url"] = database_url
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the migrations folder has no revisions")
    return head


def upgrade(database_url: str, *, first_admin_email: str | None = None) -> None:
    """Upgrades to the newest revision.

    `first_admin_email` names the first admin for the revision that adds
    `email_verified`: existing users become unverified, that admin verified.
    """
    config = alembic_config(database_url)
    config.attributes["configure_logger"] = False  # keep the service's own log format
    config.attributes["first_admin_email"] = first_admin_email
    command.upgrade(config, "head")
