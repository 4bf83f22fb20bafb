"""Read what DORA needs from Temporal: the trains that ended in a window and the rollbacks outside any train.

Visibility lists them; each train's status comes from its close event alone (its result, or
the status a train that did not succeed fails with), one request per train. A train that ended
never changes, so a caller that reads again and again (the worker's gauges) keeps a cache by
run id and asks only for the new ones.
"""

from __future__ import annotations

from datetime import datetime

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError

from airagent import search_attributes as sa
from airagent.dora import Delivery, OutsideRollback, delivery
from airagent.models import TrainStatus
from airagent.models.train import ended_status

# Enough for a month of a busy pipeline; older trains beyond it are left out, newest kept.
MAX_TRAINS = 5_000
_ENDED = (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.FAILED)


def _since(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


async def deliveries(
    client: Client, since: datetime, pipeline: str | None = None, cache: dict[str, Delivery | None] | None = None
) -> dict[str, list[Delivery]]:
    """Each pipeline's trains that ended since `since`, as DORA reads them. Trains ended from outside
    (terminated, timed out) left no status and are left out. `pipeline` must be a pipeline name (checked by the
    caller: it enters the query). A `cache` kept between calls must be used with the same `pipeline`."""
    query = f"WorkflowType = 'DeployTrain' AND ExecutionStatus != 'Running' AND CloseTime >= '{_since(since)}'"
    if pipeline:
        query += f" AND {sa.PIPELINE.name} = '{pipeline}'"
    cache = {} if cache is None else cache
    found: dict[str, list[Delivery]] = {}
    seen: set[str] = set()
    async for ex in client.list_workflows(query, limit=MAX_TRAINS):
        if ex.status not in _ENDED or not ex.run_id:
            continue
        seen.add(ex.run_id)
        if ex.run_id not in cache:
            status = await _status(client, ex.id, ex.run_id)
            cache[ex.run_id] = delivery(ex.id, status) if status else None
        if (record := cache[ex.run_id]) is not None:
            found.setdefault(ex.typed_search_attributes.get(sa.PIPELINE) or "", []).append(record)
    for gone in set(cache) - seen:  # out of the window: never asked for again
        del cache[gone]
    return found


async def _status(client: Client, wf_id: str, run_id: str) -> TrainStatus | None:
    handle = client.get_workflow_handle(wf_id, run_id=run_id, result_type=TrainStatus)
    try:
        return await handle.result(follow_runs=False)
    except WorkflowFailureError as err:
        return ended_status(err.cause)


async def outside_rollbacks(client: Client, since: datetime, pipeline: str) -> list[OutsideRollback]:
    """The pipeline's EnvironmentRollbacks that completed since `since`; their ids name the environment."""
    query = f"WorkflowType = 'EnvironmentRollback' AND ExecutionStatus = 'Completed' AND CloseTime >= '{_since(since)}'"
    prefix = f"rollback/{pipeline}/"
    return [
        OutsideRollback(environment=ex.id.removeprefix(prefix), at=ex.close_time)
        async for ex in client.list_workflows(query, limit=MAX_TRAINS)
        if ex.id.startswith(prefix) and ex.close_time
    ]
