"""The `diff` stage: what each environment must change to reach the target."""

from __future__ import annotations

from pydantic import BaseModel, Field

from airagent.config import PipelineSettings
from airagent.models.common import Commit, Kind, RolloutMode
from airagent.models.held import HeldCommit


class ChangedFile(BaseModel):
    path: str
    kind: Kind
    change: str = Field(description="added, modified, deleted, renamed or type-changed")
    old_path: str | None = None


class EnvironmentChange(BaseModel):
    """What one environment needs to reach the target; environments may run different commits."""

    environment: str
    live_commit: str | None
    live_release: str | None
    files: list[ChangedFile] = []
    mode: RolloutMode | None = Field(None, description="None when the environment already runs the target")

    @property
    def kinds(self) -> set[Kind]:
        return {f.kind for f in self.files}


class DiffInput(BaseModel):
    pipeline: PipelineSettings
    target: str
    held: list[HeldCommit] = Field([], description="commits earlier trains held back, to presume held again")


class DiffResult(BaseModel):
    target: str = Field(description="the commit the environments get")
    commits: list[Commit] = Field(description="the train's commits, newest first")
    environments: list[EnvironmentChange]
    head: str | None = Field(
        None,
        description="when earlier holds stand: the commit asked for, which `target` is airagent's release commit of",
    )
    held: list[HeldCommit] = Field([], description="the earlier holds that stand, left out of `target`")

    @property
    def empty(self) -> bool:
        return all(e.mode is None for e in self.environments)

    def for_environment(self, name: str) -> EnvironmentChange:
        return next(e for e in self.environments if e.environment == name)
