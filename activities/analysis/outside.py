"""Providers for checks a team writes itself: an HTTP endpoint (`webhook`) and a command (`job`).

Each reads one result and holds it to the metric's conditions; a provider that cannot
read (no URL, a timeout, a command that cannot start) gives an `error` measurement, never
an exception. A webhook's URL may carry a token, so it is never shown.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx

from activities import sandbox
from airagent import tls
from airagent.config.analysis import JobMetric, PrometheusMetric, WebhookMetric, holds
from airagent.models import Release
from airagent.models.analysis import Measurement, Phase

# What a job's reading may show of its output.
SHOWN = 200


def measurement(metric: str, phase: Phase, value: str, detail: str) -> Measurement:
    return Measurement(metric=metric, phase=phase, value=value[:SHOWN], detail=detail[:SHOWN], at=datetime.now(UTC))


def judged(metric: WebhookMetric | JobMetric | PrometheusMetric, result: str, seen: str | None = None) -> Measurement:
    """A result held to the metric's conditions: failure first, then success; neither met is inconclusive,
    and with no conditions at all it is successful. `seen` is what to show, when not the result itself."""
    seen = seen or result
    if metric.failure and holds(metric.failure, result):
        return measurement(metric.name, Phase.failed, seen, f"met {metric.failure}")
    if metric.success and holds(metric.success, result):
        return measurement(metric.name, Phase.successful, seen, f"met {metric.success}")
    if metric.failure or metric.success:
        return measurement(metric.name, Phase.inconclusive, seen, "met no condition")
    return measurement(metric.name, Phase.successful, seen, "")


def webhook(metric: WebhookMetric, release: Release) -> Measurement:
    url = os.environ.get(metric.url_env)
    if not url:
        return measurement(
            metric.name, Phase.error, "", f"{metric.url_env} is not set on the worker; set it to the URL"
        )
    try:
        answer = httpx.get(
            url,
            params={"release": release.id, "commit": release.commit},
            timeout=metric.timeout.total_seconds(),
            verify=tls.context(),
        )
    except httpx.HTTPError as err:
        return measurement(metric.name, Phase.error, "", f"no answer ({type(err).__name__})")
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "result" in body:
        return judged(metric, str(body["result"]), f"HTTP {answer.status_code}: {body['result']}")
    return judged(metric, "pass" if answer.is_success else "fail", f"HTTP {answer.status_code}")


def job(metric: JobMetric, release: Release, sandboxed: bool) -> Measurement:
    """The command in the release's folder, its runtime first on PATH, with nothing of the worker's environment."""
    bundle, runtime = Path(release.bundle), Path(release.runtime)
    if not bundle.is_dir() or not runtime.is_dir():
        return measurement(metric.name, Phase.error, "", f"release {release.id} is not on this worker")
    env = {"PATH": f"{runtime / 'bin'}:/usr/bin:/bin", "HOME": "/tmp", "AIRAGENT_RELEASE": release.id}
    env |= {"AIRAGENT_COMMIT": release.commit, "VIRTUAL_ENV": str(runtime)}
    argv = metric.command
    if sandboxed:
        seen = [bundle, runtime.resolve(), sandbox.interpreter_prefix(runtime / "bin" / "python")]
        argv = sandbox.command(argv, read_only=seen, writable=[], env=env, cwd=bundle)
    try:
        done = subprocess.run(
            argv, cwd=bundle, env=env, capture_output=True, text=True, timeout=metric.timeout.total_seconds()
        )
    except subprocess.TimeoutExpired:
        return measurement(metric.name, Phase.error, "", f"still running after {metric.timeout}")
    except OSError as err:
        return measurement(metric.name, Phase.error, "", f"cannot start {metric.command[0]}: {err.strerror}")
    lines = (done.stdout or done.stderr).strip().splitlines()
    last = lines[-1].strip() if lines else ""
    if done.returncode != 0:
        return measurement(metric.name, Phase.failed, last, f"exit code {done.returncode}")
    return judged(metric, last)
