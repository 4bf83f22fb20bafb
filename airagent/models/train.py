"""The train: its input, its status as queries and the Web UI show it, and how it is announced."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError

from airagent.config import PipelineSettings
from airagent.models.analysis import MetricState, Phase
from airagent.models.common import Commit, Event, Kind, Outcome, RolloutMode, TrainState
from airagent.models.diff import DiffResult
from airagent.models.environment import ProbeReading
from airagent.models.held import HeldCommit


class BisectStep(BaseModel):
    """A train of a bisection: it rolls one environment only, to learn whether its commit soaks healthy."""

    environment: str
    step: int
    steps: int = Field(description="about log2 of the suspects")
    why: str = Field(description="the untraced soak failure being narrowed down")

    def line(self) -> str:
        return f"bisection step {self.step} of ~{self.steps} on {self.environment}: {self.why}"


class TrainInput(BaseModel):
    pipeline: PipelineSettings
    target: str
    image: str | None = Field(None, description="the runtime image CI built for this commit (`external` builder)")
    held: list[HeldCommit] = Field([], description="commits earlier trains held back (the conductor's held)")
    bisect: BisectStep | None = None


class StageRecord(BaseModel):
    name: str
    environment: str | None = None
    started: datetime
    ended: datetime | None = None
    outcome: Outcome = Outcome.running
    detail: str = ""


READINGS_KEPT = 10


class EnvironmentStatus(BaseModel):
    name: str
    live: str | None = Field(None, description="release id live now")
    previous: str | None = Field(None, description="release id live before this train")
    live_commit: str | None = None
    mode: RolloutMode | None = None
    state: str = "pending"
    probes: dict[str, list[ProbeReading]] = Field({}, description="each probe's latest readings, newest last")
    warnings: list[str] = Field([], description="pre-flight: what a roll here could drop, and the fix")
    analysis: list[MetricState] = Field([], description="soak's metrics: readings, what each is held to, verdicts")

    def blamed_dags(self) -> set[str]:
        """The DAGs a failed soak names: those of failed metrics' newest failed measurements, or, for a train from
        before analysis, of the failing task-failure-rate reading."""
        if self.analysis:
            failed = [s for s in self.analysis if s.verdict == Phase.failed]
            return {d for s in failed for m in s.last[-1:] for d in m.dag_ids}
        return {d for r in self.probes.get("task_failure_rate", [])[-1:] if not r.ok for d in r.dag_ids}

    def blame(self) -> str:
        """Why the soak blamed its DAGs: each failed metric's verdict, readings and limit."""
        return "; ".join(s.line() for s in self.analysis if s.verdict == Phase.failed)

    def keep(self, readings: list[ProbeReading]) -> None:
        """The latest readings of each probe: enough to see a trend, never a history that grows with the soak."""
        for reading in readings:
            self.probes[reading.probe] = [*self.probes.get(reading.probe, []), reading][-READINGS_KEPT:]


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
    held: list[HeldCommit] = Field([], description="commits whose changes the release leaves out, and why")
    release_commit: str | None = Field(
        None,
        description="what the release is made of when commits are held: airagent's commit of the target without them",
    )
    soak_failed: str | None = Field(None, description="the environment whose soak failed and was rolled back")
    bisect: BisectStep | None = None
    notes: list[str] = Field([], description="what a person should know that failed nothing")
    stages: list[StageRecord] = []
    events: list[Event] = []
    started: datetime | None = None
    ended: datetime | None = None

    def environment_status(self, name: str) -> EnvironmentStatus:
        return next(e for e in self.environments if e.name == name)

    def saw(self, change: DiffResult) -> None:
        """What `diff` found: the commit deployed and its commits (with holds, the release commit of the head
        without them), the kinds of change, the rollout mode, and what each environment runs now."""
        if change.held:  # earlier holds stand: the target is the release commit of the head without them
            self.held, self.commits = change.held, change.commits
            self.target = change.head or self.target
        if self.held:
            self.release_commit = change.target
        else:  # what the train was asked for
            self.target, self.commits = change.target, change.commits
        self.kinds = sorted({k for e in change.environments for k in e.kinds})
        modes = [e.mode for e in change.environments if e.mode]
        self.mode = max(modes, key=list(RolloutMode).index) if modes else None
        for e in change.environments:
            env = self.environment_status(e.environment)
            env.live, env.previous, env.live_commit, env.mode = e.live_release, e.live_release, e.live_commit, e.mode


# A train that did not succeed fails as a workflow execution with this error, its status as the details:
# red in Temporal's list, counted as a failure, and still read as a status by everyone.
TRAIN_ENDED = "TrainEnded"


def ended_status(failure: BaseException | None) -> TrainStatus | None:
    """The status a train that failed as a workflow execution ended with; None for any other failure."""
    if isinstance(failure, ApplicationError) and failure.type == TRAIN_ENDED and failure.details:
        return TrainStatus.model_validate(failure.details[0])
    return None


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
