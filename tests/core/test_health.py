"""Health probes: liveness never needs the database; readiness checks it and its schema."""

import httpx
from sqlalchemy import text

from app.core.database import Database
from tests.support import assert_problem


async def test_live_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_the_schema_revision(client: httpx.AsyncClient, app) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "schema_revision": app.state.schema_head,
        "read_replica": "off",
    }


async def test_ready_is_503_when_the_schema_is_behind(client: httpx.AsyncClient, app) -> None:
    database: Database = app.state.database
    async with database.engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = 'old'"))
    response = await client.get("/health/ready")
    body = assert_problem(response, 503, "old")
    assert response.headers["retry-after"].isdigit()
    assert app.state.schema_head in body["detail"]
