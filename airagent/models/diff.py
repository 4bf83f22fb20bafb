"""The `diff` stage: what each environment must change to reach the target."""

from __future__ import annotations

from pathlib import PurePosixPath

from pydantic import BaseModel, Field, model_validator

from airagent.config import DEFAULT_FILE as SETTINGS_FILE
from airagent.config import PipelineSettings
from airagent.models.common import Commit, Kind, RolloutMode
from airagent.models.held import HeldCommit


class ChangedFile(BaseModel):
    path: str
    kind: Kind
    change: str = Field(description="added, modified, deleted, renamed or type-changed")
    old_path: str | None = None


# Changed files listed by name in a diff result; the rest are counted. History never grows with a repository.
LISTED = 50


class EnvironmentChange(BaseModel):
    """What one environment needs to reach the target; environments may run different commits.

    Built with every changed file, it keeps the first LISTED and counts the rest (`of`).
    """

    environment: str
    live_commit: str | None
    live_release: str | None
    files: list[ChangedFile] = Field([], description=f"the first {LISTED} changed files")
    count: int = Field(0, description="changed files in all")
    kinds: list[Kind] = Field([], description="the kinds of every changed file")
    settings_files: list[str] = Field([], description="changed files named like airagent.yaml, which no train applies")
    mode: RolloutMode | None = Field(None, description="None when the environment already runs the target")

    @model_validator(mode="after")
    def _counted(self) -> EnvironmentChange:
        """A result recorded before files were capped lists them all: count them the same way."""
        if len(self.files) > self.count:
            self.count = len(self.files)
            self.kinds = sorted({f.kind for f in self.files})
            self.settings_files = [f.path for f in self.files if PurePosixPath(f.path).name == SETTINGS_FILE]
        return self

    @classmethod
    def of(cls, files: list[ChangedFile], **fields) -> EnvironmentChange:
        return cls(
            files=files[:LISTED],
            count=len(files),
            kinds=sorted({f.kind for f in files}),
            settings_files=[f.path for f in files if PurePosixPath(f.path).name == SETTINGS_FILE],
            **fields,
        )


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
