"""One round of the `soak` stage's analysis; the train's timer decides when, so a paused soak's clock stops.

Each round reads the metrics that are due, advances each metric's state by its
measurement and returns the states with the analysis' verdict: the judging happens here,
on what the round read, and the train only acts on the verdict history records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from fnmatch import fnmatch

import httpx
from temporalio import activity

from activities.analysis import airflow, judge, outside, prometheus
from activities.analysis.airflow_samples import smoke
from activities.environment import environment
from activities.heartbeat import keep_alive
from activities.probes import webhook
from airagent.config.analysis import AirflowMetric, JobMetric, Metric, PrometheusMetric, WebhookMetric
from airagent.models import ProbeReading, SmokeInput, SoakCheckInput, SoakCheckResult
from airagent.models.analysis import Measurement, Phase


@activity.defn(name="soak_smoke")
def soak_smoke(input: SmokeInput) -> dict[str, str]:
    """One run of each DAG Airflow re-serialized since the roll (those matching `smoke_dags` and carrying one of
    `smoke_tags`), so the soak has runs to judge instead of waiting for their schedules; each DAG's run id, or why
    it could not start."""
    settings = input.environment
    api = environment(settings).airflow_api()
    if api is None:
        return {}
    with keep_alive(f"smoke {settings.name}"), api:
        dags = [d for d in api.changed_since(input.since) if fnmatch(d, settings.smoke_dags or "*")]
        if settings.smoke_tags:
            tagged = api.tagged(settings.smoke_tags)
            dags = [d for d in dags if d in tagged]
        return smoke(api, dags[: airflow.MAX_DAGS], input.train, input.release.id)


@activity.defn(name="soak_check")
def soak_check(input: SoakCheckInput) -> SoakCheckResult:
    env = environment(input.environment)
    with keep_alive(f"soak {input.environment.name}"):
        readings = env.probe(input.release, input.baseline)
        if input.metrics is None:
            return _by_readings(input, readings)
        return _analysed(input, env, readings)


def _by_readings(input: SoakCheckInput, readings: list[ProbeReading]) -> SoakCheckResult:
    """A train from before analysis: any failing reading rolls back, as it did then."""
    probes = input.environment.probes
    readings += [webhook(w, input.release, probes.timeout.total_seconds()) for w in probes.webhooks]
    failing = [r for r in readings if not r.ok]
    detail = "; ".join(r.line() for r in failing) if failing else ", ".join(f"{r.probe} ok" for r in readings)
    return SoakCheckResult(healthy=not failing, detail=detail, readings=readings)


def _analysed(input: SoakCheckInput, env, readings: list[ProbeReading]) -> SoakCheckResult:
    analysis = input.environment.metrics()
    known = {s.metric: s for s in input.metrics or []}
    now, interval = datetime.now(UTC), input.environment.probe_interval
    since = input.baseline.at if input.baseline else now
    states = []
    for metric in analysis.metrics:
        state = known.get(metric.name) or judge.start(metric)
        if judge.due(metric, state, now, interval):
            state = judge.advance(metric, state, _measure(metric, input, env, readings, since))
        states.append(judge.conclude(state) if input.final else state)
    moved = [r for r in readings if r.probe not in airflow.CLAIMED and not r.ok]
    verdict = Phase.failed if moved else judge.overall(analysis, states)
    detail = "; ".join(r.line() for r in moved) or judge.summary(states)
    return SoakCheckResult(
        healthy=verdict != Phase.failed, detail=detail, readings=readings, metrics=states, verdict=verdict
    )


def _measure(metric: Metric, input: SoakCheckInput, env, readings: list[ProbeReading], since: datetime) -> Measurement:
    if isinstance(metric, WebhookMetric):
        return outside.webhook(metric, input.release)
    if isinstance(metric, JobMetric):
        return outside.job(metric, input.release, input.sandbox)
    if isinstance(metric, PrometheusMetric):
        return _prometheus(metric, input, env, since)
    assert isinstance(metric, AirflowMetric)
    if metric.measure != "changed_dags":
        return airflow.from_readings(metric, readings)
    api = env.airflow_api()
    if api is None:
        return airflow.changed(metric, None, [], since)
    with api:  # the DAGs Airflow re-serialized since the roll: their files, or modules they import, changed
        return airflow.changed(metric, api, api.changed_since(since), since)


def _prometheus(metric: PrometheusMetric, input: SoakCheckInput, env, since: datetime) -> Measurement:
    soak = prometheus.Soak(input.environment.name, input.release.id, since)
    if not prometheus.per_dag(metric):
        return prometheus.measure(metric, soak)
    api = env.airflow_api()
    if api is None:
        return prometheus.measure(metric, soak, None)
    try:
        with api:
            changed = api.changed_since(since)
    except httpx.HTTPError as err:
        why = f"Airflow did not say which DAGs changed ({type(err).__name__})"
        return outside.measurement(metric.name, Phase.error, "", why)
    return prometheus.measure(metric, soak, changed)
