"""Record a Preview's history for the replay test: run by hand when the Preview workflow changes on purpose.

    .venv/bin/python -m tests.histories.record_preview local        # a local preview: real Airflow starts
    .venv/bin/python -m tests.histories.record_preview kubernetes   # a namespace on the API emulator

Each preview is started on a dev server (in real time: a preview polls its branch every 2 s), serves its
branch, takes a DAG-only commit, is extended and taken down. Keep the files recorded before a change (a
version suffix), as record.py says.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from airagent import example
from airagent.config import PipelineSettings, host_queue
from airagent.connection import host_name
from airagent.devserver import binary, register_search_attributes
from airagent.models import Control, Extend, PreviewInput, PreviewState, preview_id
from interface.client import AirAgent
from tests.conftest import make_pipeline
from tests.histories.record import save
from worker.main import ACTIVITIES, WORKFLOWS
from workflows.preview import Preview


async def until(agent: AirAgent, predicate, timeout: float = 600) -> None:
    status = None
    for _ in range(int(timeout)):
        status = await agent.preview_status("main", "feat")
        if predicate(status):
            return
        await asyncio.sleep(1)
    raise TimeoutError(f"the preview never got there: {status}")


async def record(kind: str, pipeline_of) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    queue = f"record-{uuid.uuid4()}"
    async with env:
        with ThreadPoolExecutor(4) as executor, tempfile.TemporaryDirectory() as tmp:
            async with (
                Worker(
                    env.client, task_queue=queue, workflows=WORKFLOWS, activities=ACTIVITIES, activity_executor=executor
                ),
                # A local preview's activities go to its host's queue, as a real worker polls it.
                Worker(
                    env.client,
                    task_queue=host_queue(queue, host_name()),
                    activities=ACTIVITIES,
                    activity_executor=executor,
                ),
            ):
                agent = AirAgent(env.client, queue)
                root = Path(tmp)
                repo = example.create(root / "repo", root / "envs", airflow=False)
                with pipeline_of(repo, root) as pipeline:
                    repo.git.checkout("-b", "feat")
                    example.commit(repo, {"dags/marketing/feat.py": example.dag_file("feat")}, "feat", "marketing")
                    handle = await env.client.start_workflow(
                        Preview.run,
                        PreviewInput(pipeline=pipeline, branch="feat", ttl=timedelta(hours=1)),
                        id=preview_id("main", "feat"),
                        task_queue=queue,
                    )
                    await until(agent, lambda s: s.state == PreviewState.serving)
                    newer = example.commit(
                        repo, {"dags/marketing/feat2.py": example.dag_file("feat2")}, "feat2", "marketing"
                    )
                    await until(agent, lambda s: s.commit == newer)
                    await handle.execute_update("extend", Extend(ttl=timedelta(hours=2), by="ana"))
                    await handle.execute_update(Preview.down, Control(by="ana", reason="recorded"))
                    await handle.result()
                    await save(env, handle.id, f"preview_{kind}")


class _Local:
    def __init__(self, repo, root: Path):
        self.pipeline = make_pipeline(repo, root / "envs", environments=("staging",))
        self.pipeline = self.pipeline.model_copy(
            update={"previews": self.pipeline.previews.model_copy(update={"poll_interval": timedelta(seconds=2)})}
        )

    def __enter__(self) -> PipelineSettings:
        return self.pipeline

    def __exit__(self, *exc) -> None:
        pass


class _Kubernetes:
    def __init__(self, repo, root: Path):
        from tests.kube import cluster as kube
        from tests.test_kubernetes_train import kube_pipeline, run_validator_jobs

        self.emulated = kube.emulated(delay=0.1, progress_deadline=5)
        cluster = self.emulated.__enter__()
        pipeline = kube_pipeline(repo, kube.kubeconfig(root / "kubeconfig", cluster.emulator.host))
        run_validator_jobs(cluster, pipeline, repo)
        self.pipeline = pipeline.model_copy(
            update={"previews": pipeline.previews.model_copy(update={"poll_interval": timedelta(seconds=2)})}
        )

    def __enter__(self) -> PipelineSettings:
        return self.pipeline

    def __exit__(self, *exc) -> None:
        self.emulated.__exit__(*exc)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "local"
    asyncio.run(record(which, {"local": _Local, "kubernetes": _Kubernetes}[which]))
