"""Settings (ARCHITECTURE.md "Settings come from the environment and `.env`").

Production refuses a missing, short or sample SECRET_KEY with a message
that names the setting and not the value; DATABASE_URL is normalised to the
async drivers; with no DATABASE_URL the service uses SQLite in DATA_DIR;
outside production a missing SECRET_KEY is generated once into DATA_DIR and
shared; list settings take comma-separated values; `.env.example` lists
every setting.
"""

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings, _load_or_create_local_secret, describe_settings_error
from app.core.security import TokenCodec
from tests.core.conftest import ClientFactory

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
STRONG_KEY = "k" * 48


def _env_example() -> dict[str, str]:
    """The settings `.env.example` assigns, commented-out ones included."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        found = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if found:
            values[found.group(1)] = found.group(2).strip()
    return values


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No setting leaks in from the real environment or a `.env` in the working directory."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    _load_or_create_local_secret.cache_clear()
    yield
    _load_or_create_local_secret.cache_clear()


def _refusal(**values: object) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **values)  # type: ignore[arg-type]
    message = describe_settings_error(caught.value)
    assert "\n" not in message
    return message


def test_production_refuses_a_missing_secret_key(tmp_path: Path) -> None:
    message = _refusal(environment="production", data_dir=tmp_path)
    assert "SECRET_KEY" in message
    assert "must be set" in message
    # No key was generated on the side either.
    assert not (tmp_path / "secret_key").exists()


def test_production_refuses_a_short_secret_key() -> None:
    short = "Sh0rt-but-secret-value-31-bytes"
    assert len(short.encode()) == 31
    message = _refusal(environment="production", secret_key=short)
    assert "SECRET_KEY" in message
    assert "32 bytes" in message
    assert short not in message


def test_production_refuses_the_sample_key_from_env_example() -> None:
    sample = _env_example()["SECRET_KEY"]
    assert len(sample.encode()) >= 32  # refused for being the sample, not for its length
    message = _refusal(environment="production", secret_key=sample)
    assert "SECRET_KEY" in message
    assert "sample" in message
    assert sample not in message


def test_the_refusal_never_contains_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "tiny-Secret!"
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SECRET_KEY", secret)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert secret not in str(caught.value)
    assert secret not in describe_settings_error(caught.value)


def test_production_accepts_a_key_of_32_bytes_counted_in_bytes() -> None:
    assert Settings(_env_file=None, environment="production", secret_key="a" * 32)  # type: ignore[call-arg]
    # 16 two-byte characters are 32 bytes.
    multibyte = "\u00e9" * 16
    settings = Settings(_env_file=None, environment="production", secret_key=multibyte)  # type: ignore[call-arg]
    assert settings.signing_key == multibyte
    _refusal(environment="production", secret_key="\u00e9" * 15 + "a")


def test_the_sample_key_is_accepted_outside_production() -> None:
    sample = _env_example()["SECRET_KEY"]
    for environment in ("development", "test"):
        settings = Settings(_env_file=None, environment=environment, secret_key=sample)  # type: ignore[call-arg]
        assert settings.signing_key == sample


def test_a_copy_of_env_example_is_a_working_development_configuration(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    settings = Settings()  # reads ./.env
    assert settings.environment == "development"
    assert settings.database_url is None
    assert settings.sqlalchemy_url == f"sqlite+aiosqlite:///{Path('.data') / 'app.db'}"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.cors_origins == []


def test_a_copy_of_env_example_is_refused_in_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text())
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "SECRET_KEY" in describe_settings_error(caught.value)


def test_the_environment_wins_over_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("MAX_BODY_BYTES=4096\nLOGIN_MAX_FAILURES=7\n")
    monkeypatch.setenv("MAX_BODY_BYTES", "8192")
    settings = Settings()
    assert settings.max_body_bytes == 8192
    assert settings.login_max_failures == 7


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db.example:5432/shop", "postgresql+asyncpg://u:p@db.example:5432/shop"),
        ("postgresql://u:p@db.example/shop", "postgresql+asyncpg://u:p@db.example/shop"),
        ("postgresql+asyncpg://u@db.example/shop", "postgresql+asyncpg://u@db.example/shop"),
        (
            "postgres://u:p%40ss@db/shop?sslmode=require",
            "postgresql+asyncpg://u:p%40ss@db/shop?sslmode=require",
        ),
        ("sqlite:///x", "sqlite+aiosqlite:///x"),
        ("sqlite:////var/lib/app.db", "sqlite+aiosqlite:////var/lib/app.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_urls_are_normalised_to_async_drivers(given: str, expected: str) -> None:
    settings = Settings(_env_file=None, database_url=given)  # type: ignore[call-arg]
    assert settings.sqlalchemy_url == expected


def test_without_a_database_url_sqlite_lives_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DATABASE_URL", "")  # empty counts as unset
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url is None
    assert settings.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path / 'state' / 'app.db'}"


def test_a_missing_secret_key_is_generated_once_and_shared(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    first = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    second = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    key = first.signing_key
    assert len(key.encode()) >= 32
    assert second.signing_key == key

    key_file = data_dir / "secret_key"
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # Nothing half-written is left behind.
    assert sorted(p.name for p in data_dir.iterdir()) == ["secret_key"]

    # A restart (a fresh process has no cache) reads the same key back.
    _load_or_create_local_secret.cache_clear()
    restarted = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    assert restarted.signing_key == key


def test_separate_data_dirs_get_separate_keys(tmp_path: Path) -> None:
    one = Settings(_env_file=None, data_dir=tmp_path / "one")  # type: ignore[call-arg]
    two = Settings(_env_file=None, data_dir=tmp_path / "two")  # type: ignore[call-arg]
    assert one.signing_key != two.signing_key


def test_a_generated_key_signs_tokens_that_another_instance_accepts(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    issuer = TokenCodec(Settings(_env_file=None, data_dir=data_dir))  # type: ignore[call-arg]
    token = issuer.issue("access", user_id=7, token_version=1).token
    _load_or_create_local_secret.cache_clear()  # as in another worker process
    verifier = TokenCodec(Settings(_env_file=None, data_dir=data_dir))  # type: ignore[call-arg]
    assert verifier.decode(token, "access").user_id == 7


def test_a_given_secret_key_creates_no_key_file(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "state", secret_key=STRONG_KEY)  # type: ignore[call-arg]
    assert settings.signing_key == STRONG_KEY
    assert not (tmp_path / "state").exists()


def test_list_settings_accept_comma_separated_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://shop.example, https://admin.example ,")
    monkeypatch.setenv("PREVIOUS_SECRET_KEYS", "old-key-one,old-key-two")
    monkeypatch.setenv("SECRET_KEY", STRONG_KEY)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.cors_origins == ["https://shop.example", "https://admin.example"]
    assert settings.verification_keys == [STRONG_KEY, "old-key-one", "old-key-two"]


def test_a_single_list_value_needs_no_comma(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://shop.example")
    assert Settings(_env_file=None).cors_origins == ["https://shop.example"]  # type: ignore[call-arg]


def test_a_bad_value_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "lots")
    monkeypatch.setenv("ENVIRONMENT", "staging")
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)  # type: ignore[call-arg]
    message = describe_settings_error(caught.value)
    assert message.startswith("configuration error: ")
    assert "MAX_BODY_BYTES" in message
    assert "ENVIRONMENT" in message
    assert "\n" not in message


def test_log_format_is_json_outside_development() -> None:
    assert Settings(_env_file=None).effective_log_format == "text"  # type: ignore[call-arg]
    for environment in ("test", "production"):
        settings = Settings(_env_file=None, environment=environment, secret_key=STRONG_KEY)  # type: ignore[call-arg]
        assert settings.effective_log_format == "json"
    explicit = Settings(_env_file=None, log_format="text", environment="test")  # type: ignore[call-arg]
    assert explicit.effective_log_format == "text"


def test_env_example_lists_every_setting() -> None:
    listed = set(_env_example())
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - listed == set()


def test_env_example_values_are_valid_settings() -> None:
    values = {
        name.lower(): value
        for name, value in _env_example().items()
        if name.lower() in Settings.model_fields and value != ""
    }
    settings = Settings(_env_file=None, **values)  # type: ignore[arg-type]
    assert settings.environment == "development"


async def test_cors_origins_are_allowed_and_others_are_not(make_client: ClientFactory) -> None:
    client = await make_client(cors_origins=["https://shop.example"])
    preflight = await client.options(
        "/api/v1/products",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type, If-Match",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"

    simple = await client.get("/api/v1/products", headers={"Origin": "https://shop.example"})
    assert simple.headers["access-control-allow-origin"] == "https://shop.example"
    exposed = {
        h.strip().lower() for h in simple.headers["access-control-expose-headers"].split(",")
    }
    assert {"etag", "location", "x-request-id", "retry-after"} <= exposed

    stranger = await client.get("/api/v1/products", headers={"Origin": "https://evil.example"})
    assert stranger.status_code == 200
    assert "access-control-allow-origin" not in stranger.headers


async def test_without_cors_origins_no_cors_headers_are_sent(make_client: ClientFactory) -> None:
    client = await make_client()
    response = await client.get("/api/v1/products", headers={"Origin": "https://shop.example"})
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("environment", "limits"),
    [
        ({}, (40, 0)),  # one worker: the whole server's 40, kept once opened
        ({"WEB_CONCURRENCY": "2"}, (20, 0)),
        ({"WEB_CONCURRENCY": "3"}, (13, 0)),  # 13 each, 39 in all: never above 40
        ({"WEB_CONCURRENCY": "8", "DB_MAX_CONNECTIONS": "10"}, (2, 0)),  # at least 2 each
        ({"WEB_CONCURRENCY": "2", "DB_POOL_SIZE": "5"}, (5, 15)),  # the rest of the share
        ({"WEB_CONCURRENCY": "2", "DB_POOL_SIZE": "5", "DB_MAX_OVERFLOW": "0"}, (5, 0)),
    ],
)
def test_each_worker_pool_is_a_share_of_the_server_connections(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], limits: tuple[int, int]
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Settings().pool_limits == limits
