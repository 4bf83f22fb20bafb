"""The soak analysis judging a real Airflow (tests/analysis_scenarios.py): a changed DAG three times slower is rolled
back on the runs its smoke started, an unchanged DAG failing a third of its runs as it always did is not; a changed
DAG nobody ran pauses the train for a person, and a scheduler that hangs on any release blames no commit."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import timedelta

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from airagent import example
from airagent.config import Notification
from airagent.models import Control, TrainState
from airagent.models.analysis import Phase
from interface.client import AirAgent
from tests.analysis_scenarios import Scenario, Soaks, judged_runs, soak_started
from tests.devserver import WorkerProcess, dev_server, until  # noqa: F401 - fixture
from tests.receiver import Receiver

pytestmark = [pytest.mark.airflow, pytest.mark.devserver, pytest.mark.slow]

FLAKY, SLOWER = Scenario("flaky_unchanged", 1), Scenario("slower", 2)
IDLE, HUNG = Scenario("idle", 3), Scenario("scheduler_hangs", 4)


@pytest.fixture(scope="module")
def hook():
    """Where the trains' notifications go."""
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
async def agent(dev_server, hook, tmp_path_factory):
    """A worker process for the module, and a client on its task queue."""
    queue = f"analysis-{uuid.uuid4()}"
    env = {**os.environ, "TEMPORAL_ADDRESS": dev_server.address, "AIRAGENT_TASK_QUEUE": queue, "HOOK_URL": hook.url}
    worker = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    worker.start()
    try:
        yield AirAgent(await Client.connect(dev_server.address, data_converter=pydantic_data_converter), queue)
    finally:
        worker.stop()


@pytest.fixture(scope="module")
async def soaks(agent, tmp_path_factory):
    """The environment with the scenarios' DAGs, and the flaky one's history run under way as tests start."""
    soaks = Soaks(tmp_path_factory.mktemp("scenarios"), [FLAKY, SLOWER], timedelta(seconds=36), timedelta(seconds=3))
    soaks.pipeline = soaks.pipeline.model_copy(
        update={"notifications": [Notification(type="webhook", url_env="HOOK_URL", on=["paused"])]}
    )
    await asyncio.to_thread(soaks.up)
    try:
        await soaks.prepare(agent)
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
    # Its history runs just before its train, so both versions' durations are taken on a host as busy: a task's
    # start-up is seconds of its duration, and more on a host loaded by other tests.
    outcome = await soaks.run(agent, SLOWER)

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


async def told(hook: Receiver) -> None:
    while not hook.received:
        await asyncio.sleep(0.2)


async def test_a_changed_dag_nobody_ran_pauses_the_train_until_a_person_approves(agent, soaks, hook):
    """Without smoke runs and with no schedule, the new DAG has no run to judge: `inconclusive: pause` asks."""
    sha = example.commit(soaks.repo, {IDLE.changed_path: IDLE.changed()}, f"{IDLE.name}: the change", "finance")
    train = await soaks.start(agent, sha, soaks.soak, smoke=False, inconclusive="pause")

    paused = await until(agent, train, lambda s: s.state == TrainState.paused or s.state.finished, timeout=400)
    assert paused.state == TrainState.paused, paused.reason
    assert paused.stage == "soak" and "inconclusive, waiting for approve or abort" in paused.stages[-1].detail
    judged = next(m for m in paused.environment_status("staging").analysis if m.metric == "changed_dags")
    assert judged.verdict == Phase.inconclusive and IDLE.dag_id in judged.line(), judged.line()
    # The notification is an activity after the pause is published; the only train that pauses is this one.
    await asyncio.wait_for(told(hook), timeout=60)
    assert [n["state"] for n in hook.received] == ["paused"], hook.received

    assert (await agent.control(train, "approve", Control(by="ops", reason="a new report, read it myself"))).accepted
    status = await agent.wait(train, timeout=timedelta(minutes=5))
    assert status.state == TrainState.succeeded, status.reason


async def test_a_scheduler_hung_on_any_release_fails_the_train_and_blames_no_commit(agent, soaks):
    outcome = await soaks.run(agent, HUNG, history=False)

    assert outcome.right, outcome.line()
    assert "staging is just as unwell on" in outcome.reason and "no commit is blamed" in outcome.reason
    assert outcome.metric == "health" and "scheduler" in outcome.reason, outcome.reason
    assert outcome.status is not None
    assert [s.name for s in outcome.status.stages][-2:] == ["rollback", "confirm"]
