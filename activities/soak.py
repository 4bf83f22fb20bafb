"""One round of the `soak` stage's probes; the train's timer decides when, so a paused soak's clock stops."""

from __future__ import annotations

from temporalio import activity

from activities.heartbeat import keep_alive
from activities.probes import reading
from activities.roll import environment
from activities.validate import parse_release
from airagent.models import ProbeReading, Release, SoakCheckInput, SoakCheckResult


@activity.defn(name="soak_check")
def soak_check(input: SoakCheckInput) -> SoakCheckResult:
    env = environment(input.environment)
    with keep_alive(f"soak {input.environment.name}"):
        readings = [marker(env.files, input.release.id)]
        if readings[0].ok:
            live = env.files.live()
            readings += env.probe(live, input.baseline) if input.environment.target.airflow else [parses(live)]
    failing = [r for r in readings if not r.ok]
    detail = "; ".join(r.line() for r in failing) if failing else \
        ", ".join(f"{r.probe} ok" for r in readings)
    return SoakCheckResult(healthy=not failing, detail=detail, readings=readings)


def marker(files, expected: str) -> ProbeReading:
    """The environment's own record still says the release is live."""
    linked, live = files.linked(), files.live()
    ok = linked == expected and live is not None and live.id == expected
    return reading("marker", ok, f"`current` → {linked}, manifest → {live and live.id}", f"both {expected}")


def parses(live: Release) -> ProbeReading:
    """Without Airflow components here, the live DAG folder parsing is what can be checked."""
    report = parse_release(live)
    return reading("parse", report.ok, report.summary().splitlines()[0], "every DAG file parses")
