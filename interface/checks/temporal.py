"""Checks against the Temporal server: reachable, search attributes registered, workers polling, conductors running."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType, TaskQueueKind, TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.envconfig import ClientConfig
from temporalio.service import RPCError, RPCStatusCode

from airagent import search_attributes
from airagent.config import PipelineSettings, host_queue
from airagent.connection import connect
from airagent.models import conductor_id
from interface.checks import Check, command

CONNECT_TIMEOUT = 15.0
RPC_TIMEOUT = timedelta(seconds=10)
# The server lists a poller for minutes after its worker is gone; a live worker's long poll (about a minute)
# renews its entry, so an older one is a worker that stopped.
LIVE_POLLER = timedelta(minutes=2)
_OS_MESSAGE = re.compile(r'message: "([^"]+)"')
IDLE = "nothing follows the branch"
REACH_FIX = (
    "start a dev server with `airagent dev`, or point TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and TEMPORAL_API_KEY "
    "(or a `temporal config` profile, TEMPORAL_PROFILE) at yours"
)


async def reachable() -> tuple[Check, Client | None]:
    """Connect as the worker and the CLI do; the client for the checks that follow, or None."""
    try:
        client = await asyncio.wait_for(connect(), CONNECT_TIMEOUT)
    except TimeoutError:
        return Check("temporal", "fail", f"{_configured()}: no answer within {CONNECT_TIMEOUT:.0f} s", REACH_FIX), None
    except Exception as err:  # TemporalUnreachable, or a profile envconfig cannot read
        return Check("temporal", "fail", f"{_configured()}: {_reason(err)}", REACH_FIX), None
    settings = client.service_client.config
    detail = f"{settings.target_host}, namespace {client.namespace}, TLS {'on' if settings.tls else 'off'}"
    return Check("temporal", "ok", detail), client


def _reason(err: Exception) -> str:
    """The OS's words from the SDK's transport error (`Connection refused`), else the whole message."""
    found = _OS_MESSAGE.search(str(err))
    return found.group(1) if found else str(err)


def _configured() -> str:
    """Where the connection points, for a failure that happened before any client existed."""
    try:
        found = ClientConfig.load_client_connect_config()
    except Exception as err:
        return f"(the connection settings do not load: {err})"
    tls = "on" if found.get("tls") else "off"
    return f"{found.get('target_host', 'localhost:7233')}, namespace {found.get('namespace', 'default')}, TLS {tls}"


async def search_attributes_check(client: Client) -> Check:
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace), timeout=RPC_TIMEOUT
    )
    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    missing = [k.name for k in search_attributes.ALL if listed.custom_attributes.get(k.name) != keyword]
    if missing:
        creates = "; ".join(
            f"`temporal operator search-attribute create --namespace {client.namespace} --name {name} --type Keyword`"
            for name in missing
        )
        return Check(
            "search attributes",
            "fail",
            f"not registered as Keyword in namespace {client.namespace}: {', '.join(missing)}",
            f"{creates} (`airagent dev` registers them on its own server)",
        )
    return Check("search attributes", "ok", ", ".join(k.name for k in search_attributes.ALL))


async def pollers(client: Client, queue: str, kind: TaskQueueType.ValueType) -> list[str]:
    """The identities of workers that polled `queue` for `kind` tasks lately."""
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=kind,
        ),
        timeout=RPC_TIMEOUT,
    )
    since = datetime.now(UTC) - LIVE_POLLER
    return sorted({p.identity for p in answer.pollers if p.last_access_time.ToDatetime(tzinfo=UTC) >= since})


async def worker(client: Client, queue: str) -> Check:
    """Someone runs workflows and activities on the shared queue: without it no train moves."""
    workflows = await pollers(client, queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
    activities = await pollers(client, queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    if not (workflows and activities):
        lacking = [kind for kind, found in (("workflow", workflows), ("activity", activities)) if not found]
        what = "" if len(lacking) == 2 else f" for {lacking[0]} tasks"
        return Check(
            "worker",
            "fail",
            f"no worker polls task queue {queue!r}{what}",
            f"start one: `airagent worker`, with this shell's TEMPORAL_* settings and AIRAGENT_TASK_QUEUE={queue}",
        )
    found = sorted({*workflows, *activities})
    return Check("worker", "ok", f"{len(found)} polling task queue {queue!r}: {', '.join(found)}")


async def host_worker(client: Client, queue: str, host: str) -> Check:
    """A host named by a local environment needs its own worker: that environment's stages run only there."""
    name = host_queue(queue, host)
    found = await pollers(client, name, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    if not found:
        return Check(
            f"worker@{host}",
            "fail",
            f"no worker polls {name!r}: trains of the environments on {host} wait for one",
            f"run `airagent worker` on {host} (with AIRAGENT_HOST={host} if its host name differs)",
        )
    return Check(f"worker@{host}", "ok", f"{len(found)} polling {name!r}: {', '.join(found)}")


async def conductor(client: Client, pipeline: PipelineSettings, queue: str, config: Path) -> Check:
    name, start = f"conductor {pipeline.name}", command("pipeline", "start", "-p", pipeline.name, config=config)
    try:
        found = await client.get_workflow_handle(conductor_id(pipeline.name)).describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return Check(name, "fail", f"{conductor_id(pipeline.name)} was never started: {IDLE}", start)
    if found.status != WorkflowExecutionStatus.RUNNING:
        state = found.status.name.lower() if found.status else "not running"
        return Check(name, "fail", f"{conductor_id(pipeline.name)} is {state}: {IDLE}", start)
    if found.task_queue != queue:
        return Check(
            name,
            "warn",
            f"running on task queue {found.task_queue!r}, but this shell's is {queue!r}",
            f"set AIRAGENT_TASK_QUEUE={found.task_queue} here, or run its workers on {queue!r}",
        )
    return Check(name, "ok", f"{conductor_id(pipeline.name)} running since {found.start_time:%Y-%m-%d %H:%M} UTC")
