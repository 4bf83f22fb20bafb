"""What the tests on the real dev server share: the server, worker processes, the CLI, and waits with deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from airagent.devserver import DevServer, binary
from interface.client import AirAgent, NotFound
from tests.ports import free_port


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory):
    server = DevServer(tmp_path_factory.mktemp("temporal"), port=free_port(), ui_port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cli_env(dev_server, tmp_path) -> dict[str, str]:
    return {**os.environ, "TEMPORAL_ADDRESS": dev_server.address, "AIRAGENT_TASK_QUEUE": f"q-{tmp_path.name}"}


@pytest.fixture
async def agent(dev_server, cli_env):
    """A client on the test's task queue; the conductors its deploys started end with the test."""
    client = await Client.connect(dev_server.address, data_converter=pydantic_data_converter)
    yield AirAgent(client, cli_env["AIRAGENT_TASK_QUEUE"])
    await end_conductors(client, cli_env["AIRAGENT_TASK_QUEUE"])


async def end_conductors(client: Client, queue: str) -> None:
    """Tests run one after another, so `pipeline/main` is this test's, whether or not visibility shows it yet."""
    query = f"WorkflowType = 'Conductor' AND ExecutionStatus = 'Running' AND TaskQueue = '{queue}'"
    ids = {"pipeline/main"} | {execution.id async for execution in client.list_workflows(query)}
    for wf_id in ids:
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(wf_id).terminate("test over")


class WorkerProcess:
    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None
        self.began = 0  # the log's size when the worker started last

    def start(self) -> None:
        self.began = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [binary("airagent"), "worker"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def polling(self, timeout: float = 120) -> None:
        """Once the worker started last says it polls its queues: on a loaded host, starting takes seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while b"polling task queues" not in self.log.read_bytes()[self.began :]:
            if loop.time() > deadline:
                raise TimeoutError(f"the worker did not poll within {timeout} s; see {self.log}")
            await asyncio.sleep(0.2)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)


@pytest.fixture
def worker(cli_env, tmp_path):
    w = WorkerProcess(cli_env, tmp_path / "worker.log")
    w.start()
    yield w
    w.stop()


def airagent(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([binary("airagent"), *args], env=env, capture_output=True, text=True, timeout=600)


async def until(agent: AirAgent, wf_id: str, predicate, timeout: float = 300, since: datetime | None = None):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    status = None
    while loop.time() < deadline:
        try:
            status = await agent.status(wf_id, since)
        except NotFound:
            status = None  # not started yet
        except RPCError:  # a query no worker answered in time: one killed, or busy
            await asyncio.sleep(1)
            continue
        if status and predicate(status):
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"{wf_id} never got there; last status {status}")


async def until_pipeline(agent: AirAgent, predicate, timeout: float = 300):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    status = None
    while loop.time() < deadline:
        try:
            status = await agent.pipeline_status("main")
        except NotFound:
            status = None  # between runs, across continue-as-new
        if status and predicate(status):
            return status
        await asyncio.sleep(0.3)
    raise AssertionError(f"pipeline main never got there; last status {status}")
