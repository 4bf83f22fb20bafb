"""Record workflow histories for the replay test: run by hand when workflow code changes on purpose.

    .venv/bin/python -m tests.histories.record

The bisection histories (conductor_bisection, train_bisection_step, train_held_back_after_bisection)
come from the run of tests/test_conductor.py's bisection test, fetched at its end.

Keep the old files too (rename them with a version suffix) when a change needs
`workflow.patched`: replaying them proves running workflows survive the new code.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from airagent import example
from airagent.config import EnvironmentSettings, LocalTarget, PipelineSettings
from airagent.devserver import binary, register_search_attributes
from airagent.models import Control
from interface.client import AirAgent
from tests.conftest import start_train
from worker.main import ACTIVITIES, WORKFLOWS

HERE = Path(__file__).parent


def pipeline(root: Path, soak: str) -> PipelineSettings:
    return PipelineSettings(
        name="main",
        repo=str(root / "repo"),
        poll_interval="1m",
        environments=[
            EnvironmentSettings(
                name=n, target=LocalTarget(path=root / "envs" / n, airflow=False), soak=soak, probe_interval="10m"
            )
            for n in ("staging", "prod")
        ],
    )


async def settle(env: WorkflowEnvironment, wf_id: str) -> None:
    handle = env.client.get_workflow_handle(wf_id)
    while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        await env.sleep(timedelta(minutes=1))


async def save(env: WorkflowEnvironment, wf_id: str, name: str) -> None:
    history = await env.client.get_workflow_handle(wf_id).fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}.json ({len(history.events)} events)")


async def main() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    queue = f"record-{uuid.uuid4()}"
    async with env:
        with ThreadPoolExecutor(4) as executor, tempfile.TemporaryDirectory() as tmp:
            async with Worker(
                env.client, task_queue=queue, workflows=WORKFLOWS, activities=ACTIVITIES, activity_executor=executor
            ):
                agent = AirAgent(env.client, queue)
                root = Path(tmp)
                repo = example.create(root / "repo", root / "envs")

                soaky = pipeline(root, soak="30m")
                first = await start_train(agent, soaky, repo.head.commit.hexsha)
                await settle(env, first.id)
                await save(env, first.id, "train_succeeded")

                sha = example.commit(repo, {"plugins/example_plugin.py": "# v2\n"}, "plugin v2")
                handle = await start_train(agent, soaky, sha)
                while (await agent.status(handle.id)).stage != "soak":
                    await env.sleep(timedelta(seconds=20))
                await agent.control(handle.id, "pause", Control(by="ops", reason="look"))
                await agent.control(handle.id, "resume", Control(by="ops"))
                await agent.control(handle.id, "abort", Control(by="ops", reason="pager"))
                await settle(env, handle.id)
                await save(env, handle.id, "train_aborted")

                # All or nothing, so the broken commit fails its train instead of being held back.
                quick = pipeline(root, soak="0s").model_copy(update={"isolation": False})
                conductor = await agent.start_pipeline(quick)
                broken = example.commit(repo, {example.BROKEN_PATH: example.BROKEN_DAG}, "break", "marketing")
                await agent.notify(quick, broken)
                while broken not in (await agent.pipeline_status("main")).state.failed:
                    await env.sleep(timedelta(seconds=20))
                await save(env, f"train/main/{broken[:12]}", "train_failed_validate")
                fix = example.commit(
                    repo, {example.BROKEN_PATH: example.dag_file("orders_hourly", tasks=5)}, "fix", "marketing"
                )
                await agent.control(conductor.id, "pause", Control(by="ops"))
                await agent.control(conductor.id, "resume", Control(by="ops"))
                await agent.notify(quick, fix)
                while (await agent.pipeline_status("main")).state.last_deployed != fix:
                    await env.sleep(timedelta(seconds=20))
                await save(env, conductor.id, "conductor")
                await conductor.terminate("recorded")


if __name__ == "__main__":
    asyncio.run(main())
