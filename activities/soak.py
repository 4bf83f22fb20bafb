"""One round of the `soak` stage's probes; the train's timer decides when, so a paused soak's clock stops."""

from __future__ import annotations

from temporalio import activity

from activities.environment import environment
from activities.heartbeat import keep_alive
from activities.probes import webhook
from airagent.models import SoakCheckInput, SoakCheckResult


@activity.defn(name="soak_check")
def soak_check(input: SoakCheckInput) -> SoakCheckResult:
    env = environment(input.environment)
    with keep_alive(f"soak {input.environment.name}"):
        readings = env.probe(input.release, input.baseline)
        probes = input.environment.probes
        readings += [webhook(w, input.release, probes.timeout.total_seconds()) for w in probes.webhooks]
    failing = [r for r in readings if not r.ok]
    detail = "; ".join(r.line() for r in failing) if failing else ", ".join(f"{r.probe} ok" for r in readings)
    return SoakCheckResult(healthy=not failing, detail=detail, readings=readings)
