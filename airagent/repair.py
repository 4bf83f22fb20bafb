"""Repair a workflow wedged by a nondeterminism error: reset it to the last workflow task today's code replays.

A workflow whose live worker decided on something history does not record (see
activities/clock.py) fails every replay from that decision on, so no code change can
let it finish. A reset keeps its history up to the workflow task that went wrong and
runs that task again on today's code; everything before it (rolls, soak readings) stands.
"""

from __future__ import annotations

import uuid

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

_FINISHED = (
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
)


async def _replays(replayer: Replayer, history: WorkflowHistory, events: int) -> bool:
    prefix = WorkflowHistory(history.workflow_id, list(history.events[:events]))
    return (await replayer.replay_workflow(prefix, raise_on_replay_failure=False)).replay_failure is None


async def reset_point(history: WorkflowHistory, workflows: list[type]) -> int | None:
    """The event to reset to (the end of the first workflow task that does not replay), or None if all replays.

    Histories are cut just after a WorkflowTaskStarted, where a running workflow's history
    may end, and the longest cut that replays is found by bisection."""
    replayer = Replayer(workflows=workflows, data_converter=pydantic_data_converter)
    if await _replays(replayer, history, len(history.events)):
        return None
    # A cut just after task k's WorkflowTaskStarted checks the tasks before k; the first one always replays.
    cuts = [i + 1 for i, e in enumerate(history.events) if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED]
    good, bad = 0, len(cuts)  # the cut at `good` replays; the one at `bad` (or the whole history) does not
    while bad - good > 1:
        middle = (good + bad) // 2
        if await _replays(replayer, history, cuts[middle]):
            good = middle
        else:
            bad = middle
    started = cuts[good] - 1  # task `good` replays its past but makes other commands: reset to its end
    finished = next((e for e in history.events[started + 1 :] if e.event_type in _FINISHED), history.events[started])
    return finished.event_id


async def reset(client: Client, workflow_id: str, run_id: str, event_id: int, reason: str) -> str:
    """Reset the run to `event_id`; returns the new run's id."""
    response = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
            reason=reason,
            workflow_task_finish_event_id=event_id,
            request_id=str(uuid.uuid4()),
        )
    )
    return response.run_id
