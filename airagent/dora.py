"""The DORA figures of one environment, computed from what Temporal recorded of the trains: pure functions, no I/O.

A train's status (its stage records and commits) says when each environment got its release
live and whether the train took it back; an EnvironmentRollback says when a person took one
back outside any train. `airagent metrics` and the worker's gauges both read them through
`airagent/train_records.py` and compute the figures here, so a test can compute them from
records written by hand.
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from airagent.models import TrainState, TrainStatus

DAY = timedelta(days=1)


class Roll(BaseModel):
    """One environment's deploy within a train."""

    environment: str
    live: datetime = Field(description="the end of its roll stage: the release live there")
    failed: bool = Field(description="the train rolled it back after its roll (soak, a person, an abort)")
    restored: datetime | None = Field(None, description="when the train's rollback there ended")


class Delivery(BaseModel):
    """What DORA reads of one train: its first commit and the deploys it made."""

    train: str
    state: TrainState
    first_commit: datetime | None = Field(None, description="the oldest commit the train carried")
    rolls: list[Roll] = []


class OutsideRollback(BaseModel):
    """An EnvironmentRollback: a person put the environment back outside any train."""

    environment: str
    at: datetime


class Spread(BaseModel):
    median: float | None = None
    p90: float | None = None
    trains: int = Field(0, description="how many deploys the figure rests on")


class Figures(BaseModel):
    environment: str
    since: datetime
    until: datetime
    deployments: int
    deployment_frequency_per_day: float
    lead_time_seconds: Spread
    change_fail_rate: float | None = Field(description="failed deploys ÷ deploys; None without deploys")
    failures: int
    recovery_seconds: Spread
    rework_rate: float | None = Field(description="deploys right after a failed deploy ÷ deploys")
    reworks: int


def delivery(train: str, status: TrainStatus) -> Delivery:
    """A train's deploys from its stage records: a `roll` that ended ok is a deploy; a `rollback` of the same
    environment after it means the train took it back."""
    rolls: list[Roll] = []
    for record in status.stages:
        if record.name == "roll" and record.outcome == "ok" and record.ended and record.environment:
            rolls.append(Roll(environment=record.environment, live=record.ended, failed=False))
        elif record.name == "rollback" and record.environment:
            for roll in rolls:
                if roll.environment == record.environment and not roll.failed:
                    roll.failed = True
                    roll.restored = record.ended if record.outcome == "ok" else None
    first = min((c.at for c in status.commits), default=None)
    return Delivery(train=train, state=status.state, first_commit=first, rolls=rolls)


def environments(deliveries: list[Delivery]) -> list[str]:
    """Every environment deployed to, in the order trains reach them."""
    seen: dict[str, None] = {}
    for d in deliveries:
        for roll in d.rolls:
            seen.setdefault(roll.environment)
    return list(seen)


def figures(
    deliveries: list[Delivery],
    rollbacks: list[OutsideRollback],
    environment: str,
    since: datetime,
    until: datetime,
) -> Figures:
    deploys = sorted(
        ((d, r) for d in deliveries for r in d.rolls if r.environment == environment and since <= r.live <= until),
        key=lambda pair: pair[1].live,
    )
    failed = [r.failed for _, r in deploys]
    restored = [r.restored for _, r in deploys]
    # A rollback outside a train fails the deploy it took back: the newest one live before it.
    for outside in sorted(rollbacks, key=lambda o: o.at):
        if outside.environment != environment or not since <= outside.at <= until:
            continue
        before = [i for i, (_, r) in enumerate(deploys) if r.live <= outside.at]
        if before and not failed[before[-1]]:
            failed[before[-1]], restored[before[-1]] = True, outside.at
    leads = [
        (r.live - d.first_commit).total_seconds()
        for (d, r), bad in zip(deploys, failed, strict=True)
        if not bad and d.first_commit
    ]
    recoveries = []
    for i, (_, r) in enumerate(deploys):
        if not failed[i]:
            continue
        back = restored[i] or next((deploys[j][1].live for j in range(i + 1, len(deploys)) if not failed[j]), None)
        if back is not None:
            recoveries.append((back - r.live).total_seconds())
    reworks = sum(1 for i in range(1, len(deploys)) if failed[i - 1])
    count = len(deploys)
    return Figures(
        environment=environment,
        since=since,
        until=until,
        deployments=count,
        deployment_frequency_per_day=count / ((until - since) / DAY),
        lead_time_seconds=spread(leads),
        change_fail_rate=sum(failed) / count if count else None,
        failures=sum(failed),
        recovery_seconds=spread(recoveries),
        rework_rate=reworks / count if count else None,
        reworks=reworks,
    )


def spread(values: list[float]) -> Spread:
    """The median (the mean of the middle two for an even count) and the p90 by nearest rank."""
    if not values:
        return Spread()
    ordered = sorted(values)
    return Spread(
        median=statistics.median(ordered), p90=ordered[math.ceil(0.9 * len(ordered)) - 1], trains=len(ordered)
    )
