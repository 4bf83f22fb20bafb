"""On the real Temporal dev server, with the worker and the CLI as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from datetime import timedelta

import pytest
from temporalio.client import Client
from temporalio.common import VersioningBehavior
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.targets.local import LocalEnvironment
from airagent import example, repair
from airagent.config import load_pipeline
from airagent.devserver import DevServer, binary
from airagent.models import TrainState, conductor_id, train_id
from interface.client import AirAgent, DeployRefused, NotFound
from tests.devserver import (  # noqa: F401  fixtures
    WorkerProcess,
    agent,
    airagent,
    cli_env,
    dev_server,
    free_port,
    until,
    until_pipeline,
    worker,
)

pytestmark = [pytest.mark.devserver, pytest.mark.slow]


async def test_worker_killed_mid_soak_resumes_and_rolls_each_environment_once(agent, worker, tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs", soak="12s", probe_interval="4s", airflow=False)
    pipeline = load_pipeline("main", tmp_path / "repo" / "airagent.yaml")
    train = (await agent.deploy(pipeline)).train
    await until(agent, train, lambda s: s.stage == "soak" and s.environment == "staging")

    worker.kill()
    worker.start()
    status = await agent.wait(train, timeout=timedelta(minutes=5))

    assert status.state == TrainState.succeeded, status.reason
    for env in pipeline.environments:
        history = LocalEnvironment(env.target.path).record().history
        assert [(h.action, h.commit) for h in history] == [("roll", repo.head.commit.hexsha)]


async def test_deploys_queue_at_the_conductor_one_train_at_a_time(agent, worker, tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs", soak="0s", airflow=False)
    pipeline = load_pipeline("main", tmp_path / "repo" / "airagent.yaml")
    pipeline.environments[0].require_approval = True
    first = await agent.deploy(pipeline)
    await until(agent, first.train, lambda s: s.stage == "approve")

    newer = example.commit(repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=6)}, "fx", "finance")
    queued = await agent.deploy(pipeline, newer)
    assert queued.train == train_id("main", newer) and "queued behind" in queued.message
    # The same commit again is the same train, not a second one.
    assert (await agent.deploy(pipeline, repo.commit("HEAD~1").hexsha)).train == first.train

    assert (await agent.control(first.train, "abort")).accepted
    assert (await agent.wait(first.train)).state == TrainState.aborted
    await until(agent, queued.train, lambda s: s.stage == "approve")
    assert (await agent.control(queued.train, "approve")).accepted
    assert (await agent.wait(queued.train)).state == TrainState.succeeded
    await agent.control(conductor_id("main"), "pause")
    with pytest.raises(DeployRefused, match="paused"):
        await agent.deploy(pipeline, newer)
    await agent.client.get_workflow_handle(conductor_id("main")).terminate("test over")


async def test_waiting_on_a_commit_deployed_again_waits_for_its_new_train(agent, worker, tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs", soak="0s", airflow=False)
    pipeline = load_pipeline("main", tmp_path / "repo" / "airagent.yaml")
    pipeline.environments[0].require_approval = True
    older = repo.head.commit.hexsha
    first = await agent.deploy(pipeline, older)
    await until(agent, first.train, lambda s: s.stage == "approve")
    assert (await agent.control(first.train, "abort")).accepted
    assert (await agent.wait(first.train)).state == TrainState.aborted
    newer = example.commit(repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=6)}, "fx", "finance")
    blocking = await agent.deploy(pipeline, newer)
    await until(agent, blocking.train, lambda s: s.stage == "approve")

    again = await agent.deploy(pipeline, older)  # queued behind `newer`; its earlier run was aborted
    assert again.train == first.train and again.asked
    waiting = asyncio.create_task(agent.wait(again.train, since=again.asked))
    await asyncio.sleep(3)
    assert not waiting.done(), "wait returned the aborted run of the same train"
    with pytest.raises(NotFound, match="queued"):
        await agent.status(again.train, since=again.asked)

    assert (await agent.control(blocking.train, "abort")).accepted
    await until(agent, again.train, lambda s: s.stage == "approve", since=again.asked)
    assert (await agent.control(again.train, "approve")).accepted
    assert (await asyncio.wait_for(waiting, 120)).state == TrainState.succeeded
    await agent.client.get_workflow_handle(conductor_id("main")).terminate("test over")


async def test_repair_resets_a_train_to_a_workflow_task_and_it_goes_on(agent, worker, cli_env, tmp_path):
    example.create(tmp_path / "repo", tmp_path / "envs", soak="0s", airflow=False)
    pipeline = load_pipeline("main", tmp_path / "repo" / "airagent.yaml")
    pipeline.environments[0].require_approval = True
    train = (await agent.deploy(pipeline)).train
    await until(agent, train, lambda s: s.stage == "approve")

    checked = airagent("repair", train, "--json", env=cli_env)
    assert checked.returncode == 0 and json.loads(checked.stdout)["reset_to"] is None, checked.stdout + checked.stderr
    # A wedged train is reset to the task that went wrong; here, to the end of the first one.
    handle = agent.client.get_workflow_handle(train)
    old_run = (await handle.describe()).run_id
    new_run = await repair.reset(agent.client, train, old_run, 4, reason="test")

    assert new_run != old_run
    await until(agent, train, lambda s: s.stage == "approve")
    assert (await agent.control(train, "approve")).accepted
    assert (await agent.wait(train)).state == TrainState.succeeded
    await agent.client.get_workflow_handle(conductor_id("main")).terminate("test over")


async def test_cli_deploy_wait_exit_codes_and_controls(agent, worker, cli_env, tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs", soak="0s", airflow=False)
    config = str(tmp_path / "repo" / "airagent.yaml")

    ok = airagent("deploy", "--pipeline", "main", "--wait", "-c", config, env=cli_env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "succeeded" in ok.stdout

    example.commit(repo, {example.BROKEN_PATH: example.BROKEN_DAG}, "break it", "marketing")
    failed = airagent("deploy", "--pipeline", "main", "--wait", "--json", "-c", config, env=cli_env)
    assert failed.returncode == 3
    report = json.loads(failed.stdout)
    assert report["state"] == "failed" and report["stage"] == "validate"
    assert example.BROKEN_PATH in report["reason"]

    status = airagent("status", "--pipeline", "main", "--json", env=cli_env)
    assert status.returncode == 3 and json.loads(status.stdout)["target"] == repo.head.commit.hexsha

    history = json.loads(airagent("history", "--pipeline", "main", "--json", env=cli_env).stdout)
    assert [t["state"] for t in history[:2]] == ["failed", "succeeded"]

    late = airagent("pause", history[0]["id"], "--reason", "too late", env=cli_env)
    assert late.returncode == 1 and "already ended" in late.stdout


def test_cli_bad_input_is_named(cli_env, tmp_path):
    example.create(tmp_path / "repo", tmp_path / "envs", airflow=False)
    config = str(tmp_path / "repo" / "airagent.yaml")

    unknown = airagent("deploy", "--pipeline", "nope", "-c", config, env=cli_env)
    assert unknown.returncode == 2
    assert "unknown pipeline 'nope'" in unknown.stderr and "main" in unknown.stderr

    bad_sha = airagent("deploy", "--pipeline", "main", "--sha", "deadbeef", "-c", config, env=cli_env)
    assert bad_sha.returncode == 2 and "deadbeef is not in" in bad_sha.stderr
    assert "Traceback" not in unknown.stderr + bad_sha.stderr


async def test_worker_killed_while_a_conductor_train_runs_both_resume(agent, worker, tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs", soak="12s", probe_interval="4s", airflow=False)
    pipeline = load_pipeline("main", tmp_path / "repo" / "airagent.yaml")
    await agent.start_pipeline(pipeline)
    head = repo.head.commit.hexsha
    await until(agent, train_id("main", head), lambda s: s.stage == "soak")

    worker.kill()
    worker.start()
    newer = example.commit(repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=6)}, "fx", "finance")
    await agent.notify(pipeline, newer)
    status = await until_pipeline(agent, lambda s: s.state.last_deployed == newer and s.state.running is None)

    assert [(t.sha, t.state) for t in status.state.trains] == [(head, "succeeded"), (newer, "succeeded")]
    for env in pipeline.environments:
        history = LocalEnvironment(env.target.path).record().history
        assert [h.commit for h in history] == [head, newer]
    await agent.client.get_workflow_handle("pipeline/main").terminate("test over")


@pytest.fixture(scope="module")
def short_history_server(tmp_path_factory):
    server = DevServer(
        tmp_path_factory.mktemp("temporal-short"),
        port=free_port(),
        ui_port=free_port(),
        dynamic_config={"limit.historyCount.suggestContinueAsNew": 40},
    )
    server.start()
    yield server
    server.stop()


async def test_conductor_continues_as_new_keeping_its_state(short_history_server, tmp_path):
    env = {**os.environ, "TEMPORAL_ADDRESS": short_history_server.address, "AIRAGENT_TASK_QUEUE": "can"}
    client = await Client.connect(short_history_server.address, data_converter=pydantic_data_converter)
    agent = AirAgent(client, "can")
    w = WorkerProcess(env, tmp_path / "worker.log")
    w.start()
    try:
        repo = example.create(tmp_path / "repo", tmp_path / "envs", soak="0s", airflow=False)
        pipeline = load_pipeline("main", tmp_path / "repo" / "airagent.yaml")
        handle = await agent.start_pipeline(pipeline)
        first_run = (await handle.describe()).run_id
        reconfigured = pipeline.model_copy(update={"teams": {**pipeline.teams, "platform": ["plugins/*"]}})
        assert (await agent.reconfigure(reconfigured, by="ops", reason="platform owns plugins")).accepted
        shas = [repo.head.commit.hexsha]
        for i in range(3):
            await until_pipeline(agent, lambda s: s.state.last_deployed == shas[-1] and s.state.running is None)
            shas.append(
                example.commit(
                    repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=3 + i)}, f"fx {i}", "finance"
                )
            )
            await agent.notify(pipeline, shas[-1])
        await until_pipeline(agent, lambda s: s.state.last_deployed == shas[-1] and s.state.running is None)
        # It continues as new between trains, after the last one's gc and poll: a new run, with the state.
        deadline = asyncio.get_running_loop().time() + 120
        while (await client.get_workflow_handle("pipeline/main").describe()).run_id == first_run:
            assert asyncio.get_running_loop().time() < deadline, "the conductor never continued as new"
            await asyncio.sleep(0.5)
        status = await until_pipeline(agent, lambda s: s.state.last_deployed == shas[-1])

        assert [t.sha for t in status.state.trains] == shas
        assert status.state.head == shas[-1]
        assert status.settings == reconfigured and status.state.reconfigured.by == "ops"
    finally:
        await client.get_workflow_handle("pipeline/main").terminate("test over")
        w.stop()


def set_current_version(server: DevServer, deployment: str, build_id: str) -> None:
    """The operator's step of a rollout, through the `temporal` CLI as docs/upgrading.md shows it."""
    for _ in range(100):
        done = subprocess.run(
            [
                binary("temporal"),
                "worker",
                "deployment",
                "set-current-version",
                "--address",
                server.address,
                "--deployment-name",
                deployment,
                "--build-id",
                build_id,
                "--yes",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode == 0:
            return
        time.sleep(0.3)  # the version exists once its worker has polled
    raise AssertionError(done.stderr)


async def test_trains_stay_on_their_version_and_the_conductor_moves_on(dev_server, agent, cli_env, tmp_path):
    deployment = f"airagent-{tmp_path.name}"
    workers = [
        WorkerProcess(
            {**cli_env, "AIRAGENT_DEPLOYMENT": deployment, "AIRAGENT_BUILD_ID": build_id},
            tmp_path / f"worker-{build_id}.log",
        )
        for build_id in ("v1", "v2")
    ]
    repo = example.create(tmp_path / "repo", tmp_path / "envs", soak="0s", airflow=False)
    pipeline = load_pipeline("main", tmp_path / "repo" / "airagent.yaml")
    pipeline.environments[1].require_approval = True
    # The new current version may reach the conductor's workflow tasks only after the train's; a short
    # poll interval makes it look again soon.
    pipeline.poll_interval = timedelta(seconds=2)
    conductor = agent.client.get_workflow_handle("pipeline/main")
    try:
        workers[0].start()
        set_current_version(dev_server, deployment, "v1")
        await agent.start_pipeline(pipeline)
        train = agent.client.get_workflow_handle(train_id("main", repo.head.commit.hexsha))
        await until(agent, train.id, lambda s: s.stage == "approve")

        workers[1].start()
        set_current_version(dev_server, deployment, "v2")
        assert (await agent.control(train.id, "approve")).accepted
        assert (await agent.wait(train.id)).state == TrainState.succeeded

        pinned = (await train.describe()).raw_description.workflow_execution_info.versioning_info
        assert pinned.behavior == VersioningBehavior.PINNED.value and pinned.deployment_version.build_id == "v1"
        for _ in range(200):
            moved = (await conductor.describe()).raw_description.workflow_execution_info.versioning_info
            if moved.deployment_version.build_id == "v2":
                break
            await asyncio.sleep(0.3)
        assert moved.deployment_version.build_id == "v2"
        assert (await agent.pipeline_status("main")).state.last_deployed == repo.head.commit.hexsha
    finally:
        await conductor.terminate("test over")
        for w in workers:
            w.stop()
