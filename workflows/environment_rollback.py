"""EnvironmentRollback: put one environment back on an earlier release, outside any train.

No rebuild, no validation: the release was live there before. The pipeline is frozen
first, so the next train does not put the bad commit straight back; `unfreeze` lets
trains flow again.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows import train_metrics
from workflows.options import READ, ROLLBACK, on

with workflow.unsafe.imports_passed_through():
    from activities.roll import read_marker, rollback
    from airagent.models import (
        Control,
        EnvironmentRollbackInput,
        EnvironmentRollbackResult,
        PipelineControl,
        RollbackInput,
        conductor_id,
    )


@workflow.defn(name="EnvironmentRollback")
class EnvironmentRollback:
    @workflow.run
    async def run(self, input: EnvironmentRollbackInput) -> EnvironmentRollbackResult:
        env = input.pipeline.environment(input.environment)
        queue = input.pipeline.task_queue(workflow.info().task_queue, env.name)  # its host's worker, if bound
        marker = await workflow.execute_activity(read_marker, env, **on(queue, READ))
        target = input.to_release or marker.previous
        if target is None:
            raise ApplicationError(
                f"{env.name} has no earlier release to go back to", type="BadInput", non_retryable=True
            )
        if target not in marker.rolled:
            raise ApplicationError(
                f"{target} was never live on {env.name}; pick one of {', '.join(marker.rolled)}",
                type="BadInput",
                non_retryable=True,
            )
        frozen = (
            f"{env.name} rolled back from {marker.live} to {target}"
            f"{' by ' + input.by if input.by else ''}{': ' + input.reason if input.reason else ''}"
        )
        await self._freeze(input, frozen)
        result = await workflow.execute_activity(
            rollback,
            RollbackInput(environment=env, to_release=target, pipeline=input.pipeline),
            **on(queue, ROLLBACK),
        )
        train_metrics.rolled_back(input.pipeline.name, env.name, train_metrics.OUTSIDE)
        return EnvironmentRollbackResult(environment=env.name, live=result.live, replaced=marker.live, frozen=frozen)

    async def _freeze(self, input: EnvironmentRollbackInput, reason: str) -> None:
        """Freeze the conductor; a pipeline run without one has nothing to freeze."""
        conductor = workflow.get_external_workflow_handle(conductor_id(input.pipeline.name))
        try:
            await conductor.signal(PipelineControl.freeze, Control(by=input.by or "airagent rollback", reason=reason))
        except ApplicationError:
            workflow.logger.info("pipeline %s has no conductor to freeze", input.pipeline.name)
