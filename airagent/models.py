"""The typed models that cross Temporal: one in, one out, for every workflow and activity.

They carry no secrets and no file contents, only names, shas and short summaries,
because everything here lands in workflow history.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from airagent.config import EnvironmentSettings, PipelineSettings


class Kind(StrEnum):
    """What a changed file is to Airflow; decides how much of an environment must move."""

    dags = "dags"
    plugins = "plugins"
    config = "config"
    dependencies = "dependencies"
    image = "image"
    ignored = "ignored"


class RolloutMode(StrEnum):
    dags_only = "dags-only"
    restart = "restart"
    rebuild = "rebuild"

    @classmethod
    def for_kinds(cls, kinds: set[Kind]) -> RolloutMode:
        if kinds & {Kind.dependencies, Kind.image}:
            return cls.rebuild
        if kinds & {Kind.plugins, Kind.config}:
            return cls.restart
        return cls.dags_only


class TrainState(StrEnum):
    running = "running"
    paused = "paused"
    succeeded = "succeeded"
    failed = "failed"
    rolled_back = "rolled_back"
    aborted = "aborted"
    noop = "noop"

    @property
    def finished(self) -> bool:
        return self not in (TrainState.running, TrainState.paused)


class Outcome(StrEnum):
    running = "running"
    ok = "ok"
    failed = "failed"
    skipped = "skipped"
    stopped = "stopped"


# --- controls -------------------------------------------------------------------------


class Control(BaseModel):
    """Input of every signal and update; all optional so a bare `temporal workflow signal` works."""

    by: str | None = None
    reason: str | None = None
    environment: str | None = None


class ControlAck(BaseModel):
    accepted: bool
    message: str


class Event(BaseModel):
    at: datetime
    control: str
    by: str | None = None
    reason: str | None = None
    environment: str | None = None
    accepted: bool
    message: str


# --- diff -----------------------------------------------------------------------------


class Commit(BaseModel):
    sha: str
    author: str
    email: str
    summary: str
    at: datetime


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


class DiffResult(BaseModel):
    target: str
    commits: list[Commit]
    environments: list[EnvironmentChange]

    @property
    def empty(self) -> bool:
        return all(e.mode is None for e in self.environments)

    def for_environment(self, name: str) -> EnvironmentChange:
        return next(e for e in self.environments if e.environment == name)


# --- build ----------------------------------------------------------------------------


class BuildInput(BaseModel):
    pipeline: PipelineSettings
    target: str


class Release(BaseModel):
    """An immutable release: the DAG bundle at one commit plus the runtime that runs it."""

    id: str
    commit: str
    runtime_hash: str
    runtime: str = Field(description="path of the runtime venv on this host")
    bundle: str = Field(description="path of the files at the commit on this host")
    dag_folder: str = Field(description="DAG folder, relative to the bundle")
    plugins_folder: str = Field(description="plugins folder, relative to the bundle")


# --- validate -------------------------------------------------------------------------


class FileReport(BaseModel):
    path: str
    dag_ids: list[str] = []
    error: str | None = None
    parse_seconds: float = 0.0


class ValidationReport(BaseModel):
    files: list[FileReport]
    duplicates: dict[str, list[str]] = Field({}, description="dag_id -> files defining it")

    @property
    def broken(self) -> list[FileReport]:
        return [f for f in self.files if f.error]

    @property
    def ok(self) -> bool:
        return not self.broken and not self.duplicates

    def summary(self) -> str:
        dags = sum(len(f.dag_ids) for f in self.files)
        head = f"{len(self.files)} files, {dags} DAGs"
        if self.ok:
            return f"{head}: all parse"
        lines = [f"{head}: {len(self.broken)} broken, {len(self.duplicates)} duplicate dag_ids"]
        for f in self.broken:
            lines.append(f"{f.path}: {last_line(f.error)}")
        for dag_id, paths in self.duplicates.items():
            lines.append(f"dag_id {dag_id!r} defined in {', '.join(paths)}")
        return "\n".join(lines)


def last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


class ValidateInput(BaseModel):
    release: Release


# --- roll, rollback, soak -------------------------------------------------------------


class RollInput(BaseModel):
    environment: EnvironmentSettings
    release: Release
    mode: RolloutMode


class RollbackInput(BaseModel):
    environment: EnvironmentSettings
    to_release: str | None = Field(description="None puts the environment back to running nothing")


class Marker(BaseModel):
    """What an environment's own record says runs there, and what ran before."""

    live: str | None
    previous: str | None
    rolled: list[str] = Field([], description="every release ever rolled there, oldest first")


