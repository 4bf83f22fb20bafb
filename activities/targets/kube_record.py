"""The kubernetes environment's own record, kept in the ConfigMap `airagent-<env>`: the live release,
the one before, a roll in progress, and the snapshots rollback writes back."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from activities.targets.base import Swap
from airagent.models import Baseline, RolloutMode

RECORD_KEY = "record.json"
KEEP_SNAPSHOTS = 5  # a ConfigMap holds 1 MiB; five sets of templates fit with room to spare


class Rollout(BaseModel):
    """What to roll: a release and how much of the environment it has to move."""

    release: str
    commit: str
    mode: RolloutMode
    image: str | None = Field(None, description="full image reference; needed by rebuild")
    config: dict[str, str] | None = Field(
        None, description="the chart ConfigMap's data for this release; None leaves it as it is"
    )


class Snapshot(BaseModel):
    """An environment as it was while `release` was live, taken before a roll moved it."""

    release: str | None = Field(description="None: before airagent's first roll")
    commit: str | None = Field(description="where the DAG ref pointed")
    templates: dict[str, dict] = Field(description="'<plural>/<name>' -> spec.template exactly as read")
    config: dict[str, str] | None
    taken: datetime


class Record(BaseModel):
    live: str | None = None
    live_commit: str | None = None
    previous: str | None = None
    pending: str | None = Field(
        None,
        description="release a roll or rollback is moving to until it is done; '' for a rollback to before airagent",
    )
    snapshots: list[Snapshot] = []
    history: list[Swap] = []
    baseline: Baseline | None = Field(None, description="how Airflow was before the roll in progress or last done")

    def snapshot(self, release: str | None) -> Snapshot | None:
        return next((s for s in reversed(self.snapshots) if s.release == release), None)


class RollReport(BaseModel):
    live: str | None
    previous: str | None
    changed: bool = Field(description="False when the environment was already there (a retried activity)")
    patched: list[str] = Field([], description="objects patched, '<plural>/<name>'")
    rollout: list[str] = Field([], description="the last word on each workload's rollout")
