"""One check of the `soak` stage; the train's timer decides when, so a paused soak's clock stops."""

from __future__ import annotations

from temporalio import activity

from activities.targets.local import LocalEnvironment
from activities.validate import parse_release
from airagent.models import SoakCheckInput, SoakCheckResult


@activity.defn(name="soak_check")
def soak_check(input: SoakCheckInput) -> SoakCheckResult:
    env = LocalEnvironment(input.environment.target.path)
    expected = input.release.id
    if env.linked() != expected:
        return SoakCheckResult(healthy=False, detail=f"`current` points at {env.linked()}, expected {expected}")
    live = env.live()
    if live is None or live.id != expected:
        return SoakCheckResult(healthy=False, detail=f"manifest says {live and live.id} is live, expected {expected}")
    report = parse_release(live)
    if not report.ok:
        return SoakCheckResult(healthy=False, detail=f"live DAG folder no longer parses: {report.summary()}")
    return SoakCheckResult(healthy=True, detail=f"{expected} live; {report.summary()}")
