"""Soak against real Airflow: on the dev server, with the worker as a real process that can be killed."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from activities.runtime import ensure_runtime
from activities.targets.local_airflow import LocalAirflow
from airagent import example
from airagent.config import EnvironmentSettings, LocalTarget
from airagent.models import TrainState, train_id
from airagent.models.analysis import Phase
from tests.conftest import airflow_ports, make_pipeline
from tests.test_devserver import WorkerProcess, agent, cli_env, dev_server, until  # noqa: F401 - fixtures
from tests.test_local_airflow import wait_for

pytestmark = [pytest.mark.airflow, pytest.mark.devserver, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A monorepo and one real, running Airflow environment (staging) for the module."""
    root = tmp_path_factory.mktemp("soak")
    repo = example.create(root / "repo", root / "envs")
    settings = EnvironmentSettings(
        name="staging",
        soak="25s",
        probe_interval="3s",
        target=LocalTarget(
            path=root / "envs" / "staging", port=airflow_ports(), drain_timeout="30s", live_timeout="90s"
        ),
    )
    pipeline = make_pipeline(repo, root / "envs").model_copy(update={"environments": [settings]})
    env = LocalAirflow("staging", settings.target, settings.probes)
    env.up(ensure_runtime(pipeline.runtime, None)[1])
    yield repo, pipeline, env
    env.down()


@pytest.fixture(autouse=True)
def ready(world):
    """Each test starts on a head without the failing DAG and with every component running, whatever the test
    before it left."""
    repo, _, env = world
    if (Path(repo.working_tree_dir) / example.FAILING_PATH).exists():
        example.commit(repo, {example.FAILING_PATH: None}, "tests: remove the failing DAG", "platform")
    if not env.running():
        env.up()


@pytest.fixture
def worker(cli_env, tmp_path):
    w = WorkerProcess(cli_env, tmp_path / "worker.log")
    w.start()
    yield w
    w.stop()


async def deploy(agent, pipeline, sha, predicate=lambda s: s.state.finished, timeout=400):
    await agent.deploy(pipeline, sha)
    return await until(agent, train_id(pipeline.name, sha), predicate, timeout=timeout)


def rolls_of(env: LocalAirflow, release: str) -> int:
    return sum(1 for s in env.files.record().history if s.action == "roll" and s.release == release)


async def test_first_train_then_a_runtime_failing_commit_is_rolled_back_by_soak(agent, worker, world):
    repo, pipeline, env = world
    first = await deploy(agent, pipeline, repo.head.commit.hexsha)
    assert first.state == TrainState.succeeded, first.reason
    good = env.files.live()

    sha = example.commit(
        repo, {example.FAILING_PATH: example.FAILING_DAG}, "marketing: check the orders feed", "marketing"
    )
    status = await deploy(agent, pipeline, sha)

    assert status.state == TrainState.rolled_back, status.reason
    assert status.reason.startswith("soak staging: changed_dags: failed"), status.reason
    assert "orders_feed_check: failure rate" in status.reason and "fails after 2 failed" in status.reason
    assert env.files.live().id == good.id
    staging = status.environment_status("staging")
    verdicts = {m.metric: m.verdict for m in staging.analysis}
    assert staging.state == "rolled_back" and verdicts["changed_dags"] == Phase.failed, verdicts
    # On a loaded host the DAG's second failure can come only at the soak's end, when the others conclude.
    assert {verdicts["health"], verdicts["components"]} <= {Phase.running, Phase.successful}, verdicts
    assert env.running()
    history = (await agent.client.get_workflow_handle(train_id("main", sha)).fetch_history()).to_json()
    for secret in ("api-login", "jwt-secret"):
        assert (env.secrets / secret).read_text().split(":")[-1].strip() not in history
    [held] = status.held
    assert (held.sha, held.regression) == (sha, True) and "orders_feed_check" in held.reason

    # Airflow marks the rolled-back DAG stale once its processor lists the folder again (seconds): from then on,
    # its runs still under way fail outside any release's soak, which the next train's probe leaves out.
    with env.api() as api:
        wait_for(lambda: not api.deployed("orders_feed_check"), 60, "Airflow to stop serving the rolled-back DAG")
    # The next train leaves the regressing commit out and deploys the other team's change.
    fx = example.commit(repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=4)}, "fx", "finance")
    after = await deploy(agent, pipeline, fx)
    assert after.state == TrainState.succeeded and [h.sha for h in after.held] == [sha], after.reason
    live = env.files.current / "dags"
    assert (live / "finance/fx_rates.py").read_text() == example.dag_file("fx_rates", tasks=4)
    assert not (live / example.FAILING_PATH.removeprefix("dags/")).exists()
    repo.git.revert(sha, no_edit=True)


async def test_a_component_killed_during_soak_rolls_back(agent, worker, world):
    repo, pipeline, env = world
    before = env.files.live()
    sha = example.commit(repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=5)}, "fx", "finance")
    await deploy(agent, pipeline, sha, lambda s: s.stage == "soak")
    os.kill(env.processes()["triggerer"].pid, signal.SIGKILL)

    status = await until(agent, train_id("main", sha), lambda s: s.state.finished, timeout=300)

    assert status.state == TrainState.rolled_back, status.reason
    assert "components: failed — not running: triggerer" in status.reason
    assert [s.name for s in status.stages][-2:] == ["rollback", "confirm"], "read again on the release before"
    assert env.files.live().id == before.id
    assert env.running(), "the rollback brings every component back"


async def test_worker_killed_during_soak_resumes_and_rolls_once(agent, worker, world):
    repo, pipeline, env = world
    sha = example.commit(
        repo, {"dags/finance/ledger_daily.py": example.dag_file("ledger_daily", tasks=6)}, "ledger", "finance"
    )
    soaking = await deploy(agent, pipeline, sha, lambda s: s.stage == "soak" and s.state == TrainState.running)
    pids = {name: p.pid for name, p in env.processes().items()}
    worker.kill()
    assert env.running(), "Airflow does not depend on the worker"
    worker.start()

    status = await until(agent, train_id("main", sha), lambda s: s.state.finished, timeout=300)

    assert status.state == TrainState.succeeded, status.reason
    assert rolls_of(env, soaking.release) == 1
    assert {name: p.pid for name, p in env.processes().items()} == pids
    wait_for(env.running, 5, "components still running")


async def test_an_api_server_stalled_for_one_reading_rolls_nothing_back_and_holds_nothing(agent, worker, world):
    repo, pipeline, env = world
    sha = example.commit(repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=7)}, "fx", "finance")
    await deploy(agent, pipeline, sha, lambda s: s.stage == "soak" and s.state == TrainState.running)
    api_server = env.processes()["api-server"].pid
    os.killpg(api_server, signal.SIGSTOP)  # its whole group: gunicorn's workers answer, not the master
    try:
        # Longer than a probe's 10 s timeout and the 3 s between rounds, so a round errs whenever it began;
        # shorter than the three rounds in a row it would take to roll back.
        await asyncio.sleep(20)
    finally:
        os.killpg(api_server, signal.SIGCONT)

    status = await until(agent, train_id("main", sha), lambda s: s.state.finished, timeout=300)

    assert status.state == TrainState.succeeded, status.reason
    health = next(m for m in status.environment_status("staging").analysis if m.metric == "health")
    assert health.errors >= 1 and health.verdict == Phase.successful, health.line()
    assert not status.held
