"""Each environment's health and live release, read as `airagent env status` reads them: the environment's own
record, its components, and Airflow's /api/v2/monitor/health."""

from __future__ import annotations

from pathlib import Path

import httpx

from activities import probes
from activities.airflow_api import AirflowApi
from activities.targets.local_airflow import COMPONENTS, LocalAirflow
from airagent.config import EnvironmentSettings, KubernetesTarget, LocalTarget, PipelineSettings
from interface.checks import Check, command

# Doctor asks each environment once; a slow answer is as telling as none.
API_TIMEOUT = 3.0


def environment(pipeline: PipelineSettings, env: EnvironmentSettings, config: Path) -> Check:
    """Failing when it is down or unhealthy, with the fix; a warning when it runs no release yet."""
    name = f"env {pipeline.name}/{env.name}"
    if isinstance(env.target, LocalTarget):
        state, fix, live = _local(pipeline, env, env.target, config)
    else:
        state, fix, live = _kubernetes(pipeline, env, env.target)
    if fix:
        return Check(name, "fail", f"{state}; {f'live {live}' if live else 'no release yet'}", fix)
    if live is None:
        start = command("pipeline", "start", "-p", pipeline.name, config=config)
        return Check(name, "warn", f"{state}; no release yet", f"{start} deploys the branch head")
    return Check(name, "ok", f"{state}; live {live}")


def _local(
    pipeline: PipelineSettings, env: EnvironmentSettings, target: LocalTarget, config: Path
) -> tuple[str, str, str | None]:
    """(state, fix when it is wrong, live release) of a folder on this host."""
    airflow = LocalAirflow(env.name, target, env.probes)
    record = airflow.files.live()
    live = _release(record.id, record.commit) if record else None
    if not target.airflow:
        return "files only (airflow: false)", "", live
    stopped = airflow.stopped()
    if stopped:
        state = "down" if len(stopped) == len(COMPONENTS) else f"{', '.join(stopped)} down"
        return state, command("env", "up", env.name, "-p", pipeline.name, config=config), live
    status = command("env", "status", env.name, "-p", pipeline.name, config=config)
    return (*_health(airflow.api(timeout=API_TIMEOUT), f"{status}, and the logs in {target.path / 'logs'}"), live)


def _kubernetes(
    pipeline: PipelineSettings, env: EnvironmentSettings, target: KubernetesTarget
) -> tuple[str, str, str | None]:
    """(state, fix when it is wrong, live release) from the cluster's record and, with `api_url`, Airflow."""
    from activities.targets.kube_airflow import KubernetesAirflow  # the kubernetes client loads only when used

    driver = KubernetesAirflow(env, pipeline)
    marker = driver.marker()
    live = _release(marker.live, marker.live_commit) if marker.live else None
    api = driver.api()
    if api is None:
        return "health not checked (no api_url)", "", live
    return (*_health(api, f"look at its pods: `kubectl get pods -n {target.namespace}`"), live)


def _health(api: AirflowApi, fix: str) -> tuple[str, str]:
    """Airflow's own verdict on its parts; an API that does not answer is unhealthy, and says why."""
    try:
        with api:
            reading = probes.health(api.health())
    except httpx.HTTPError as err:
        return f"its API does not answer ({type(err).__name__}: {err})", fix
    return ("healthy", "") if reading.ok else (f"unhealthy: {reading.reading}", fix)


def _release(release: str, commit: str | None) -> str:
    return f"{release} ({commit[:12]})" if commit else release
