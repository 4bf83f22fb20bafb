"""What soak analysis reads and decides: samples of a changed DAG, one measurement of a metric, and verdicts.

A provider turns one reading into a `Measurement` (never raising: an error is a measurement too); a judge
turns a metric's measurements into a `Verdict`. Everything here lands in history, so every list is bounded
by the caller (the newest readings per metric, the first task instances per DAG).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class Phase(StrEnum):
    """One measurement's result, and a metric's verdict (which may also be `running`)."""

    running = "running"
    successful = "successful"
    failed = "failed"
    error = "error"
    inconclusive = "inconclusive"


class Measurement(BaseModel):
    metric: str
    phase: Phase
    value: str = Field("", description="what the provider read, short: a number, a word, a summary")
    detail: str = Field("", description="why this phase: the condition it met, the error, the statistic")
    at: datetime
    dag_ids: list[str] = Field([], description="the DAGs a failed measurement is about, to trace it to commits")


class TaskSample(BaseModel):
    """One finished task instance of a DAG, as the judge needs it."""

    task_id: str
    state: str = Field(description="success or failed")
    duration: float | None = Field(None, description="seconds, when Airflow recorded one")


class DagSamples(BaseModel):
    """A DAG's finished task instances on its new version (since the roll) and on its previous ones (before)."""

    dag_id: str
    new_version: int | None = Field(None, description="the version number the roll made; None: not parsed yet")
    new: list[TaskSample] = []
    previous: list[TaskSample] = []


class DagVerdict(BaseModel):
    """The changed-DAG judge's verdict on one DAG, with the statistic, both samples and the threshold."""

    dag_id: str
    phase: Phase = Field(description="successful, failed or inconclusive")
    detail: str = Field(description="e.g. 'failure rate 6/6 vs 1/20, Fisher exact p=0.0001 < 0.05'")


# The newest measurements a metric keeps in the status: enough to show a trend, bounded in history.
KEEP_MEASUREMENTS = 5


class MetricState(BaseModel):
    """One metric of one soak, as far as it has got: counts, the newest measurements, and its verdict."""

    metric: str
    held_to: str = Field("", description="its condition and limits, in words")
    verdict: Phase = Phase.running
    measurements: int = 0
    failures: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    inconclusives: int = 0
    last: list[Measurement] = Field([], description=f"the newest {KEEP_MEASUREMENTS}")

    def line(self) -> str:
        newest = self.last[-1] if self.last else None
        seen = (
            f"{newest.value}" + (f" ({newest.detail})" if newest and newest.detail else "") if newest else "no reading"
        )
        counts = (
            f"{self.failures} failed, {self.errors} errors, {self.inconclusives} inconclusive of {self.measurements}"
        )
        return f"{self.metric}: {self.verdict} — {seen}; {counts}; {self.held_to}"
