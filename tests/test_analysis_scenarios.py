"""The soak analysis judging a real Airflow: a changed DAG three times slower is rolled back on the runs its smoke
started, an unchanged DAG failing a third of its runs as it always did is not (tests/analysis_scenarios.py)."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import timedelta

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from airagent.models import TrainState
from airagent.models.analysis import Phase
from interface.client import AirAgent
from tests.analysis_scenarios import Scenario, Soaks, judged_runs, soak_started
from tests.devserver import WorkerProcess, dev_server  # noqa: F401 - fixture

pytestmark = [pytest.mark.airflow, pytest.mark.devserver, pytest.mark.slow]

FLAKY, SLOWER = Scenario("flaky_unchanged", 1), Scenario("slower", 2)


@pytest.fixture(scope="module")
async def agent(dev_server, tmp_path_factory):
    """A worker process for the module, and a client on its task queue."""
    queue = f"analysis-{uuid.uuid4()}"
    env = {**os.environ, "TEMPORAL_ADDRESS": dev_server.address, "AIRAGENT_TASK_QUEUE": queue}
    worker = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    worker.start()
    try:
        yield AirAgent(await Client.connect(dev_server.address, data_converter=pydantic_data_converter), queue)
    finally:
        worker.stop()


@pytest.fixture(scope="module")
async def soaks(agent, tmp_path_factory):
    """The environment with both scenarios' DAGs and their history: the slow DAG's run alone, so its durations
    before are taken on an environment as quiet as during its soak; the flaky one's then, while tests start."""
    soaks = Soaks(tmp_path_factory.mktemp("scenarios"), [FLAKY, SLOWER], timedelta(seconds=36), timedelta(seconds=3))
    await asyncio.to_thread(soaks.up)
    try:
        await soaks.prepare(agent)
        soaks.trigger_history(SLOWER)
        await asyncio.to_thread(soaks.finish_history, SLOWER)
        soaks.trigger_history(FLAKY)
        yield soaks
    finally:
        soaks.down()


async def test_an_unchanged_dag_failing_a_third_of_its_runs_never_fails_the_train(agent, soaks):
    outcome = await soaks.run(agent, FLAKY, history=False)

    assert outcome.state == TrainState.succeeded, outcome.line()
    assert not outcome.held
    assert outcome.status is not None
    runs = judged_runs(soaks, FLAKY, soak_started(outcome.status))
    assert [run["state"] for run, _ in runs].count("failed") >= 1, "it failed during soak as it did before"
    verdicts = {m.metric: m.verdict for m in outcome.status.environment_status("staging").analysis}
    assert verdicts["changed_dags"] != Phase.failed, verdicts


async def test_a_changed_dag_three_times_slower_is_rolled_back_on_the_runs_its_smoke_started(agent, soaks):
    outcome = await soaks.run(agent, SLOWER, history=False)

    assert outcome.state == TrainState.rolled_back, outcome.line()
    assert outcome.reason.startswith("soak staging: changed_dags: failed"), outcome.reason
    assert f"{SLOWER.dag_id}: task work median" in outcome.reason and "Mann-Whitney U" in outcome.reason
    assert outcome.metric == "changed_dags" and outcome.intervals is not None and outcome.intervals <= 2
    assert outcome.status is not None
    [held] = outcome.status.held
    assert held.regression and SLOWER.dag_id in held.reason, held
    # What the judge read on the new version is what smoke started: runs that carry this train in their conf.
    runs = judged_runs(soaks, SLOWER, soak_started(outcome.status))
    assert len(runs) >= 5 and {version for _, version in runs} == {2}, runs
    assert {run["conf"]["airagent"]["train"] for run, _ in runs} == {outcome.train}, runs
    assert any(e.control == "smoke" and SLOWER.dag_id in e.message for e in outcome.status.events)
