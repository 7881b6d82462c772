"""Responses serialised once, by pydantic-core, for models the endpoint already built valid.

An endpoint that returns one declares ``response_model=…`` for its OpenAPI schema; FastAPI then
passes the response through instead of validating the model a second time (same bytes).
"""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel


def serialised(model: BaseModel, status_code: int = 200) -> Response:
    return Response(
        model.__pydantic_serializer__.to_json(model),
        status_code=status_code,
        media_type="application/json",
    )
