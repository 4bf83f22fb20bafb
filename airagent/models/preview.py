"""A preview: a short-lived Airflow that follows one branch, for its authors to try their change in.

Only paths, ports and shas cross history: the preview's login stays in its file, which
`login_file` names.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from airagent.config import EnvironmentSettings, PipelineSettings
from airagent.markdown import code, text
from airagent.models.build import Release


class PreviewState(StrEnum):
    starting = "starting"  # building the first release, or starting Airflow on it
    serving = "serving"  # Airflow runs the branch head (or the last head that built)
    broken = "broken"  # nothing served: no head of the branch has built and started yet
    ended = "ended"  # torn down: nothing of it is left


class PreviewInput(BaseModel):
    pipeline: PipelineSettings = Field(description="the pipeline the preview's settings and runtime come from")
    branch: str
    ttl: timedelta
    by: str | None = None
    status: PreviewStatus | None = Field(None, description="the state carried over a continue-as-new")
    environment: EnvironmentSettings | None = Field(None, description="its environment, once made")
    diverged: bool = Field(False, description="the branch had commits the pipeline's branch lacked: merged can end it")


class PreviewStatus(BaseModel):
    """What `preview list` prints and the `status` query answers."""

    pipeline: str
    branch: str
    state: PreviewState = PreviewState.starting
    commit: str | None = Field(None, description="the commit Airflow serves")
    release: str | None = None
    head: str | None = Field(None, description="the newest commit of the branch seen")
    url: str | None = Field(None, description="the preview's Airflow, as the worker's host reaches it")
    login_file: str | None = Field(None, description="file holding `username:password`, readable by the worker's user")
    reach: str | None = Field(None, description="how a person gets to `url` when it is not reachable as it is")
    expires: datetime | None = None
    event: str | None = Field(None, description="the last thing that happened to it")
    error: str | None = Field(None, description="why the branch head is not served, while it is not")
    ended_because: str | None = None

    def details(self) -> str:
        """The Web UI's current details: where it is, how to log in, until when."""
        commit = f"`{self.commit[:12]}`" if self.commit else "nothing yet"
        lines = [
            f"**{self.state.value}** · branch {code(self.branch)} · serving {commit}",
            "",
            f"Airflow {self.url or '-'} · login in {code(self.login_file or '-')} · expires {_when(self.expires)}",
        ]
        if self.reach:
            lines += ["", f"reach it with {code(self.reach)}"]
        if self.head and self.head != self.commit:
            lines += ["", f"branch head `{self.head[:12]}`"]
        if self.event:
            lines += ["", f"last: {text(self.event)}"]
        if self.error:
            lines += ["", f"> {text(self.error)}"]
        if self.ended_because:
            lines += ["", f"ended: {text(self.ended_because)}"]
        return "\n".join(lines)


class PreviewPlace(BaseModel):
    pipeline: PipelineSettings
    branch: str


class PreviewStart(BaseModel):
    """The first start of a preview's Airflow: its files on `release`, then every component."""

    environment: EnvironmentSettings
    pipeline: PipelineSettings
    release: Release
    report: str | None = Field(None, description="the validation report's digest: the DAGs to wait for")
    source: EnvironmentSettings | None = Field(
        None, description="kubernetes: the environment whose namespace the preview's is copied from"
    )


class PreviewRef(BaseModel):
    """A kubernetes preview's DAG ref, which outlives its namespace unless dropped."""

    environment: EnvironmentSettings
    pipeline: PipelineSettings = Field(description="the repository the ref is a branch of")


class BranchCheck(BaseModel):
    pipeline: PipelineSettings = Field(description="the pipeline, whose own branch is the one merged into")
    branch: str
    head: str | None = Field(None, description="the preview branch's head, when the poll read one")


class BranchState(BaseModel):
    exists: bool
    merged: bool = Field(description="the branch head is in the pipeline's branch")


class Extend(BaseModel):
    ttl: timedelta
    by: str | None = None


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def preview_id(pipeline: str, branch: str) -> str:
    return f"preview/{pipeline}/{branch}"


def slug(branch: str) -> str:
    """A folder name for a branch: readable, and unique, as `a/b` and `a-b` must not share a folder."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", branch).strip("-.")[:40] or "branch"
    return f"{readable}-{hashlib.sha256(branch.encode()).hexdigest()[:8]}"


# A DNS-1123 label, as a namespace name must be.
NAMESPACE_MAX = 63


def namespace(prefix: str, pipeline: str, branch: str) -> str:
    """A preview's namespace: readable from the pipeline and branch, cut to fit 63 characters, and unique by a hash of
    both, as two branches may differ only past the cut or only in characters a namespace cannot hold."""
    digest = hashlib.sha256(f"{pipeline}\0{branch}".encode()).hexdigest()[:8]
    readable = re.sub(r"[^a-z0-9]+", "-", f"{pipeline}-{branch}".lower()).strip("-")
    room = NAMESPACE_MAX - len(prefix) - len(digest) - 1
    readable = readable[:room].strip("-")
    return f"{prefix}{readable}-{digest}" if readable else f"{prefix}{digest}"


PreviewInput.model_rebuild()
