"""`airagent doctor`: each check's verdict and fix, the --json shape and the exit code.

The first tests need no server (Temporal unreachable, an environment down, the rendering); the last run
on the real dev server with a real worker process and conductor, as an operator's machine would.
"""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from airagent import example
from airagent.models import TrainState, train_id
from interface.checks import Check, host, safely
from interface.cli import app
from interface.cli import doctor as doctor_module
from tests.conftest import make_pipeline
from tests.devserver import (  # noqa: F401  fixtures
    agent,
    airagent,
    dev_server,
    free_port,
    until,
    worker,
)

HOST = "doctor-box"
FIELDS = {"check", "ok", "level", "detail", "fix"}


def doctor(*args: str) -> tuple[int, list[dict]]:
    result = CliRunner().invoke(app, ["doctor", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def by_name(checks: list[dict]) -> dict[str, dict]:
    return {c["check"]: c for c in checks}


@pytest.fixture
def nowhere(monkeypatch):
    """A Temporal address nothing listens on."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")


def test_unreachable_temporal_fails_with_the_fix_and_skips_what_needs_it(nowhere, tmp_path):
    example.create(tmp_path / "repo", tmp_path / "envs", airflow=False)

    code, checks = doctor("-c", str(tmp_path / "repo" / "airagent.yaml"))

    assert code == 1
    assert all(set(c) == FIELDS and c["ok"] == (c["level"] != "fail") for c in checks), checks
    found = by_name(checks)
    assert found["temporal"]["level"] == "fail" and "Connection refused" in found["temporal"]["detail"]
    assert "airagent dev" in found["temporal"]["fix"]
    assert not {"search attributes", "worker", "conductor main"} & set(found)
    assert {"config", "env main/staging", "env main/prod", "sandbox", "disk", "runtimes"} <= set(found)


def test_an_environment_that_is_down_names_env_up(nowhere, tmp_path):
    example.create(tmp_path / "repo", tmp_path / "envs")  # Airflow environments, never started
    config = tmp_path / "repo" / "airagent.yaml"

    _, checks = doctor("-c", str(config))

    staging = by_name(checks)["env main/staging"]
    assert staging["level"] == "fail" and staging["detail"] == "down; no release yet"
    assert staging["fix"] == f"`airagent env up staging -p main -c {config}`"


def test_a_missing_config_points_at_init(nowhere, tmp_path):
    _, checks = doctor("-c", str(tmp_path / "airagent.yaml"))

    config = by_name(checks)["config"]
    assert config["level"] == "fail" and "airagent init" in config["fix"]


def test_the_api_swap_check_reads_the_kernel_setting_that_keeps_queued_connections(tmp_path):
    files_only = make_pipeline(example.create(tmp_path / "repo", tmp_path / "envs"), tmp_path / "envs")
    local = files_only.model_copy(
        update={
            "environments": [
                e.model_copy(update={"target": e.target.model_copy(update={"airflow": True})})
                for e in files_only.environments
            ]
        }
    )
    setting = tmp_path / "tcp_migrate_req"

    setting.write_text("0\n")
    off = host.api_swap([local], setting)
    assert off.level == "warn" and "main/staging, main/prod" in off.detail
    assert off.fix.startswith("`sysctl -w net.ipv4.tcp_migrate_req=1`")
    setting.write_text("1\n")
    assert host.api_swap([local], setting).level == "ok"
    assert "before 5.14" in host.api_swap([local], tmp_path / "absent").detail
    assert host.api_swap([files_only], tmp_path / "absent").level == "ok"  # files only: no api-server to swap
    assert host.api_swap([local]).level in ("ok", "warn")  # this machine's own setting, read as is


def test_lines_marks_and_exit_codes(monkeypatch):
    async def diagnosed(checks):
        return checks

    ok, warned = Check("temporal", "ok", "up"), Check("disk", "warn", "3.0 GiB free", "`airagent gc`")
    bad = safely("worker", lambda: 1 / 0)  # a check that raises is a failure with its message
    assert (bad.level, bad.detail) == ("fail", "ZeroDivisionError: division by zero")

    monkeypatch.setattr(doctor_module, "diagnose", lambda config: diagnosed([ok, warned]))
    passed = CliRunner().invoke(app, ["doctor"])
    assert passed.exit_code == 0, "warnings do not fail"
    assert passed.stdout.splitlines() == [
        "✓ temporal: up",
        "! disk: 3.0 GiB free → fix: `airagent gc`",
        "2 checks: 0 failed, 1 warning",
    ]

    monkeypatch.setattr(doctor_module, "diagnose", lambda config: diagnosed([ok, bad]))
    failed = CliRunner().invoke(app, ["doctor"])
    assert failed.exit_code == 1 and "✗ worker: ZeroDivisionError: division by zero" in failed.stdout


# --- on the dev server -------------------------------------------------------------------------------


@pytest.fixture
def cli_env(dev_server, tmp_path) -> dict[str, str]:
    """The dev server, a task queue of this test's own, and the host the config's environments name."""
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_server.address,
        "AIRAGENT_TASK_QUEUE": f"q-{tmp_path.name}",
        "AIRAGENT_HOST": HOST,
    }


@pytest.fixture
def config(tmp_path):
    """The example on files-only environments bound to HOST, so the host queue is checked too."""
    repo = example.create(tmp_path / "repo", tmp_path / "envs", soak="0s", airflow=False)
    path = tmp_path / "repo" / "airagent.yaml"
    path.write_text(path.read_text().replace("type: local,", f"type: local, host: {HOST},"))
    return path, repo.head.commit.hexsha


def run_doctor(config, env) -> tuple[int, dict[str, dict]]:
    done = airagent("doctor", "--json", "-c", str(config), env=env)
    return done.returncode, by_name(json.loads(done.stdout))


@pytest.mark.devserver
@pytest.mark.slow
async def test_with_a_worker_and_a_conductor_every_check_passes(agent, worker, cli_env, config):
    path, head = config
    code, before = run_doctor(path, cli_env)
    assert code == 1 and before["conductor main"]["level"] == "fail", before
    assert before["conductor main"]["fix"] == f"`airagent pipeline start -p main -c {path}`"
    assert before["env main/staging"]["level"] == "warn" and "no release yet" in before["env main/staging"]["detail"]

    started = airagent("pipeline", "start", "-p", "main", "-c", str(path), env=cli_env)
    assert started.returncode == 0, started.stderr
    status = await until(agent, train_id("main", head), lambda s: s.state.finished, timeout=300)
    assert status.state == TrainState.succeeded, status.reason

    code, after = run_doctor(path, cli_env)
    assert code == 0, after
    for name in ("temporal", "search attributes", "worker", f"worker@{HOST}", "conductor main", "sandbox"):
        assert after[name]["level"] == "ok", after[name]
    for env in ("staging", "prod"):
        assert after[f"env main/{env}"]["level"] == "ok" and head[:12] in after[f"env main/{env}"]["detail"]
    assert cli_env["AIRAGENT_TASK_QUEUE"] in after["worker"]["detail"]


@pytest.mark.devserver
@pytest.mark.slow
def test_with_no_worker_polling_the_worker_check_fails_with_the_fix(dev_server, cli_env, config):
    path, _ = config

    code, checks = run_doctor(path, cli_env)

    assert code == 1
    queue = cli_env["AIRAGENT_TASK_QUEUE"]
    assert checks["temporal"]["level"] == "ok" and dev_server.address in checks["temporal"]["detail"]
    assert checks["worker"]["level"] == "fail" and f"no worker polls task queue {queue!r}" in checks["worker"]["detail"]
    assert "`airagent worker`" in checks["worker"]["fix"] and f"AIRAGENT_TASK_QUEUE={queue}" in checks["worker"]["fix"]
    host = checks[f"worker@{HOST}"]
    assert host["level"] == "fail" and f"{queue}@{HOST}" in host["detail"] and f"AIRAGENT_HOST={HOST}" in host["fix"]
