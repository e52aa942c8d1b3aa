"""Path and query parameters shared by routers."""

from typing import Annotated

from fastapi import Path, Query
from pydantic import BaseModel, Field

from app.core.models import MAX_ID

IdPath = Annotated[int, Path(gt=0, le=MAX_ID, description="A positive integer id.")]


class PageQuery(BaseModel):
    limit: int = Field(default=20, ge=1, le=100, description="Items per page, 1 to 100.")
    offset: int = Field(default=0, ge=0, le=MAX_ID, description="Items to skip.")


PageParams = Annotated[PageQuery, Query()]