class RollResult(BaseModel):
    environment: str
    live: str | None
    previous: str | None
    changed: bool = Field(description="False when the environment was already there (a retried activity)")


class SoakCheckInput(BaseModel):
    environment: EnvironmentSettings
    release: Release


class SoakCheckResult(BaseModel):
    healthy: bool
    detail: str


# --- the train ------------------------------------------------------------------------


class TrainInput(BaseModel):
    pipeline: PipelineSettings
    target: str


class StageRecord(BaseModel):
    name: str
    environment: str | None = None
    started: datetime
    ended: datetime | None = None
    outcome: Outcome = Outcome.running
    detail: str = ""


class EnvironmentStatus(BaseModel):
    name: str
    live: str | None = Field(None, description="release id live now")
    previous: str | None = Field(None, description="release id live before this train")
    live_commit: str | None = None
    mode: RolloutMode | None = None
    state: str = "pending"


class TrainStatus(BaseModel):
    pipeline: str
    target: str
    state: TrainState = TrainState.running
    stage: str | None = None
    environment: str | None = None
    reason: str = ""
    release: str | None = None
    environments: list[EnvironmentStatus] = []
    commits: list[Commit] = []
    kinds: list[Kind] = []
    mode: RolloutMode | None = None
    validation: str | None = None
    stages: list[StageRecord] = []
    events: list[Event] = []
    started: datetime | None = None
    ended: datetime | None = None

    def environment_status(self, name: str) -> EnvironmentStatus:
        return next(e for e in self.environments if e.name == name)


def train_id(pipeline: str, sha: str) -> str:
    return f"train/{pipeline}/{sha[:12]}"


def conductor_id(pipeline: str) -> str:
    return f"pipeline/{pipeline}"


class Announcement(BaseModel):
    """One delivery: which receiver of the pipeline, and the train as it ended."""

    pipeline: PipelineSettings
    receiver: int = Field(description="index into the pipeline's notifications")
    status: TrainStatus
    changed: list[str] = Field([], description="repository paths this train changed")
    broken: list[str] = Field([], description="repository paths validation found broken")


class TrainSummary(BaseModel):
    """One row of `airagent history`, read from visibility rather than from each train."""

    id: str
    pipeline: str
    sha: str
    state: str
    stage: str | None
    started: datetime | None
    ended: datetime | None


# --- the conductor --------------------------------------------------------------------


class PollInput(BaseModel):
    pipeline: PipelineSettings


class PollResult(BaseModel):
    head: str


class Notify(BaseModel):
    """What CI sends after a merge: a hint that the branch moved; the conductor deploys the branch head."""

    sha: str | None = None
    by: str | None = None


class TrainRecord(BaseModel):
    id: str
    sha: str
    state: str = TrainState.running.value
    reason: str = ""
    commits: int = 0
    authors: list[str] = []
    started: datetime
    ended: datetime | None = None


class ConductorState(BaseModel):
    """Everything the conductor knows; carried whole across continue-as-new."""

    paused: bool = False
    frozen: str | None = Field(None, description="the reason, while frozen")
    head: str | None = Field(None, description="newest commit seen on the branch")
    last_deployed: str | None = None
    failed: list[str] = Field([], description="shas whose train did not succeed; never retried on their own")
    running: TrainRecord | None = None
    trains: list[TrainRecord] = Field([], description="the most recent trains, newest last")
    poll_error: str | None = None
    blocked: str | None = Field(None, description="why the queued commit's train cannot start now")
    events: list[Event] = []


class ConductorInput(BaseModel):
    pipeline: PipelineSettings
    state: ConductorState = ConductorState()


class ConductorStatus(BaseModel):
    pipeline: str
    queued: str | None = Field(None, description="the commit the next train will deploy")
    window_open: bool = True
    window: str = ""
    state: ConductorState


# --- rollback outside a train ---------------------------------------------------------


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
