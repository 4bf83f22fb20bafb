"""The Python client for CI and scripts; the CLI is a thin layer over it.

    async with await AirAgent.connect() as agent:   # or AirAgent(client)
        handle = await agent.deploy(load_pipeline("main"), sha)
        status = await agent.wait(handle.id, timeout=timedelta(minutes=30))
        sys.exit(exit_code(status))
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from airagent import search_attributes as sa
from airagent.config import PipelineSettings
from airagent.connection import connect, task_queue
from airagent.models import (
    ConductorInput,
    ConductorStatus,
    EnvironmentRollbackInput,
    EnvironmentRollbackResult,
    Control,
    ControlAck,
    Notify,
    TrainInput,
    TrainState,
    TrainStatus,
    TrainSummary,
    conductor_id,
    rollback_id,
    train_id,
)
from airagent.repo import open_repository, resolve
from workflows.conductor import Conductor
from workflows.environment_rollback import EnvironmentRollback
from workflows.train import DeployTrain

CONTROLS = ("pause", "resume", "abort", "rollback", "approve")
PIPELINE_CONTROLS = ("pause", "resume", "freeze", "unfreeze")
EXIT_CODES = {
    TrainState.succeeded: 0,
    TrainState.noop: 0,
    TrainState.failed: 3,
    TrainState.rolled_back: 4,
    TrainState.aborted: 5,
}
EXIT_TIMEOUT = 6


def exit_code(status: TrainStatus) -> int:
    return EXIT_CODES.get(status.state, 1)


class TrainRunning(Exception):
    def __init__(self, pipeline: str, running: str, hint: str = "wait for it or abort it"):
        super().__init__(f"pipeline {pipeline!r} already has a train running: {running}; {hint} "
                         f"(`airagent status {running} --watch`)")
        self.running = running


class RollbackRefused(Exception):
    pass


class NotFound(Exception):
    pass


class AirAgent:
    def __init__(self, client: Client, queue: str | None = None):
        self.client = client
        self.task_queue = queue or task_queue()

    @classmethod
    async def connect(cls, profile: str | None = None, queue: str | None = None) -> AirAgent:
        return cls(await connect(profile), queue)

    async def deploy(self, pipeline: PipelineSettings, sha: str | None = None,
                     image: str | None = None) -> WorkflowHandle:
        """Start a train for `sha` (default: the branch head); the same sha twice is the same train.

        `image` is the runtime image CI built for it, for kubernetes environments with the external builder."""
        target = resolve(open_repository(pipeline), pipeline, sha)
        running = await self.running_train(pipeline.name)
        if running and running != train_id(pipeline.name, target):
            raise TrainRunning(pipeline.name, running)
        return await self.start(pipeline, target, image)

    async def start(self, pipeline: PipelineSettings, target: str, image: str | None = None) -> WorkflowHandle:
        """Start the train for a resolved sha, without the one-per-pipeline check `deploy` makes."""
        wf_id = train_id(pipeline.name, target)
        envs = " → ".join(e.name for e in pipeline.environments)
        return await self.client.start_workflow(
            DeployTrain.run,
            TrainInput(pipeline=pipeline, target=target, image=image),
            id=wf_id,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=sa_start(pipeline.name, target),
            static_summary=f"Deploy {pipeline.name} @ {target[:12]} to {envs}",
            static_details=f"Pipeline **{pipeline.name}** ({pipeline.repo}, branch `{pipeline.branch}`)\n\n"
                           f"Target commit `{target}`\n\nEnvironments: {envs}",
        )

    async def running_train(self, pipeline: str) -> str | None:
        """The pipeline's running train; its search attributes are set at start, so visibility sees it at once."""
        query = (f"WorkflowType = 'DeployTrain' AND ExecutionStatus = 'Running' "
                 f"AND {sa.PIPELINE.name} = '{pipeline}'")
        async for execution in self.client.list_workflows(query, limit=1):
            return execution.id
        return None

    async def status(self, wf_id: str) -> TrainStatus:
        handle = self.client.get_workflow_handle(wf_id, result_type=TrainStatus)
        try:
            description = await handle.describe()
        except RPCError as err:
            raise NotFound(f"no train {wf_id!r}; list them with `airagent history --pipeline P`") from err
        if description.status == WorkflowExecutionStatus.COMPLETED:
            return await handle.result()
        return await handle.query(DeployTrain.query_status)

    async def wait(self, wf_id: str, timeout: timedelta | None = None) -> TrainStatus:
        handle = self.client.get_workflow_handle(wf_id, result_type=TrainStatus)
        seconds = timeout.total_seconds() if timeout else None
        return await asyncio.wait_for(handle.result(), seconds)

    async def control(self, wf_id: str, name: str, control: Control | None = None) -> ControlAck:
        """Send a control as an update, so the answer says whether the train (or conductor) took it."""
        known = PIPELINE_CONTROLS if wf_id.startswith("pipeline/") else CONTROLS
        if name not in known:
            raise ValueError(f"unknown control {name!r}; one of {', '.join(known)}")
        handle = self.client.get_workflow_handle(wf_id)
        try:
            description = await handle.describe()
            if description.status != WorkflowExecutionStatus.RUNNING:
                return ControlAck(accepted=False, message=f"{wf_id} has already ended "
                                  f"({_state(description.status, description.typed_search_attributes.get(sa.STATE))})")
            return await handle.execute_update(name, control or Control(), result_type=ControlAck)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            return ControlAck(accepted=False, message=getattr(cause, "message", None) or str(cause or err))
        except RPCError as err:
            return ControlAck(accepted=False, message=f"{wf_id}: {err.message}")

    async def start_pipeline(self, pipeline: PipelineSettings) -> WorkflowHandle:
        """Start the pipeline's conductor; when it already runs, this is that one."""
        return await self.client.start_workflow(
            Conductor.run,
            ConductorInput(pipeline=pipeline),
            id=conductor_id(pipeline.name),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Conductor of {pipeline.name}: {pipeline.branch} → "
                           f"{' → '.join(e.name for e in pipeline.environments)}",
        )

    async def notify(self, pipeline: PipelineSettings, sha: str | None = None, by: str | None = None,
                     image: str | None = None) -> ControlAck:
        """What CI calls after a merge: start the conductor if needed and have it look at the branch now.
        `image` is the runtime image CI built for `sha` (external builder); the conductor's train for it rolls that."""
        handle = await self.start_pipeline(pipeline)
        try:
            return await handle.execute_update(Conductor.notify_update, Notify(sha=sha, by=by, image=image))
        except WorkflowUpdateFailedError as err:
            return ControlAck(accepted=False, message=getattr(err.cause, "message", None) or str(err.cause or err))

    async def rollback_environment(self, pipeline: PipelineSettings, environment: str, to_release: str | None = None,
                                   by: str | None = None, reason: str | None = None) -> EnvironmentRollbackResult:
        """Put an environment back on an earlier release outside any train, and freeze the pipeline."""
        pipeline.environment(environment)  # a clear KeyError for an unknown name
        running = await self.running_train(pipeline.name)
        if running:
            raise TrainRunning(pipeline.name, running, hint="abort it: that rolls back what it changed")
        try:
            return await self.client.execute_workflow(
                EnvironmentRollback.run,
                EnvironmentRollbackInput(pipeline=pipeline, environment=environment, to_release=to_release,
                                         by=by, reason=reason),
                id=rollback_id(pipeline.name, environment),
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                static_summary=f"Roll {environment} of {pipeline.name} back to {to_release or 'the previous release'}",
            )
        except WorkflowFailureError as err:
            raise RollbackRefused(getattr(err.cause, "message", None) or str(err.cause or err)) from None

    async def pipeline_status(self, name: str) -> ConductorStatus:
        handle = self.client.get_workflow_handle(conductor_id(name))
        try:
            return await handle.query(Conductor.query_status)
        except RPCError as err:
            raise NotFound(f"pipeline {name!r} has no conductor; start it with "
                               f"`airagent pipeline start --pipeline {name}`") from err

    async def history(self, pipeline: str | None = None, limit: int = 20) -> list[TrainSummary]:
        query = "WorkflowType = 'DeployTrain'"
        if pipeline:
            query += f" AND {sa.PIPELINE.name} = '{pipeline}'"
        trains = []
        async for ex in self.client.list_workflows(query, limit=limit):
            attrs = ex.typed_search_attributes
            trains.append(TrainSummary(
                id=ex.id,
                pipeline=attrs.get(sa.PIPELINE) or "",
                sha=attrs.get(sa.GIT_SHA) or "",
                state=_state(ex.status, attrs.get(sa.STATE)),
                stage=attrs.get(sa.STAGE),
                started=ex.start_time,
                ended=ex.close_time,
            ))
        return trains

    async def latest(self, pipeline: str | None = None) -> str:
        trains = await self.history(pipeline, limit=1)
        if not trains:
            raise NotFound(f"no trains yet{f' for pipeline {pipeline!r}' if pipeline else ''}; start one with "
                               "`airagent deploy --pipeline P`")
        return trains[0].id


def sa_start(pipeline: str, sha: str) -> TypedSearchAttributes:
    return TypedSearchAttributes([
        SearchAttributePair(sa.PIPELINE, pipeline),
        SearchAttributePair(sa.GIT_SHA, sha),
        SearchAttributePair(sa.STATE, TrainState.running.value),
    ])


def _state(execution: WorkflowExecutionStatus | None, recorded: str | None) -> str:
    """The train's own state while it runs or once it completed; Temporal's when it was ended from outside."""
    if execution in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED) and recorded:
        return recorded
    return execution.name.lower() if execution else recorded or "unknown"
