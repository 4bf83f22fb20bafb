"""Shared fixtures: a real time-skipping Temporal server, real git repositories, a real Airflow runtime."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.validation import cache as validation_cache
from airagent import example
from airagent.config import EnvironmentSettings, LocalTarget, PipelineSettings
from airagent.devserver import binary, register_search_attributes
from airagent.models import ConductorStatus, TrainInput, TrainStatus, train_id
from interface.client import AirAgent
from tests.ports import free_port
from worker.main import ACTIVITIES, WORKFLOWS
from workflows.train import DeployTrain

ROOT = Path(__file__).resolve().parent.parent
# Shared across runs so the Airflow runtime is built once, then reused by hash.
os.environ["AIRAGENT_HOME"] = str(ROOT / ".airagent" / "test-home")


# The files that start real Airflow, each in one of three lanes: pytest-xdist runs a lane's files one after
# another in one process, as more Airflows starting side by side on two cores miss their health deadlines
# (with four, the suite took longer). They are balanced by measured times, 11 to 15 minutes each in a loaded
# suite of 16 to 18: the longest is the suite's critical path.
AIRFLOW_LANES = {
    "tests/test_soak.py": "airflow-1",
    "tests/test_analysis_airflow.py": "airflow-1",
    "tests/test_space_in_path.py": "airflow-1",
    "tests/test_local_airflow.py": "airflow-2",
    "tests/test_preview.py": "airflow-2",
    "tests/test_analysis_scenarios.py": "airflow-3",
    "tests/test_kubernetes_confirm.py": "airflow-3",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Airflow lanes' files are collected first. xdist's loadscope then orders the work by its number of tests,
    keeping this order only between equals, so the lanes start among the other files: starting all three with the
    slow files at once overloaded two cores (Airflow tasks failed and soaks saw no runs)."""
    for item in items:
        if item.get_closest_marker("airflow") and _file(item.nodeid) not in AIRFLOW_LANES:
            raise pytest.UsageError(f"{_file(item.nodeid)} starts real Airflow: give it a lane in AIRFLOW_LANES")
    items.sort(key=lambda item: _file(item.nodeid) not in AIRFLOW_LANES)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under pytest-xdist, each file's tests run in one process, so its module fixtures are made once, and each
    Airflow lane's files in one process (see AIRFLOW_LANES)."""
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return AIRFLOW_LANES.get(_file(nodeid), _file(nodeid))

    return Lanes(config, log)


def _file(nodeid: str) -> str:
    return nodeid.split("::")[0]


def airflow_ports(count: int = 5) -> int:
    """The first of `count` free ports for a local Airflow (five; six with metrics): two test processes never pick
    the same ones, as an environment binds them only seconds after they were found free."""
    return free_port(count)


@pytest.fixture
async def temporal_env():
    """A time-skipping server of the test's own (a fifth of a second to start). On a shared one, what a test left
    stopped the skipping for every test after it, which then slept its skipped hours in real time: a workflow left
    open (a conductor, a train it stopped watching) whose tasks no worker takes once the test's worker is gone, or
    a time-skipping lock the server keeps for good (an activity outstanding when its workflow closed,
    temporalio/sdk-java#1138)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await register_search_attributes(env.client)
    async with env:
        yield env


@pytest.fixture
def client(temporal_env) -> Client:
    return temporal_env.client


@asynccontextmanager
async def running_worker(client: Client, activities: list = ACTIVITIES):
    """A worker on a task queue of its own, and an AirAgent client that targets it."""
    queue = f"test-{uuid.uuid4()}"
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(
            client, task_queue=queue, workflows=WORKFLOWS, activities=activities, activity_executor=executor
        ):
            yield AirAgent(client, queue)


async def start_train(agent: AirAgent, pipeline: PipelineSettings, sha: str, image: str | None = None):
    """Start a train directly, as the conductor would: for tests of the train on its own."""
    return await agent.client.start_workflow(
        DeployTrain.run,
        TrainInput(pipeline=pipeline, target=sha, image=image),
        id=train_id(pipeline.name, sha),
        task_queue=agent.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )


async def current_details(agent: AirAgent, wf_id: str) -> str:
    """What a person reads under a workflow's current details in the Web UI, once its Markdown is rendered."""
    meta = await agent.client.get_workflow_handle(wf_id).query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    return read(MarkdownIt("gfm-like").parse(meta.current_details))


def read(tokens: list) -> str:
    """The text of rendered Markdown: each block's words, code and fences, a block a line."""
    return "\n".join(
        "".join(c.content for c in t.children or []) if t.type == "inline" else t.content
        for t in tokens
        if t.type in ("inline", "fence")
    )


