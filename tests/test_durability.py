"""Trains survive a dead worker while people watch them: what the live worker decided, history replays.

On the real dev server with the worker as a process that is SIGKILLed. A query answered
by the restarted worker while a workflow task had timed out used to move the train's
clock in a way history does not record, and the soak then ended on replay where it had
gone on live (a nondeterminism error that wedged the train).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.targets.local import LocalEnvironment
from airagent import example
from airagent.config import load_pipeline
from airagent.devserver import binary
from airagent.models import TrainState, train_id
from interface.client import AirAgent
from tests.devserver import agent, cli_env, dev_server, until, worker  # noqa: F401  fixtures
from worker.main import WORKFLOWS

pytestmark = [pytest.mark.devserver, pytest.mark.slow]


async def watch(agent: AirAgent, wf_id: str, every: float = 0.2) -> None:
    """What `--wait`, `status --watch` and the Web UI do: ask the live worker, again and again."""
    while True:
        with contextlib.suppress(Exception):
            await agent.status(wf_id)
        await asyncio.sleep(every)


async def assert_replays(agent: AirAgent, wf_id: str) -> None:
    history = await agent.client.get_workflow_handle(wf_id).fetch_history()
    failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert not failed, failed[0].workflow_task_failed_event_attributes.failure.message
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


async def test_train_queried_while_its_workflow_task_times_out_replays(agent, worker, tmp_path):
    example.create(tmp_path / "repo", tmp_path / "envs", soak="15s", probe_interval="1s", airflow=False)
    pipeline = load_pipeline("main", tmp_path / "repo" / "airagent.yaml")
    train = (await agent.deploy(pipeline)).train
    await until(agent, train, lambda s: s.stage == "soak" and s.environment == "staging")
    watcher = asyncio.create_task(watch(agent, train))
    try:
        worker.kill()
        await asyncio.sleep(2)
        worker.start()  # while the dead worker's sticky queue still holds the train's workflow task
        status = await agent.wait(train, timeout=timedelta(minutes=2))
    finally:
        watcher.cancel()

    assert status.state == TrainState.succeeded, status.reason
    await assert_replays(agent, train)


async def test_concurrent_deploys_run_one_train_at_a_time_and_prod_ends_on_the_newest(agent, worker, tmp_path):
    pipeline, shas = five_commits(tmp_path)

    answers = await asyncio.gather(*(agent.deploy(pipeline, sha) for sha in shas))
    assert all(a.accepted and a.train for a in answers), answers
    await assert_one_at_a_time_newest_live(agent, pipeline, [a.train for a in answers], shas[-1])


async def test_deploys_from_separate_processes_run_one_train_at_a_time(agent, worker, cli_env, tmp_path):
    pipeline, shas = five_commits(tmp_path)
    config = str(tmp_path / "repo" / "airagent.yaml")

    procs = [
        subprocess.Popen(
            [binary("airagent"), "deploy", "--pipeline", "main", "--sha", sha, "--json", "-c", config],
            env=cli_env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for sha in shas
    ]
    answers = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 5, answers
    # Arrival order at the conductor is the race's: a commit older than what is live is refused at diff.
    await assert_one_at_a_time_newest_live(agent, pipeline, [a["train"] for a in answers], shas[-1])


async def test_deploy_wait_outlasts_a_stopped_worker_and_a_server_restart(agent, worker, dev_server, cli_env, tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs", soak="5s", probe_interval="1s", airflow=False)
    waiting = subprocess.Popen(
        [
            binary("airagent"),
            "deploy",
            "--pipeline",
            "main",
            "--wait",
            "--timeout",
            "400",
            "-c",
            str(tmp_path / "repo" / "airagent.yaml"),
        ],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    train = train_id("main", repo.head.commit.hexsha)
    await until(agent, train, lambda s: s.stage == "soak")

    worker.kill()
    await asyncio.sleep(15)
    await asyncio.to_thread(dev_server.stop)
    await asyncio.to_thread(dev_server.start)
    await asyncio.sleep(15)
    worker.start()
    out, _ = await asyncio.to_thread(waiting.communicate, timeout=300)

    assert waiting.returncode == 0, out
    assert "succeeded" in out and (await agent.wait(train)).state == TrainState.succeeded


def five_commits(tmp_path: Path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs", soak="0s", airflow=False)
    pipeline = load_pipeline("main", tmp_path / "repo" / "airagent.yaml")
    shas = [
        example.commit(
            repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=3 + i)}, f"fx {i}", "finance"
        )
        for i in range(5)
    ]
    return pipeline, shas


async def assert_one_at_a_time_newest_live(agent: AirAgent, pipeline, trains: list[str], newest: str) -> None:
    """No two trains overlapped (by their histories' times), prod runs `newest`, no release rolled twice."""
    for train in trains:
        await agent.wait(train, timeout=timedelta(minutes=3))
    spans = sorted(
        [
            (d.start_time, d.close_time)
            for d in [await agent.client.get_workflow_handle(t).describe() for t in set(trains)]
        ]
    )
    assert all(earlier[1] <= later[0] for earlier, later in pairwise(spans)), spans
    prod = LocalEnvironment(pipeline.environment("prod").target.path).record()
    assert prod.live.commit == newest
    rolled = [s.release for s in prod.history if s.action == "roll"]
    assert len(rolled) == len(set(rolled))
