"""Environments bound to a host: their activities run only on the worker there, and a train waits for it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.worker import Worker

from airagent.config import ConfigError, host_queue, load_pipeline
from airagent.models import TrainState
from tests.conftest import make_pipeline, start_train
from worker.main import ACTIVITIES

HOST = "airflow-box-1"
# What touches an environment, or makes the release it gets, goes to its host; the rest anywhere.
ON_HOST = {"diff", "build", "validate", "roll", "soak_check"}


async def test_a_train_waits_for_its_hosts_worker_and_runs_its_environments_there(
    agent, drive, monorepo, tmp_path, client
):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", soak="1m", probe_interval="30s")
    for env in pipeline.environments:
        env.target.host = HOST
    handle = await start_train(agent, pipeline, monorepo.head.commit.hexsha)
    queue = host_queue(agent.task_queue, HOST)

    waiting = await drive.until(handle.id, lambda s: s.stage == "diff")
    assert waiting.stages[-1].detail == f"on host {HOST}: waiting for its worker (task queue {queue})"
    assert not waiting.state.finished

    with ThreadPoolExecutor(max_workers=2) as executor:
        async with Worker(client, task_queue=queue, activities=ACTIVITIES, activity_executor=executor):
            status = await drive.finish(handle.id)

    assert status.state == TrainState.succeeded, status.reason
    history = await handle.fetch_history()
    scheduled = {
        e.activity_task_scheduled_event_attributes.activity_type.name: e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    assert ON_HOST <= set(scheduled)
    for name, attributes in scheduled.items():
        assert attributes.task_queue.name == (queue if name in ON_HOST else agent.task_queue), name


def test_local_environments_on_two_hosts_are_refused_naming_the_field(monorepo, tmp_path):
    config = tmp_path / "repo" / "airagent.yaml"
    text = config.read_text()
    for name, host in (("staging", "box-a"), ("prod", "box-b")):
        where = f"type: local, path: {tmp_path / 'envs' / name}"
        assert where in text, text
        text = text.replace(where, f"type: local, host: {host}, path: {tmp_path / 'envs' / name}")
    config.write_text(text)

    with pytest.raises(ConfigError) as refused:
        load_pipeline("main", config)
    assert "environments.1.target.host" in str(refused.value) and "box-a, box-b" in str(refused.value)
