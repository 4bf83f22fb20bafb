"""What a train keeps of itself: each stage's record, how the train ended, and what the Web UI shows.

Every activity of a stage goes through `_activity`, which opens the stage's record, closes
it with the outcome, and turns an activity's failure into `Failed` with its root cause.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.workflow import ActivityConfig

from workflows import train_metrics
from workflows.options import ANNOUNCE, on
from workflows.train_controls import TrainControls

with workflow.unsafe.imports_passed_through():
    from activities.announce import announce
    from airagent import details
    from airagent import search_attributes as sa
    from airagent.config import PipelineSettings
    from airagent.models import (
        Announcement,
        Control,
        EnvironmentStatus,
        Outcome,
        StageRecord,
        TrainState,
        TrainStatus,
        ValidationReport,
    )
    from airagent.models.train import TRAIN_ENDED, ended_status  # noqa: F401  (the client reads it here)


class Stop(Exception):
    """An accepted abort or rollback, acted on at a safe point."""


class Failed(Exception):
    def __init__(
        self,
        stage: str,
        detail: str,
        environment: str | None = None,
        state: TrainState = TrainState.failed,
        kind: str | None = None,
    ):
        super().__init__(detail)
        self.stage, self.detail, self.environment, self.state, self.kind = stage, detail, environment, state, kind


class TrainBookkeeping(TrainControls):
    """The records of DeployTrain's stages, how it ends and who hears of it; the train keeps `status`,
    `_published`, `report` and `changed`."""

    _published: tuple | None
    pipeline: PipelineSettings
    report: ValidationReport | None
    changed: list[str]

    @property
    def _stages(self) -> list[StageRecord]:
        return self.status.stages

    def _env(self, name: str) -> EnvironmentStatus:
        return self.status.environment_status(name)

    async def _activity(self, stage: str, env: str | None, fn, arg, options: ActivityConfig):
        record = self._begin(stage, env)
        queue = self._queue(env)
        if queue != workflow.info().task_queue:  # shown until the host's worker reports back
            record.detail = f"on host {queue.rsplit('@', 1)[1]}: waiting for its worker (task queue {queue})"
            self._publish()
        try:
            result = await workflow.execute_activity(fn, arg, **on(queue, options))
        except ActivityError as err:
            self._end(record, Outcome.failed, cause(err))
            root = root_of(err)
            raise Failed(stage, cause(err), kind=root.type if isinstance(root, ApplicationError) else None) from None
        self._end(record, Outcome.ok)
        return result

    def _queue(self, env: str | None) -> str:
        """A host-bound environment's activities, and the stages that make its release, run on its host."""
        return self.pipeline.task_queue(workflow.info().task_queue, env)

    def _begin(self, stage: str, env: str | None) -> StageRecord:
        record = StageRecord(name=stage, environment=env, started=workflow.now())
        self._stages.append(record)
        self.status.stage, self.status.environment = stage, env
        self._publish()
        return record

    def _end(self, record: StageRecord, outcome: Outcome, detail: str | None = None) -> None:
        record.ended, record.outcome = workflow.now(), outcome
        if detail is not None:
            record.detail = detail
        train_metrics.stage_ended(self.pipeline.name, record, self.status)
        self._publish()

    def _fail_unless_succeeded(self) -> None:
        """End as a failed workflow execution when the train failed, rolled back or was aborted."""
        if self.status.state not in (TrainState.succeeded, TrainState.noop):
            raise ApplicationError(
                f"{self.status.state.value}: {self.status.reason}", self.status, type=TRAIN_ENDED, non_retryable=True
            )

    def _finish(self, state: TrainState, reason: str) -> TrainStatus:
        self.status.state, self.status.reason, self.status.ended = state, reason, workflow.now()
        train_metrics.train_ended(self.pipeline.name, self.status, self.stop[0] if self.stop else None)
        self._publish()
        return self.status

    def _publish(self) -> None:
        """Keep the Web UI current: search attributes when they change, details always."""
        attrs = (self.status.stage, self.status.state.value, self.status.environment)
        if attrs != self._published:
            self._published = attrs
            workflow.upsert_search_attributes(
                [
                    sa.STAGE.value_set(self.status.stage) if self.status.stage else sa.STAGE.value_unset(),
                    sa.STATE.value_set(self.status.state.value),
                    sa.ENVIRONMENT.value_set(self.status.environment)
                    if self.status.environment
                    else sa.ENVIRONMENT.value_unset(),
                ]
            )
        workflow.set_current_details(details.train(self.status))

    async def _announce(self) -> None:
        """Tell each configured receiver how the train ended; a receiver that stays down never fails the train."""
        broken = [f.path for f in self.report.broken] if self.report else []
        for index, receiver in enumerate(self.pipeline.notifications):
            if self.status.state.value not in receiver.on and not (self.status.held and "held" in receiver.on):
                continue
            try:
                await workflow.execute_activity(
                    announce,
                    Announcement(
                        pipeline=self.pipeline, receiver=index, status=self.status, changed=self.changed, broken=broken
                    ),
                    **ANNOUNCE,
                )
            except ActivityError as err:
                self.status.events.append(
                    self._event("notify", Control(), False, f"{receiver.type} notification not delivered: {cause(err)}")
                )

    async def _checkpoint(self, record: StageRecord | None = None, hold: bool = True) -> None:
        """Hold while paused (unless told not to); leave for the stop path when an abort or rollback was accepted."""
        if hold and self.paused and not self.stop:
            self.status.state = TrainState.paused
            self._publish()
            await workflow.wait_condition(lambda: not self.paused or self.stop is not None)
            self.status.state = TrainState.running
            self._publish()
        if self.stop:
            if record is not None:
                self._end(record, Outcome.stopped, f"{self.stop[0]} requested")
            raise Stop()


def root_of(err: ActivityError) -> BaseException | None:
    """The ApplicationError an activity raised, under the retry and timeout wrappers."""
    cause = err.cause
    while isinstance(cause, FailureError) and not isinstance(cause, ApplicationError) and cause.cause is not None:
        cause = cause.cause
    return cause


def cause(err: ActivityError) -> str:
    return str(root_of(err) or err)