@pytest.fixture
async def agent(client):
    async with running_worker(client) as agent:
        yield agent


class Drive:
    """Moves the test server's clock along while a test waits on a train.

    The time-skipping server stops skipping once an activity has run while a client
    long-polls a result, so tests sleep on skipped time in steps instead.
    """

    def __init__(self, env: WorkflowEnvironment, agent: AirAgent):
        self.env, self.agent = env, agent

    async def until(self, wf_id: str, predicate, step: timedelta = timedelta(seconds=20)) -> TrainStatus:
        return await self._poll(lambda: self.agent.status(wf_id), predicate, step, wf_id)

    async def pipeline_until(self, name: str, predicate, step: timedelta = timedelta(seconds=20)) -> ConductorStatus:
        return await self._poll(lambda: self.agent.pipeline_status(name), predicate, step, f"pipeline {name}")

    async def _poll(self, read, predicate, step: timedelta, what: str, steps: int = 500):
        status = None
        for _ in range(steps):
            try:
                # Bounded too: the test server was seen to hold a query to a loaded worker without end.
                status = await asyncio.wait_for(read(), timeout=60)
            except (RPCError, TimeoutError):  # a query the busy worker did not answer in time
                await asyncio.sleep(1)
                continue
            if predicate(status):
                return status
            await self.skip(step)
        raise AssertionError(f"{what} never got there; last status: {status}")

    async def skip(self, duration: timedelta) -> None:
        """Let `duration` of the server's time pass: a loaded host's skip can fail or hang, so each is bounded and
        the time is read again until it has passed."""
        until = None
        for _ in range(100):
            try:
                now = await asyncio.wait_for(self.env.get_current_time(), timeout=60)
                until = until or now + duration
                if now >= until:
                    return
                await asyncio.wait_for(self.env.sleep(until - now), timeout=60)
            except (RPCError, TimeoutError):
                await asyncio.sleep(1)
        raise AssertionError(f"the server's clock did not pass {duration} in time")

    async def finish(self, wf_id: str) -> TrainStatus:
        """The train's outcome once its run has closed: it tells its receivers after its state is final."""
        handle = self.agent.client.get_workflow_handle(wf_id)
        await self._poll(handle.describe, _closed, timedelta(minutes=1), wf_id)
        return await self.agent.status(wf_id)


def _closed(description: WorkflowExecutionDescription) -> bool:
    return description.status != WorkflowExecutionStatus.RUNNING


@pytest.fixture
def drive(temporal_env, agent) -> Drive:
    return Drive(temporal_env, agent)


@pytest.fixture
def monorepo(tmp_path):
    return example.create(tmp_path / "repo", tmp_path / "envs")


def make_pipeline(
    repo,
    envs_dir: Path,
    soak: str = "0s",
    probe_interval: str = "10s",
    environments: tuple[str, ...] = ("staging", "prod"),
    **settings,
) -> PipelineSettings:
    """The example's pipeline, `main`, with its environments under `envs_dir`.

    They are files only (no Airflow components), which is all the orchestration tests need;
    tests/test_local_airflow.py and tests/test_soak.py run real Airflow.
    """
    return PipelineSettings(
        name="main",
        repo=str(repo.working_tree_dir),
        environments=[
            EnvironmentSettings(
                name=name,
                target=LocalTarget(path=envs_dir / name, airflow=False),
                soak=soak,
                probe_interval=probe_interval,
            )
            for name in environments
        ],
        **settings,
    )


@pytest.fixture
def pipeline(monorepo, tmp_path):
    return make_pipeline(monorepo, tmp_path / "envs")


def link_runtime(runtime: Path, home: Path) -> None:
    """`runtime` in state directory `home` as if built there: hard links, as a sandbox cannot follow a symlink out
    of it, and a build is half a minute of both cores."""
    if not (home / "runtimes" / runtime.name).exists():
        shutil.copytree(runtime, home / "runtimes" / runtime.name, symlinks=True, copy_function=os.link)


@contextmanager
def state_home(path: Path, empty: bool = True) -> Iterator[Path]:
    """AIRAGENT_HOME at `path` for a while. With `empty`, its validation cache is emptied first, on disk and in
    this process's memory of it, while its warm parsers (seconds each to start) stay up for the next use."""
    if empty:
        shutil.rmtree(path / "validation-cache", ignore_errors=True)
        gone = path.resolve() / "validation-cache" / "files"
        for remembered in [k for k in validation_cache._remembered if k[0] == gone]:
            del validation_cache._remembered[remembered]
    before = os.environ["AIRAGENT_HOME"]
    os.environ["AIRAGENT_HOME"] = str(path)
    try:
        yield path
    finally:
        os.environ["AIRAGENT_HOME"] = before
