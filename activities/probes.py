"""Soak probes: each reads one thing about a live Airflow and gives a verdict against a threshold.

A probe never raises: a timeout, a refused connection or a malformed answer is a failing
reading that says so, because an environment that cannot answer is not healthy. The
verdict logic is plain functions over what the API answered, so recorded answers test it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from activities.airflow_api import AirflowApi
from airagent import tls
from airagent.config import Probes, WebhookProbe
from airagent.models import Baseline, ProbeReading, Release

HEALTH_PARTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def reading(probe: str, ok: bool, seen: str, threshold: str) -> ProbeReading:
    return ProbeReading(probe=probe, ok=ok, reading=seen, threshold=threshold, at=datetime.now(UTC))


def health(answer: Any) -> ProbeReading:
    """The JSON of /api/v2/monitor/health, part by part; a 200 with an unhealthy scheduler is unhealthy."""
    threshold = "metadatabase, scheduler, triggerer and dag_processor all healthy"
    if not isinstance(answer, dict):
        return reading("health", False, f"malformed answer: {str(answer)[:200]!r}", threshold)
    states = {}
    for part in HEALTH_PARTS:
        value = answer.get(part)
        states[part] = value.get("status") if isinstance(value, dict) else None
    bad = {part: state for part, state in states.items() if state != "healthy"}
    seen = ", ".join(f"{part} {state or 'missing'}" for part, state in states.items())
    return reading("health", not bad, seen, threshold)


def import_errors(errors: list[dict[str, Any]], baseline: Baseline) -> ProbeReading:
    files = sorted({str(e.get("filename")) for e in errors})
    new = [f for f in files if f not in baseline.import_errors]
    threshold = f"no import errors beyond the {len(baseline.import_errors)} there before the roll"
    if new:
        first = next(e for e in errors if str(e.get("filename")) == new[0])
        last = (first.get("stack_trace") or "").strip().splitlines()[-1:] or [""]
        return reading("import_errors", False, f"{len(new)} new: {', '.join(new)} ({last[0][:200]})", threshold)
    return reading("import_errors", True, f"{len(files)} import errors, none new", threshold)


def failure_rate(
    failed: int,
    finished: int,
    baseline: Baseline,
    settings: Probes,
    dags: list[str] | None = None,
    gone: list[str] | None = None,
) -> ProbeReading:
    """Failed task instances during soak, against the share that failed before the roll; a failing reading
    names the DAGs they belong to, to trace the regression to commits. The counts leave out the `gone` DAGs',
    as a DAG no longer deployed (a rollback or a train took its file away) says nothing of this release."""
    before = baseline.failed / baseline.finished if baseline.finished else 0.0
    now = failed / finished if finished else 0.0
    limit = min(1.0, before + settings.failure_rate_tolerance)
    threshold = (
        f"at most {limit:.0%} failed (before the roll {before:.0%} + {settings.failure_rate_tolerance:.0%}),"
        f" or fewer than {settings.min_failed_tasks} failed"
    )
    ok = failed < settings.min_failed_tasks or now <= limit
    seen = f"{failed} of {finished} task instances failed ({now:.0%})"
    if gone:
        seen += f"; left out, as no longer deployed: {', '.join(sorted(gone))}"
    verdict = reading("task_failure_rate", ok, seen, threshold)
    verdict.dag_ids = [] if ok else sorted(dags or [])
    return verdict


def components(processes: dict[str, Any], expected: list[str]) -> ProbeReading:
    """Each component alive as the process airagent started; a dead or replaced one fails."""
    threshold = f"{', '.join(expected)} running"
    down = [name for name in expected if not (processes.get(name) and processes[name].alive)]
    up = [f"{name} {processes[name].pid}" for name in expected if name not in down]
    if down:
        return reading(
            "components",
            False,
            f"not running: {', '.join(down)}" + (f"; running: {', '.join(up)}" if up else ""),
            threshold,
        )
    return reading("components", True, "running: " + ", ".join(up), threshold)


def unanswered(probe: str, err: Exception, threshold: str) -> ProbeReading:
    if isinstance(err, httpx.TimeoutException):
        seen = f"no answer within the timeout ({type(err).__name__})"
    elif isinstance(err, httpx.HTTPStatusError):
        seen = f"HTTP {err.response.status_code} from {err.request.url.path}"
    elif isinstance(err, httpx.TransportError):
        seen = f"cannot reach the api-server ({type(err).__name__}: {err})"
    elif isinstance(err, (ValueError, KeyError, TypeError)):
        seen = f"malformed answer ({type(err).__name__}: {err})"
    else:
        seen = f"{type(err).__name__}: {err}"
    return reading(probe, False, seen, threshold).model_copy(update={"error": True})


def guarded(probe: str, threshold: str, read: Callable[[], ProbeReading]) -> ProbeReading:
    try:
        return read()
    except (httpx.HTTPError, ValueError, KeyError, TypeError, PermissionError) as err:
        return unanswered(probe, err, threshold)


def airflow_probes(api: AirflowApi, baseline: Baseline, settings: Probes) -> list[ProbeReading]:
    """Every API probe once; each fails alone."""

    def rate() -> ProbeReading:
        failed = api.task_instances(["failed"], ended_after=baseline.at)
        finished = api.task_instances(["success", "failed"], ended_after=baseline.at)
        dags = api.failed_dags(baseline.at) if failed else []
        gone = [d for d in dags if not api.deployed(d)]
        for dag in gone:  # a run already under way when its DAG was taken away can still fail
            failed -= api.task_instances(["failed"], ended_after=baseline.at, dag_id=dag)
            finished -= api.task_instances(["success", "failed"], ended_after=baseline.at, dag_id=dag)
        kept = [d for d in dags if d not in gone]
        return failure_rate(max(failed, 0), max(finished, 0), baseline, settings, kept, gone)

    return [
        guarded("health", "an answer", lambda: health(api.health())),
        guarded("import_errors", "an answer", lambda: import_errors(api.import_errors(), baseline)),
        guarded("task_failure_rate", "an answer", rate),
    ]


def webhook(probe: WebhookProbe, release: Release, timeout: float) -> ProbeReading:
    """One outside check: a 2xx is healthy. The URL is never shown, as it may carry a token."""
    threshold = "a 2xx answer"
    url = os.environ.get(probe.url_env)
    if not url:
        return reading(
            probe.name, False, f"{probe.url_env} is not set on the worker; set it to the check's URL", threshold
        )
    try:
        answer = httpx.get(
            url,
            params={"release": release.id, "commit": release.commit},
            timeout=timeout,
            verify=tls.context(),
        )
    except httpx.HTTPError as err:
        return reading(probe.name, False, f"no answer ({type(err).__name__})", threshold)
    return reading(probe.name, answer.is_success, f"HTTP {answer.status_code}", threshold)


def take_baseline(api: AirflowApi, settings: Probes) -> Baseline:
    """What soak compares against, read just before the roll changes anything."""
    at = datetime.now(UTC)
    since = at - settings.baseline_window
    return Baseline(
        at=at,
        import_errors=sorted({str(e.get("filename")) for e in api.import_errors()}),
        failed=api.task_instances(["failed"], ended_after=since, ended_before=at),
        finished=api.task_instances(["success", "failed"], ended_after=since, ended_before=at),
    )
