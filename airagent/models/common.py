"""The words every stage shares: kinds of change, rollout modes, outcomes, commits, and the controls people send."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel


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


class TrainControl(StrEnum):
    """What a person may ask of a running train: each is a signal and an update of that name."""

    pause = "pause"
    resume = "resume"
    abort = "abort"
    rollback = "rollback"
    approve = "approve"


class PipelineControl(StrEnum):
    """What a person may ask of a pipeline's conductor: each is a signal and an update of that name."""

    pause = "pause"
    resume = "resume"
    freeze = "freeze"
    unfreeze = "unfreeze"


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


class Commit(BaseModel):
    sha: str
    author: str
    email: str
    summary: str
    at: datetime
