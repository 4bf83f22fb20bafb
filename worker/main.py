"""The worker process: registers the train and its activities, and shuts down without cutting an activity short."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.common import VersioningBehavior
from temporalio.worker import Worker, WorkerDeploymentConfig, WorkerDeploymentVersion

from activities.announce import announce
from activities.build import build
from activities.clock import read_clock
from activities.diff import diff
from activities.gc import collect_garbage
from activities.holdback import hold_back
from activities.poll import poll_branch
from activities.preview import (
    check_branch,
    drop_preview_dag_ref,
    preview_environment,
    start_preview,
    teardown_preview,
)
from activities.roll import read_marker, roll, rollback
from activities.soak import soak_check, soak_smoke
from activities.validate import validate
from airagent.config import host_queue
from airagent.connection import connect, host_name, task_queue
from worker import metrics
from worker.janitor import sweeping
from worker.telemetry import tracing_interceptors
from workflows.conductor import Conductor
from workflows.environment_rollback import EnvironmentRollback
from workflows.preview import Preview
from workflows.train import DeployTrain

WORKFLOWS = [DeployTrain, Conductor, EnvironmentRollback, Preview]
ACTIVITIES: list[Callable[..., Any]] = [
    diff,
    build,
    validate,
    hold_back,
    roll,
    rollback,
    soak_check,
    soak_smoke,
    poll_branch,
    read_clock,
    announce,
    read_marker,
    collect_garbage,
    preview_environment,
    start_preview,
    check_branch,
    teardown_preview,
    drop_preview_dag_ref,
]
# Long enough for a build or a DAG parse to finish when the worker is asked to stop.
GRACEFUL_SHUTDOWN = timedelta(minutes=5)
ACTIVITY_THREADS = 8


def deployment() -> WorkerDeploymentConfig | None:
    """Worker Versioning, on when AIRAGENT_DEPLOYMENT names the deployment (see docs/upgrading.md)."""
    name = os.environ.get("AIRAGENT_DEPLOYMENT")
    if not name:
        return None
    build_id = os.environ.get("AIRAGENT_BUILD_ID")
    if not build_id:
        raise SystemExit(
            "AIRAGENT_DEPLOYMENT is set but AIRAGENT_BUILD_ID is not; set it to this worker's "
            "version, e.g. the git sha of the airagent release"
        )
    # Pinned: a train finishes on the code it started with; the conductor moves between trains
    # by continuing as new on the current version.
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(deployment_name=name, build_id=build_id),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


def new_worker(client: Client, queue: str, executor: ThreadPoolExecutor, *, activities_only: bool = False) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        workflows=[] if activities_only else WORKFLOWS,
        activities=ACTIVITIES,
        activity_executor=executor,
        max_concurrent_activities=ACTIVITY_THREADS,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        deployment_config=deployment(),
    )


async def serve(queue: str | None = None) -> None:
    """Poll the shared queue, and this host's, where host-bound environments' activities wait for it."""
    address = metrics.bind_address()
    metrics_runtime = metrics.runtime(address) if address else None
    client = await connect(interceptors=tracing_interceptors(), runtime=metrics_runtime)
    queue = queue or task_queue()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as executor:
        worker = new_worker(client, queue, executor)
        on_host = new_worker(client, host_queue(queue, host_name()), executor, activities_only=True)
        version = worker.config().get("deployment_config")
        logging.getLogger("airagent").info(
            "worker polling task queues %s and %s%s",
            queue,
            on_host.task_queue,
            f" as {version.version}" if version else " (unversioned)",
        )
        if address:
            logging.getLogger("airagent").info("metrics for Prometheus at http://%s/metrics", address)
        meter = metrics_runtime.metric_meter if metrics_runtime else None
        async with worker, on_host, sweeping(), metrics.dora_gauges(client, meter):
            await stop.wait()
            logging.getLogger("airagent").info("stopping: waiting for running activities")
