import asyncio
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from app.core.database import Database, get_database
from app.core.problems import DATABASE_RETRY_AFTER_SECONDS, problem_response
from app.core.routing import problem_responses

router = APIRouter(prefix="/health", tags=["health"])

READY_TIMEOUT_SECONDS = 3.0
logger = logging.getLogger("app.health")


class HealthRead(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessRead(HealthRead):
    schema_revision: str
    # DATABASE_READ_URL's state, reported but never failing readiness: reads
    # go to the primary meanwhile. "off" without a read replica.
    read_replica: Literal["ok", "lagging", "down", "off"] = "off"


@router.get(
    "/live",
    summary="The process is serving",
    description="Liveness: answers without touching the database, so a database outage never "
    "gets a healthy process restarted.",
)
async def live() -> HealthRead:
    return HealthRead()


@router.get(
    "/ready",
    summary="The database answers and its schema is at the newest migration",
    description="Readiness: 503 while the database cannot be reached or is not migrated to "
    "what this release needs, so a load balancer sends no traffic here meanwhile.",
    response_model=ReadinessRead,
    responses=problem_responses(503),
)
async def ready(
    request: Request, database: Annotated[Database, Depends(get_database)]
) -> ReadinessRead | JSONResponse:
    expected: str = request.app.state.schema_head
    standby = False
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS), database.engine.connect() as connection:
            current = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            if database.dialect == "postgresql":
                standby = bool(await connection.scalar(text("SELECT pg_is_in_recovery()")))
    except Exception:  # unreachable, timed out, or not migrated at all: all mean "not ready"
        current = None
    if standby:
        # DATABASE_URL names a standby (a replica, or a primary demoted by a
        # failover): every write would fail.
        logger.error("DATABASE_URL points at a standby (read-only) server: not ready")
        return problem_response(
            503,
            "The database is a read-only standby; DATABASE_URL must name the primary.",
            request.url.path,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    if current != expected:
        detail = (
            "The database is unreachable or not migrated."
            if current is None
            else f"The schema is at {current}; this release needs {expected}."
        )
        return problem_response(
            503,
            detail,
            request.url.path,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    replica = database.replica
    return ReadinessRead(
        schema_revision=current, read_replica="off" if replica is None else replica.state
    )
