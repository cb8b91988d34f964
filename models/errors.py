"""The error envelope every API error uses, as a schema for OpenAPI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """What went wrong, for machines (``type``) and humans (``message``)."""

    type: str = Field(examples=["validation_error"])
    message: str = Field(examples=["the request does not match the schema"])
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    """The envelope of every error response."""

    error: ErrorBody
    request_id: str | None = Field(default=None, description="Echoes the X-Request-ID header.")
