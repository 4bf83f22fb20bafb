"""The Python client for CI and scripts; the CLI is a thin layer over it.

async with await AirAgent.connect() as agent:   # or AirAgent(client)
    answer = await agent.deploy(load_pipeline("main"), sha)   # the conductor starts the train
    status = await agent.wait(answer.train, timeout=timedelta(minutes=30))
    sys.exit(exit_code(status))
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    WorkflowIDConflictPolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from airagent import search_attributes as sa
from airagent.config import PipelineSettings
from airagent.connection import connect, task_queue
from airagent.models import (
    ConductorInput,
    ConductorState,
    ConductorStatus,
    Control,
    ControlAck,
    DeployAnswer,
    DeployRequest,
    EnvironmentRollbackInput,
    EnvironmentRollbackResult,
    Notify,
    PipelineControl,
    Reconfigure,
    TrainControl,
    TrainState,
    TrainStatus,
    TrainSummary,
    Unhold,
    conductor_id,
    rollback_id,
    settings_changes,
)
from airagent.repo import open_repository, resolve
from interface.previews import PreviewCalls
from interface.visibility import NotFound, of_pipeline
from workflows.conductor import Conductor
from workflows.environment_rollback import EnvironmentRollback
from workflows.train import DeployTrain
from workflows.train_bookkeeping import ended_status

EXIT_CODES = {
    TrainState.succeeded: 0,
    TrainState.noop: 0,
    TrainState.failed: 3,
    TrainState.rolled_back: 4,
    TrainState.aborted: 5,
}
EXIT_TIMEOUT = 6
log = logging.getLogger(__name__)


def exit_code(status: TrainStatus) -> int:
    return EXIT_CODES.get(status.state, 1)


class TrainRunning(Exception):
    def __init__(self, pipeline: str, running: str, hint: str = "wait for it or abort it"):
        super().__init__(
            f"pipeline {pipeline!r} already has a train running: {running}; {hint} "
            f"(`airagent status {running} --watch`)"
        )
        self.running = running


class DeployRefused(Exception):
    """The conductor cannot start a train now: paused or frozen; its message says what lifts it."""


class RollbackRefused(Exception):
    pass


class AirAgent(PreviewCalls):
    def __init__(self, client: Client, queue: str | None = None):
        self.client = client
        self.task_queue = queue or task_queue()

    @classmethod
    async def connect(cls, profile: str | None = None, queue: str | None = None) -> AirAgent:
        return cls(await connect(profile), queue)

    async def deploy(
        self, pipeline: PipelineSettings, sha: str | None = None, image: str | None = None, by: str | None = None
    ) -> DeployAnswer:
        """Ask the pipeline's conductor (started with `pipeline` if none runs) to deploy `sha` (default: the
        branch head). A running conductor deploys with its own settings (see `unapplied`).

        The answer names the train, queued behind a running one if need be; the same sha twice is the
        same train. `image` is the runtime image CI built for it (kubernetes, external builder)."""
        target = resolve(open_repository(pipeline), pipeline, sha)
        # Started by deploy, a conductor deploys what it is asked and does not follow the branch.
        start = WithStartWorkflowOperation(
            Conductor.run,
            ConductorInput(pipeline=pipeline, state=ConductorState(follow=False)),
            id=conductor_id(pipeline.name),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=_conductor_summary(pipeline),
        )
        while True:
            try:
                answer = await self.client.execute_update_with_start_workflow(
                    Conductor.deploy_update,
                    DeployRequest(sha=target, image=image, by=by),
                    start_workflow_operation=start,
                )
                break
            except WorkflowUpdateRPCTimeoutOrCancelledError:
                # No worker took the update in time; asking again for the same sha is harmless.
                log.warning(
                    "the conductor of %s has not answered yet: is `airagent worker` running on task "
                    "queue %s? asking again",
                    pipeline.name,
                    self.task_queue,
                )
        if not answer.accepted:
            raise DeployRefused(answer.message)
        return answer

    async def running_train(self, pipeline: str) -> str | None:
        """The pipeline's running train; its search attributes are set at start, so visibility sees it at once."""
        query = f"WorkflowType = 'DeployTrain' AND ExecutionStatus = 'Running' AND {of_pipeline(pipeline)}"
        async for execution in self.client.list_workflows(query, limit=1):
            return execution.id
        return None

    async def status(self, wf_id: str, since: datetime | None = None) -> TrainStatus:
        """The train's status; with `since` (a deploy answer's `asked`), a run started before is not it."""
        handle = self.client.get_workflow_handle(wf_id, result_type=TrainStatus)
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise  # the server is unreachable, not the train unknown
            raise NotFound(f"no train {wf_id!r}; list them with `airagent history --pipeline P`") from err
        if since and description.start_time < since:
            raise NotFound(f"{wf_id} is queued at the conductor; the run there deployed the commit before")
        if description.status in (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.FAILED):
            try:
                return await outcome(handle)
            except WorkflowFailureError:
                pass  # failed some other way: its last status is still there to ask for
        return await handle.query(DeployTrain.query_status)

    async def wait(self, wf_id: str, timeout: timedelta | None = None, since: datetime | None = None) -> TrainStatus:
        """The train's outcome, waiting through a queued start and server or worker outages up to `timeout`;
        `since` as for `status`."""
        handle = self.client.get_workflow_handle(wf_id, result_type=TrainStatus)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds() if timeout else None
        while True:
            left = deadline - loop.time() if deadline else None
            if left is not None and left <= 0:
                raise TimeoutError(wf_id)
            try:
                if not since or (await handle.describe()).start_time >= since:
                    return await asyncio.wait_for(outcome(handle), left)
            except RPCError as err:  # not started yet (queued), or the server is restarting
                log.info("waiting for %s: %s", wf_id, err.message)
            await asyncio.sleep(1)

    async def control(self, wf_id: str, name: str, control: Control | None = None) -> ControlAck:
        """Send a control as an update, so the answer says whether the train (or conductor) took it."""
        known = [c.value for c in (PipelineControl if wf_id.startswith("pipeline/") else TrainControl)]
        if name not in known:
            raise ValueError(f"unknown control {name!r}; one of {', '.join(known)}")
        handle = self.client.get_workflow_handle(wf_id)
        try:
            description = await handle.describe()
            if description.status != WorkflowExecutionStatus.RUNNING:
                return ControlAck(
                    accepted=False,
                    message=f"{wf_id} has already ended "
                    f"({_state(description.status, description.typed_search_attributes.get(sa.STATE))})",
                )
            return await handle.execute_update(name, control or Control(), result_type=ControlAck)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            return ControlAck(accepted=False, message=getattr(cause, "message", None) or str(cause or err))
        except RPCError as err:
            return ControlAck(accepted=False, message=f"{wf_id}: {err.message}")

    async def start_pipeline(self, pipeline: PipelineSettings) -> WorkflowHandle:
        """Start the pipeline's conductor, or have the running one follow the branch from now on."""
        start = WithStartWorkflowOperation(
            Conductor.run,
            ConductorInput(pipeline=pipeline),
            id=conductor_id(pipeline.name),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=_conductor_summary(pipeline),
        )
        await self.client.execute_update_with_start_workflow(Conductor.follow_update, start_workflow_operation=start)
        return self.client.get_workflow_handle(conductor_id(pipeline.name))  # any run: it continues as new

    async def notify(
        self, pipeline: PipelineSettings, sha: str | None = None, by: str | None = None, image: str | None = None
    ) -> ControlAck:
        """What CI calls after a merge: start the conductor if needed and have it look at the branch now.
        `image` is the runtime image CI built for `sha` (external builder); the conductor's train for it rolls that."""
        handle = await self.start_pipeline(pipeline)
        try:
            return await handle.execute_update(Conductor.notify_update, Notify(sha=sha, by=by, image=image))
        except WorkflowUpdateFailedError as err:
            return ControlAck(accepted=False, message=getattr(err.cause, "message", None) or str(err.cause or err))

    async def rollback_environment(
        self,
        pipeline: PipelineSettings,
        environment: str,
        to_release: str | None = None,
        by: str | None = None,
        reason: str | None = None,
    ) -> EnvironmentRollbackResult:
        """Put an environment back on an earlier release outside any train, and freeze the pipeline."""
        pipeline.environment(environment)  # UnknownEnvironment names the ones there are
        running = await self.running_train(pipeline.name)
        if running:
            raise TrainRunning(pipeline.name, running, hint="abort it: that rolls back what it changed")
        try:
            return await self.client.execute_workflow(
                EnvironmentRollback.run,
                EnvironmentRollbackInput(
                    pipeline=pipeline, environment=environment, to_release=to_release, by=by, reason=reason
                ),
                id=rollback_id(pipeline.name, environment),
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                static_summary=f"Roll {environment} of {pipeline.name} back to {to_release or 'the previous release'}",
            )
        except WorkflowFailureError as err:
            raise RollbackRefused(getattr(err.cause, "message", None) or str(err.cause or err)) from None

    async def reconfigure(
        self, pipeline: PipelineSettings, by: str | None = None, reason: str | None = None
    ) -> ControlAck:
        """Replace the settings the running conductor deploys with, from its next train on."""
        handle = self.client.get_workflow_handle(conductor_id(pipeline.name))
        try:
            return await handle.execute_update(
                Conductor.reconfigure_update, Reconfigure(settings=pipeline, by=by, reason=reason)
            )
        except WorkflowUpdateFailedError as err:
            return ControlAck(accepted=False, message=getattr(err.cause, "message", None) or str(err.cause or err))
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            raise _no_conductor(pipeline.name) from err

    async def unhold(self, pipeline: str, sha: str, by: str | None, reason: str) -> ControlAck:
        """Lift a hold on a commit; the conductor records who and why, and deploys it with its next train."""
        handle = self.client.get_workflow_handle(conductor_id(pipeline))
        try:
            return await handle.execute_update(Conductor.unhold_update, Unhold(sha=sha, by=by, reason=reason))
        except WorkflowUpdateFailedError as err:
            return ControlAck(accepted=False, message=getattr(err.cause, "message", None) or str(err.cause or err))
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            raise _no_conductor(pipeline) from err

    async def unapplied(self, pipeline: PipelineSettings) -> list[str]:
        """The settings in which `pipeline` differs from what its running conductor deploys with (none when
        they agree or no conductor runs): trains use the conductor's, which only `reconfigure` changes."""
        try:
            running = (await self.pipeline_status(pipeline.name)).settings
        except (NotFound, WorkflowQueryFailedError):  # a note, never a reason for a deploy to fail
            return []
        return settings_changes(running, pipeline) if running else []

    async def pipeline_status(self, name: str) -> ConductorStatus:
        handle = self.client.get_workflow_handle(conductor_id(name))
        try:
            return await handle.query(Conductor.query_status)
        except RPCError as err:
            raise _no_conductor(name) from err

    async def history(self, pipeline: str | None = None, limit: int = 20) -> list[TrainSummary]:
        query = "WorkflowType = 'DeployTrain'"
        if pipeline:
            query += f" AND {of_pipeline(pipeline)}"
        trains = []
        async for ex in self.client.list_workflows(query, limit=limit):
            attrs = ex.typed_search_attributes
            trains.append(
                TrainSummary(
                    id=ex.id,
                    pipeline=attrs.get(sa.PIPELINE) or "",
                    sha=attrs.get(sa.GIT_SHA) or "",
                    state=_state(ex.status, attrs.get(sa.STATE)),
                    stage=attrs.get(sa.STAGE),
                    started=ex.start_time,
                    ended=ex.close_time,
                )
            )
        return trains

    async def latest(self, pipeline: str | None = None) -> str:
        trains = await self.history(pipeline, limit=1)
        if not trains:
            raise NotFound(
                f"no trains yet{f' for pipeline {pipeline!r}' if pipeline else ''}; start one with "
                "`airagent deploy --pipeline P`"
            )
        return trains[0].id


def _no_conductor(name: str) -> NotFound:
    return NotFound(f"pipeline {name!r} has no conductor; start it with `airagent pipeline start --pipeline {name}`")


def _conductor_summary(pipeline: PipelineSettings) -> str:
    return f"Conductor of {pipeline.name}: {pipeline.branch} → {' → '.join(e.name for e in pipeline.environments)}"


_ENDED_BY_ITSELF = {TrainState.failed.value, TrainState.rolled_back.value, TrainState.aborted.value}


async def outcome(handle: WorkflowHandle) -> TrainStatus:
    """How a train ended: its result, or the status a train that did not succeed fails with."""
    try:
        return await handle.result()
    except WorkflowFailureError as err:
        if (status := ended_status(err.cause)) is None:
            raise
        return status


def _state(execution: WorkflowExecutionStatus | None, recorded: str | None) -> str:
    """The train's own state while it runs or once it completed; Temporal's when it was ended from outside."""
    if execution == WorkflowExecutionStatus.FAILED and recorded in _ENDED_BY_ITSELF:
        return recorded  # a train that did not succeed fails as a workflow, with its own state
    if execution in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED) and recorded:
        return recorded
    return execution.name.lower() if execution else recorded or "unknown"
