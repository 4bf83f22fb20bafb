"""Gates belong to the operator: a pipeline's settings change by `pipeline reconfigure`, never by a deploy's
file or a commit's airagent.yaml. On the time-skipping server, with the CLI as a real process."""

from __future__ import annotations

import asyncio
import getpass
import os
import subprocess
import sys
from contextlib import suppress
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from airagent import example
from airagent.config import load_pipeline
from airagent.models import Control, Reconfigure, TrainState, train_id
from interface.client import NotFound
from tests.conftest import current_details, make_pipeline

AIRAGENT = str(Path(sys.executable).with_name("airagent"))
PROD_APPROVAL = "        require_approval: true\n"  # the example file ends with prod's settings


@pytest.fixture(autouse=True)
async def conductor_ends_with_the_test(client):
    yield
    with suppress(RPCError):
        await client.get_workflow_handle("pipeline/main").terminate("test over")


@pytest.fixture
def cli_env(temporal_env, agent) -> dict[str, str]:
    """The CLI on the test server and the test's worker; wide, so no table wraps a line."""
    address = temporal_env.client.service_client.config.target_host
    return {**os.environ, "TEMPORAL_ADDRESS": address, "AIRAGENT_TASK_QUEUE": agent.task_queue, "COLUMNS": "250"}


