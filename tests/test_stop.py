"""Stopping a local environment's components waits only while there is something to finish, and says so.

The scheduler stand-in is a small Python process that ignores SIGTERM, as a scheduler stuck in
"waiting for running tasks to finish" does, started through Components as the real one is.
The environment's API is replayed over real HTTP from answers recorded from a real Airflow
3.3 api-server (tests/airflow_api/), so the client code runs exactly as against Airflow.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from textwrap import dedent

import pytest

from activities.targets import local_drain
from activities.targets.components import Process
from activities.targets.local_airflow import LocalAirflow
from airagent.config import LocalTarget
from airagent.devserver import binary
from tests.airflow_api import Replaying, recorded, serving
from tests.ports import free_port

# A scheduler that will not exit: it traps SIGTERM and sleeps on.
STUBBORN = dedent("""\
    import signal, time
    signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM ignored", flush=True))
    print("ready", flush=True)
    while True:
        time.sleep(1)
    """)
# A scheduler with nothing to finish: SIGTERM ends it.
PROMPT = 'print("ready", flush=True)\nimport time\nwhile True:\n    time.sleep(1)\n'


class Replay(Replaying):
    """Airflow's token endpoint and its running task instances, from `running` (a recording's name)."""

    running = "task_instances_running"

    def do_POST(self):
        self.send_json({"access_token": "token"}, 201)

    def do_GET(self):
        if "/taskInstances" not in self.path or self.headers.get("Authorization") != "Bearer token":
            return self.send_json({"detail": "Not found"}, 404)
        self.send_json(recorded(self.running))


@pytest.fixture
def api():
    with serving(Replay) as server:
        yield server
    Replay.running = "task_instances_running"


def environment(root: Path, port: int, drain_timeout: str, said: list[str] | None = None) -> LocalAirflow:
    target = LocalTarget(path=root / "staging", port=port, drain_timeout=drain_timeout)
    env = LocalAirflow("staging", target, say=said.append if said is not None else None)
    env.secrets.mkdir(parents=True)
    (env.secrets / "api-login").write_text("airagent:s3cret")
    return env


def scheduler(env: LocalAirflow, program: str) -> Process:
    """Started as the real scheduler is, and once it is ready for SIGTERM."""
    process = env.components.start("scheduler", [sys.executable, "-c", program], {}, cwd=env.target.path)
    log = env.components.logs / "scheduler.log"
    deadline = time.monotonic() + 30
    while "ready" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the stand-in scheduler never got ready"
        time.sleep(0.1)
    return process


def stop(env: LocalAirflow) -> tuple[str, float]:
    started = time.monotonic()
    return env.down(), time.monotonic() - started


def test_env_down_kills_a_stuck_scheduler_after_a_short_grace_when_no_task_runs(api, tmp_path):
    env = environment(tmp_path, api.server_port, drain_timeout="1h")
    stuck = scheduler(env, STUBBORN)
    config = tmp_path / "airagent.yaml"
    config.write_text(
        dedent(f"""\
        pipelines:
          main:
            repo: {tmp_path}
            environments:
              - name: staging
                target: {{type: local, path: {env.target.path}, port: {env.target.port}, drain_timeout: 1h}}
        """)
    )

    started = time.monotonic()
    down = subprocess.run(
        [binary("airagent"), "env", "down", "staging", "-c", config], capture_output=True, text=True, timeout=300
    )

    assert down.returncode == 0, down.stderr
    assert time.monotonic() - started < 300  # the short grace, not the hour the drain timeout allows, on a busy host
    lines = down.stdout.splitlines()
    assert lines[0] == "staging: stopping scheduler (no task instance running; up to 15s before SIGKILL)", lines
    assert "scheduler (no task instance running; up to 15s): killed: still running 15s after SIGTERM" in lines[-1]
    assert not stuck.alive and env.components.record("scheduler") is None
    assert "SIGTERM ignored" in (env.components.logs / "scheduler.log").read_text()


def test_while_a_task_runs_the_wait_is_bounded_by_the_drain_timeout_and_names_it(api, tmp_path, monkeypatch):
    monkeypatch.setattr(local_drain, "QUIET_GRACE", 2.0)
    Replay.running = "task_instances_running_one"
    said: list[str] = []
    env = environment(tmp_path, api.server_port, drain_timeout="8s", said=said)
    stuck = scheduler(env, STUBBORN)

    detail, took = stop(env)

    assert not stuck.alive and took >= 8
    waited_for = "1 task instance running: sleeper.nap (manual__2026-12-06T20:51:26.928463+00:00)"
    assert said[0].startswith(f"staging: stopping scheduler ({waited_for}"), said
    assert said[0].endswith("up to 8s before SIGKILL)"), said
    assert "killed: still running 8s after SIGTERM" in detail, detail


def test_the_wait_ends_a_short_grace_after_the_last_task_finishes(api, tmp_path, monkeypatch):
    """A scheduler that stays once its tasks are done is stuck: the drain timeout is no reason to wait on."""
    monkeypatch.setattr(local_drain, "QUIET_GRACE", 2.0)
    Replay.running = "task_instances_running_one"
    said: list[str] = []
    env = environment(tmp_path, api.server_port, drain_timeout="1h", said=said)
    stuck = scheduler(env, STUBBORN)
    finished = threading.Timer(3, lambda: setattr(Replay, "running", "task_instances_running"))
    finished.start()

    detail, took = stop(env)

    finished.join()
    assert not stuck.alive and took < 60, took
    assert "up to 3600s before SIGKILL" in said[0], said
    assert "staging: no task instance running any more: up to 2s more" in said, said
    assert "scheduler (1 task instance running: sleeper.nap" in detail and "killed: still running" in detail


def test_when_the_api_cannot_say_the_drain_timeout_holds_and_the_message_says_why(tmp_path):
    said: list[str] = []
    env = environment(tmp_path, free_port(), drain_timeout="1h", said=said)
    prompt = scheduler(env, PROMPT)

    detail, _ = stop(env)

    assert said[0].startswith(
        "staging: stopping scheduler (tasks may be running: the API did not answer (ConnectError), "
        "so until 15s after none runs; up to 3600s before SIGKILL)"
    ), said
    assert not prompt.alive and detail.endswith("): exited in 0s"), detail
