"""The `build` stage: the release, the immutable thing one commit becomes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from airagent.config import PipelineSettings


class BuildInput(BaseModel):
    pipeline: PipelineSettings
    target: str
    image: str | None = Field(None, description="the runtime image CI built, for the `external` image builder")


class Release(BaseModel):
    """An immutable release: the DAG bundle at one commit plus the runtime that runs it."""

    id: str
    commit: str
    runtime_hash: str
    runtime: str = Field(description="path of the runtime venv on this host")
    bundle: str = Field(description="path of the files at the commit on this host")
    dag_folder: str = Field(description="DAG folder, relative to the bundle")
    plugins_folder: str = Field(description="plugins folder, relative to the bundle")
    image: str | None = Field(
        None, description="runtime image, `<repository>:<runtime hash>`, for kubernetes environments"
    )
