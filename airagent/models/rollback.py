"""Putting one environment back outside any train."""

from __future__ import annotations

from pydantic import BaseModel, Field

from airagent.config import PipelineSettings


class EnvironmentRollbackInput(BaseModel):
    pipeline: PipelineSettings
    environment: str
    to_release: str | None = Field(None, description="default: the release live before the current one")
    by: str | None = None
    reason: str | None = None


class EnvironmentRollbackResult(BaseModel):
    environment: str
    live: str | None
    replaced: str | None
    frozen: str = Field(description="the reason the pipeline was frozen with")


def rollback_id(pipeline: str, environment: str) -> str:
    return f"rollback/{pipeline}/{environment}"