async def airagent(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the CLI off the event loop, which the worker needs to answer it."""
    return await asyncio.to_thread(
        subprocess.run, [AIRAGENT, *args], env=env, capture_output=True, text=True, timeout=120
    )


async def train_until(drive, wf_id: str, predicate, step: timedelta = timedelta(seconds=20)):
    """Like `drive.until`, for a train the conductor may not have started yet."""
    for _ in range(200):
        with suppress(NotFound):
            if predicate(status := await drive.agent.status(wf_id)):
                return status
        await drive.skip(step)
    raise AssertionError(f"{wf_id} never got there")


def done_with(sha: str):
    return lambda s: s.state.last_deployed == sha and s.state.running is None


def fx_change(repo, tasks: int) -> str:
    return example.commit(
        repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=tasks)}, "fx", "finance"
    )


@pytest.fixture
def repo(tmp_path):
    return example.create(tmp_path / "repo", tmp_path / "envs", soak="0s", airflow=False)


async def test_reconfigure_gates_the_next_train_and_the_log_says_who_and_why(agent, drive, repo, cli_env, tmp_path):
    config = tmp_path / "repo" / "airagent.yaml"
    await agent.start_pipeline(load_pipeline("main", config))
    await drive.pipeline_until("main", done_with(repo.head.commit.hexsha))
    gated = tmp_path / "repo" / "gated.yaml"  # not committed: the operator's edit
    gated.write_text(config.read_text().replace("soak: 0s", "soak: 5m", 1) + PROD_APPROVAL)

    done = await airagent(
        "pipeline", "reconfigure", "-p", "main", "-c", str(gated), "--reason", "prod gets a gate", env=cli_env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "changed environments (staging, prod); the next train deploys with them" in done.stdout

    sha = fx_change(repo, 6)
    await agent.notify(load_pipeline("main", config), sha)  # the caller's file changes nothing
    train = train_id("main", sha)
    waiting = await train_until(drive, train, lambda s: s.stage == "approve")
    soak = next(st for st in waiting.stages if st.name == "soak" and st.environment == "staging")
    assert soak.detail.startswith("healthy for 5m00s"), soak.detail
    assert (await agent.control(train, "approve", Control(by="ana"))).accepted
    status = await drive.pipeline_until("main", done_with(sha))

    assert status.state.trains[-1].state == "succeeded"
    assert status.settings == load_pipeline("main", gated)
    [event] = [e for e in status.state.events if e.control == "reconfigure"]
    assert (event.by, event.reason, event.accepted) == (getpass.getuser(), "prod gets a gate", True)
    assert status.state.reconfigured == event
    shown = await airagent("pipeline", "status", "-p", "main", env=cli_env)
    assert f"reconfigure by {getpass.getuser()}: changed environments (staging, prod)" in shown.stdout
    assert "prod gets a gate" in shown.stdout


async def test_a_running_train_keeps_the_settings_it_started_with(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", poll_interval="1h")
    pipeline.environments[1].require_approval = True
    head = monorepo.head.commit.hexsha
    await agent.start_pipeline(pipeline)
    first = train_id("main", head)
    await train_until(drive, first, lambda s: s.stage == "approve")

    ungated = make_pipeline(monorepo, tmp_path / "envs", poll_interval="1h")
    ack = await agent.reconfigure(ungated, by="ana", reason="approval slows us down")
    assert ack.accepted and f"{first} goes on with the settings it started with" in ack.message
    await drive.skip(timedelta(minutes=10))
    assert (await agent.status(first)).stage == "approve"  # the gate it waits at was set for it
    assert (await agent.control(first, "approve", Control(by="ana"))).accepted
    await drive.pipeline_until("main", done_with(head))

    sha = fx_change(monorepo, 6)
    await agent.notify(pipeline, sha)
    await drive.pipeline_until("main", done_with(sha))
    status = await agent.status(train_id("main", sha))
    assert status.state == TrainState.succeeded and "approve" not in [s.name for s in status.stages]
    again = await agent.reconfigure(ungated, by="ana")
    assert again.accepted and again.message.startswith("unchanged")
    assert [e.control for e in (await agent.pipeline_status("main")).state.events] == ["reconfigure"]


async def test_a_bad_file_is_refused_naming_the_field_and_nothing_changes(agent, drive, repo, cli_env, tmp_path):
    pipeline = load_pipeline("main", tmp_path / "repo" / "airagent.yaml")
    await agent.start_pipeline(pipeline)
    await drive.pipeline_until("main", done_with(repo.head.commit.hexsha))
    text = (tmp_path / "repo" / "airagent.yaml").read_text().replace("soak: 0s", "soak: forever", 1)
    bad = tmp_path / "repo" / "bad.yaml"
    bad.write_text(text)
    line = 1 + next(i for i, row in enumerate(text.splitlines()) if "soak: forever" in row)

    done = await airagent("pipeline", "reconfigure", "-p", "main", "-c", str(bad), env=cli_env)

    assert done.returncode == 2
    assert f"{bad}:{line}: pipelines.main.environments.0.soak" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await agent.client.get_workflow_handle("pipeline/main").execute_update(
            "reconfigure", Reconfigure(settings=pipeline.model_copy(update={"name": "other"}), by="ana")
        )
    assert "these settings are pipeline 'other''s" in str(refused.value.cause)
    with pytest.raises(NotFound):
        await agent.reconfigure(pipeline.model_copy(update={"name": "other"}))
    status = await agent.pipeline_status("main")
    assert status.settings == pipeline and status.state.events == [] and status.state.reconfigured is None


async def test_deploy_with_a_different_file_uses_the_conductors_settings(agent, drive, repo, cli_env, tmp_path):
    config = tmp_path / "repo" / "airagent.yaml"
    head = repo.head.commit.hexsha
    await agent.deploy(load_pipeline("main", config), head)  # starts the conductor with the file as it is
    await drive.pipeline_until("main", done_with(head))
    gated = tmp_path / "repo" / "gated.yaml"  # not committed: a local edit
    gated.write_text(config.read_text() + PROD_APPROVAL)
    sha = fx_change(repo, 6)

    done = await airagent("deploy", "-p", "main", "--sha", sha, "-c", str(gated), env=cli_env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"the conductor of main deploys with its own settings, not {gated}'s" in done.stderr
    assert "(they differ in environments (prod))" in done.stderr and "airagent pipeline reconfigure" in done.stderr
    status = await train_until(drive, train_id("main", sha), lambda s: s.state.finished)
    assert status.state == TrainState.succeeded and "approve" not in [s.name for s in status.stages]
    again = await airagent("deploy", "-p", "main", "--sha", sha, "-c", str(config), env=cli_env)
    assert again.returncode == 0 and "own settings" not in again.stderr


async def test_a_commit_changing_airagent_yaml_is_not_applied_and_says_so(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", poll_interval="1h")
    head = monorepo.head.commit.hexsha
    await agent.start_pipeline(pipeline)
    await drive.pipeline_until("main", done_with(head))
    assert (await agent.status(train_id("main", head))).notes == []  # a first deploy: every file is new

    text = (Path(monorepo.working_tree_dir) / "airagent.yaml").read_text()
    sha = example.commit(monorepo, {"airagent.yaml": text + PROD_APPROVAL}, "prod gets a gate", "platform")
    await agent.notify(pipeline, sha)
    await drive.pipeline_until("main", done_with(sha))

    train = train_id("main", sha)
    status = await agent.status(train)
    # airagent.yaml is an ignored file: nothing rolls, and the train says how to apply it.
    assert status.state == TrainState.noop and "approve" not in [s.name for s in status.stages]
    [note] = status.notes
    assert note.startswith("airagent.yaml changed in this train's commits; not applied")
    assert "`airagent pipeline reconfigure -p main -c airagent.yaml`" in note
    assert "airagent.yaml changed" in await current_details(agent, train)
    assert (await agent.pipeline_status("main")).settings == pipeline


async def test_a_pipeline_without_the_sandbox_says_so_in_its_status(agent, drive, repo, cli_env, tmp_path):
    config = tmp_path / "repo" / "airagent.yaml"
    await agent.start_pipeline(load_pipeline("main", config))
    unsandboxed = tmp_path / "repo" / "unsandboxed.yaml"
    pipelines = "pipelines:\n  main:\n"
    unsandboxed.write_text(config.read_text().replace(pipelines, f"{pipelines}    sandbox: off\n"))
    assert not load_pipeline("main", unsandboxed).sandbox

    done = await airagent("pipeline", "reconfigure", "-p", "main", "-c", str(unsandboxed), env=cli_env)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = await airagent("pipeline", "status", "-p", "main", env=cli_env)

    assert "sandbox: off: DAG files and requirements run with the worker's own rights" in " ".join(shown.stdout.split())
