import asyncio
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


class HealthRead(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessRead(HealthRead):
    schema_revision: str


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
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS), database.engine.connect() as connection:
            current = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    except Exception:  # unreachable, timed out, or not migrated at all: all mean "not ready"
        current = None
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
    return ReadinessRead(schema_revision=current)
