"""Record histories under faults for the replay test: run by hand when workflow code changes on purpose.

    .venv/bin/python -m tests.histories.record_faults

On a dev server of its own, with `airagent worker` as a process that is SIGKILLed:

- `train_under_faults`: a train whose worker is killed as it starts (its first workflow
  task or `diff` in flight) and during the soak's timer, paused while soaking across
  another kill, resumed, and whose server restarts;
- `conductor_window_under_faults`: a conductor holding a deploy in a deny window, its worker
  killed while it naps, then starting the train once the window closes.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from airagent import example
from airagent.config import DeployWindow, load_pipeline
from airagent.devserver import DevServer, free_ports, register_search_attributes
from airagent.models import Control
from interface.client import AirAgent
from tests.devserver import WorkerProcess

HERE = Path(__file__).parent


async def until(check, every: float = 0.2, timeout: float = 300) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(every)


async def crash(worker: WorkerProcess, down: float = 1.0) -> None:
    worker.kill()
    await asyncio.sleep(down)
    worker.start()


async def save(agent: AirAgent, wf_id: str, name: str) -> None:
    history = await agent.client.get_workflow_handle(wf_id).fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}.json ({len(history.events)} events)")


async def train_under_faults(agent: AirAgent, server: DevServer, worker: WorkerProcess, root: Path) -> None:
    example.create(root / "repo", root / "envs", soak="20s", probe_interval="1s", airflow=False)
    pipeline = load_pipeline("main", root / "repo" / "airagent.yaml")
    train = (await agent.deploy(pipeline)).train

    async def at(stage: str, environment: str | None = None) -> bool:
        status = await agent.status(train)
        return status.stage == stage and (environment is None or status.environment == environment)

    await crash(worker)
    await until(lambda: at("soak", "staging"))
    await asyncio.sleep(3)
    await crash(worker, down=2)
    await until(lambda: at("soak", "prod"))
    await agent.control(train, "pause", Control(by="ops", reason="look closer"))
    await crash(worker)
    await asyncio.sleep(5)
    assert (await agent.control(train, "resume", Control(by="ops"))).accepted
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)
    await agent.wait(train, timeout=timedelta(minutes=3))
    await save(agent, train, "train_under_faults")
    await agent.client.get_workflow_handle("pipeline/main").terminate("recorded")


async def conductor_window_under_faults(agent: AirAgent, worker: WorkerProcess, root: Path) -> None:
    example.create(
        root / "windowed" / "repo", root / "windowed" / "envs", soak="0s", airflow=False, pipeline="windowed"
    )
    pipeline = load_pipeline("windowed", root / "windowed" / "repo" / "airagent.yaml")
    now = datetime.now(UTC)
    pipeline.windows = [
        DeployWindow(kind="deny", name="recording freeze", cron=f"{now.minute} {now.hour} * * *", duration="2m")
    ]
    answer = await agent.deploy(pipeline)
    await asyncio.sleep(5)
    await crash(worker, down=3)
    await agent.wait(answer.train, timeout=timedelta(minutes=4))
    await save(agent, "pipeline/windowed", "conductor_window_under_faults")
    await agent.client.get_workflow_handle("pipeline/windowed").terminate("recorded")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="airagent-record-") as tmp:
        root = Path(tmp)
        server = DevServer(root / "temporal", port=free_ports(), ui_port=free_ports(first=21000))
        server.start()
        env = {**os.environ, "TEMPORAL_ADDRESS": server.address, "AIRAGENT_TASK_QUEUE": f"record-{uuid.uuid4()}"}
        worker = WorkerProcess(env, root / "worker.log")
        try:
            await register_search_attributes(await Client.connect(server.address))
            agent = AirAgent(
                await Client.connect(server.address, data_converter=pydantic_data_converter), env["AIRAGENT_TASK_QUEUE"]
            )
            worker.start()
            await train_under_faults(agent, server, worker, root)
            await conductor_window_under_faults(agent, worker, root)
        finally:
            worker.stop()
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
