"""What the `roll` and `soak` stages ask of an environment, and what it answers."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from airagent.config import EnvironmentSettings, PipelineSettings
from airagent.models.analysis import MetricState, Phase
from airagent.models.build import Release
from airagent.models.common import RolloutMode


class Expected(BaseModel):
    """What a roll expects to find live: the release its diff saw (None: nothing, a first deploy)."""

    live: str | None


class RollInput(BaseModel):
    environment: EnvironmentSettings
    release: Release
    mode: RolloutMode
    dags: dict[str, list[str]] = Field(
        {},
        description="repository path -> dag_ids validation found there, as trains sent them before `report`",
    )
    report: str | None = Field(
        None, description="the digest of the release's validation report, whose files' DAGs a roll waits for"
    )
    pipeline: PipelineSettings | None = Field(
        None, description="whose repository a kubernetes environment's DAG ref is moved in"
    )
    replaces: Expected | None = Field(
        None,
        description="what the train's diff saw live; the target refuses to roll "
        "over anything else; None only in inputs recorded before "
        "this check existed",
    )


class RollbackInput(BaseModel):
    environment: EnvironmentSettings
    to_release: str | None = Field(description="None puts the environment back to running nothing")
    pipeline: PipelineSettings | None = Field(None, description="as in RollInput")


class Marker(BaseModel):
    """What an environment's own record says runs there, and what ran before."""

    live: str | None
    previous: str | None
    rolled: list[str] = Field([], description="every release ever rolled there, oldest first")
    live_commit: str | None = None


class Baseline(BaseModel):
    """How the environment was just before a roll: what soak compares against."""

    at: datetime
    import_errors: list[str] = Field([], description="files with import errors before the roll")
    failed: int = Field(0, description="task instances failed in the window before the roll")
    finished: int = Field(0, description="task instances finished (success or failed) in that window")
    restarts: dict[str, int] = Field({}, description="kubernetes: container restarts per pod before the roll")


class ProbeReading(BaseModel):
    probe: str
    ok: bool
    reading: str = Field(description="what the probe saw")
    threshold: str = Field(description="what it was held to")
    at: datetime
    dag_ids: list[str] = Field([], description="the DAGs a failing reading is about, to trace it to commits")
    error: bool = Field(False, description="the probe could not read (a timeout, a refusal): not a verdict")

    def line(self) -> str:
        return f"{self.probe}: {self.reading} ({'ok' if self.ok else 'FAILED'}; threshold: {self.threshold})"


class RollResult(BaseModel):
    environment: str
    live: str | None
    previous: str | None
    changed: bool = Field(description="False when the environment was already there (a retried activity)")
    detail: str = Field("", description="what the roll did: drain, restarts, confirmation")
    baseline: Baseline | None = None
    warnings: list[str] = Field([], description="pre-flight warnings read before the roll")


class SoakCheckInput(BaseModel):
    environment: EnvironmentSettings
    release: Release
    baseline: Baseline | None = None
    metrics: list[MetricState] | None = Field(
        None, description="each metric so far; None: a train from before analysis, judged by its readings alone"
    )
    final: bool = Field(False, description="the soak's last round: a metric still running gets its verdict")
    sandbox: bool = Field(True, description="the pipeline's `sandbox`: whether `job` metrics run in it")


class SmokeInput(BaseModel):
    environment: EnvironmentSettings
    release: Release
    train: str
    since: datetime = Field(description="the roll: DAGs with a version made after it are the changed ones")


class SoakCheckResult(BaseModel):
    healthy: bool
    detail: str
    readings: list[ProbeReading] = []
    metrics: list[MetricState] = []
    verdict: Phase | None = Field(None, description="the analysis' verdict; None for a train from before it")
