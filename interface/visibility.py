"""What the client asks the server's visibility and a workflow's description: shared by the trains' and the
previews' calls."""

from __future__ import annotations

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from airagent import search_attributes as sa
from airagent.config import NAME


class NotFound(Exception):
    pass


def of_pipeline(name: str) -> str:
    """The visibility clause for one pipeline's workflows; a name that is no pipeline's never enters the query."""
    if not NAME.fullmatch(name):
        raise NotFound(f"{name!r} is not a pipeline name: lowercase letters, digits, '-' and '_'")
    return f"{sa.PIPELINE.name} = '{name}'"


async def running(handle: WorkflowHandle) -> bool:
    """Whether the workflow runs now; False for one the server never had."""
    try:
        return (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
