"""Held back: a commit whose changes a release leaves out, and what `hold_back` is asked and answers."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from airagent.config import PipelineSettings
from airagent.models.build import Release


class HeldCommit(BaseModel):
    """A commit whose changes a release leaves out, and why."""

    sha: str
    author: str
    summary: str
    teams: list[str] = []
    paths: list[str] = Field([], description="what it changed; the release keeps these as the environment has them")
    reason: str = Field(description="the failure traced to it, or the held commit whose paths it shares")
    since: datetime | None = None
    regression: bool = Field(
        False,
        description="held for a soak regression: until a later commit changes its "
        "paths, as validation cannot tell it is fixed",
    )
    depends: list[str] = Field(
        [],
        description="the failing files it changed and the modules they import: a later "
        "commit changing none of them cannot have fixed it; empty for a commit "
        "held only for sharing a path",
    )


class SoakFailed(BaseModel):
    """The DAGs a soak found worse, why, and the report that says which files define them."""

    environment: str
    dag_ids: list[str]
    release: Release
    report: str = Field(description="the digest of the release's validation report")
    why: str = Field("", description="the failed metrics' verdicts; empty for a train from before soak analysis")


class HoldInput(BaseModel):
    pipeline: PipelineSettings
    target: str = Field(description="the head the train was asked to deploy")
    commits: list[str] = Field(description="the train's commits, newest first, as its diff found them")
    live_commit: str | None = Field(None, description="what the first environment runs: held paths stay as there")
    bundle: str = Field(description="the failed release's files, to trace what its broken DAG files import")
    failures: dict[str, str] = Field(description="path from the repository root -> why it failed")
    held: list[HeldCommit] = Field(
        [],
        description="commits earlier trains held back: presumed held again unless a "
        "later commit of the train could have fixed them",
    )
    soak: bool = Field(False, description="the failures are a soak regression: trace them, make no release")
    soak_failed: SoakFailed | None = Field(None, description="a soak regression, by DAG: the activity finds the files")


class HoldResult(BaseModel):
    commit: str | None = Field(
        None,
        description="the release commit without the held changes; None: the failures trace to no commit of the train",
    )
    held: list[HeldCommit] = []


def soak_reason(dag_ids: list[str], environment: str, why: str) -> str:
    """A soak regression's hold reason: which DAGs, where, and the verdict that blamed them."""
    if why:
        return f"{', '.join(dag_ids)} judged worse during the soak of {environment}: {why}"
    return f"tasks of {', '.join(dag_ids)} failed during the soak of {environment}"
