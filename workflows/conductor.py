"""Conductor: one per pipeline, for ever. It watches the branch and runs one train at a time.

It is the only starter of trains: `airagent deploy` and CI ask it (the `deploy` update),
so two trains of one pipeline never run at once. Asked-for commits go first, in order;
then, when it follows the branch, commits that landed meanwhile ride the next train,
which deploys the branch head and so carries them all. A commit whose train failed is
not tried again on its own; a newer commit is, and so is one asked for again.

Its trains deploy with the settings the operator gave it (`pipeline start`, then
`pipeline reconfigure`), carried across continue-as-new; never with a commit's airagent.yaml.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ContinueAsNewVersioningBehavior

from workflows import culprits, train_metrics
from workflows.conductor_controls import ConductorControls
from workflows.options import BEST_EFFORT, CLOCK, POLL, on

with workflow.unsafe.imports_passed_through():
    from activities.clock import read_clock
    from activities.gc import collect_garbage
    from activities.poll import poll_branch
    from airagent import details, windows
    from airagent.models import (
        ConductorInput,
        ConductorStatus,
        HeldCommit,
        PollInput,
        TrainInput,
        TrainRecord,
        TrainState,
        TrainStatus,
        train_id,
    )
    from airagent.models.train import ended_status
    from workflows.train import DeployTrain

KEEP_TRAINS = 20
KEEP_FAILED = 100
# Well under Temporal's limits; continue-as-new also follows the server's own suggestion.
MAX_HISTORY = 5_000
WINDOW_READS_CLOCK = "window-reads-the-server-clock"
BISECT = "bisect-untraced-soak-failures"
COLLECT_GARBAGE = "collect-garbage-after-trains"
HELD_ALONE_STAYS = "no-train-of-held-commits-alone"


@workflow.defn(name="Conductor")
class Conductor(ConductorControls):
    @workflow.init
    def __init__(self, input: ConductorInput) -> None:
        self.pipeline = input.pipeline
        self.state = input.state
        self.wake = False

    @workflow.run
    async def run(self, input: ConductorInput) -> None:
        while True:
            await self._poll()
            while (sha := await self._next()) is not None:
                if not await self._run_train(sha):
                    break
                await self._collect_garbage()
                await self._poll()  # whatever landed meanwhile rides the next train
            if self._time_for_a_new_run():
                await workflow.wait_condition(workflow.all_handlers_finished)
                # Runs are pinned to a worker version; the next one starts on the current version.
                workflow.continue_as_new(
                    ConductorInput(pipeline=self.pipeline, state=self.state),
                    initial_versioning_behavior=ContinueAsNewVersioningBehavior.AUTO_UPGRADE,
                )
            self.wake = False
            self._publish()
            try:
                await workflow.wait_condition(lambda: self.wake, timeout=self._nap())
            except TimeoutError:
                pass

    def _queued(self) -> str | None:
        """The commit the next train will deploy: the first asked for, else a head not yet deployed or tried."""
        s = self.state
        if s.bisection:
            return s.bisection.probe.sha
        running = s.running.sha if s.running else None
        asked = next((r.sha for r in s.requests if r.sha != running), None)
        if asked or not s.follow:
            return asked
        waiting = s.head not in (None, s.last_deployed) and s.head not in s.failed
        return s.head if waiting and not (s.running and s.running.sha == s.head) else None

    async def _next(self) -> str | None:
        """The queued commit, when a train may start now."""
        sha = self._queued()
        if sha is None or self.state.paused or self.state.frozen or not (await self._window_now()).open:
            return None
        # Without its image a rebuild would fail, and a failed commit is never retried: wait for CI instead.
        if self.pipeline.image_from_ci and self._image(sha) is None:
            self.state.blocked = (
                f"waiting for CI to announce the image of {sha[:12]} "
                f"(`airagent notify --sha {sha[:12]} --image <repository>:<runtime hash>`)"
            )
            return None
        return sha

    def _image(self, sha: str) -> str | None:
        """The image CI announced for `sha`; CI may have sent the commit abbreviated."""
        return next(
            (image for announced, image in reversed(self.state.images.items()) if sha.startswith(announced)), None
        )

    def _window(self) -> windows.WindowState:
        """For what is shown and how long to nap; whether a train starts is `_window_now`'s."""
        return windows.state(self.pipeline.windows, workflow.now())

    async def _window_now(self) -> windows.WindowState:
        """The window at a time history records, as a train that starts or not is a command."""
        if self.pipeline.windows and workflow.patched(WINDOW_READS_CLOCK):
            return windows.state(self.pipeline.windows, await workflow.execute_activity(read_clock, **CLOCK))
        return self._window()

    def _nap(self) -> timedelta:
        """Until the next poll, or sooner when a closed window with a commit waiting opens."""
        window = self._window()
        if self._queued() and not window.open and window.until:
            return max(timedelta(seconds=1), min(self.pipeline.poll_interval, window.until - workflow.now()))
        return self.pipeline.poll_interval

    async def _poll(self) -> None:
        if not self.state.follow or self.state.requests:
            return  # the branch head is not what the next train deploys
        try:
            result = await workflow.execute_activity(poll_branch, PollInput(pipeline=self.pipeline), **POLL)
        except ActivityError as err:
            self.state.poll_error = str(err.cause or err)
            return
        self.state.head, self.state.poll_error = result.head, None

    async def _collect_garbage(self) -> None:
        """After a train, what no environment runs or keeps to roll back to goes (see activities.gc), on the
        host its releases are on; best effort, so a train never waits on it."""
        if not workflow.patched(COLLECT_GARBAGE):
            return
        queue = self.pipeline.task_queue(workflow.info().task_queue)
        try:
            await workflow.execute_activity(collect_garbage, self.pipeline, **on(queue, BEST_EFFORT))
        except ActivityError as err:
            workflow.logger.warning("gc after a train of %s: %s", self.pipeline.name, err.cause or err)

    async def _run_train(self, sha: str) -> bool:
        """Run the train for `sha` to its end; False when one for it is already running outside the conductor."""
        record = TrainRecord(id=train_id(self.pipeline.name, sha), sha=sha, started=workflow.now())
        bisection = self.state.bisection if self.state.bisection and self.state.bisection.probe.sha == sha else None
        step = bisection.step_input() if bisection else None
        self.state.running = record
        try:
            handle = await workflow.start_child_workflow(
                DeployTrain.run,
                TrainInput(
                    pipeline=self.pipeline, target=sha, image=self._image(sha), held=self.state.held, bisect=step
                ),
                id=record.id,
                static_summary=f"Bisect {self.pipeline.name} @ {sha[:12]} on {step.environment}: step {step.step}"
                if step
                else f"Deploy {self.pipeline.name} @ {sha[:12]}, started by the conductor",
            )
        except WorkflowAlreadyStartedError:
            # Someone ran `airagent deploy` for this commit; look again after the next nap.
            self.state.running = None
            self.state.blocked = f"{record.id} was started outside the conductor; waiting for it to end"
            return False
        self.state.blocked = None
        self.state.requests = [r for r in self.state.requests if r.sha != sha]
        self._publish()
        status: TrainStatus | None = None
        try:
            status = await handle
        except ChildWorkflowError as err:
            status = ended_status(err.cause)
            if status is None:
                record.state, record.reason = TrainState.failed.value, f"the train ended abnormally: {err.cause or err}"
        if status is not None:
            record.state, record.reason = status.state.value, status.reason
            record.commits = len(status.commits)
            record.authors = sorted({c.author for c in status.commits})
        record.ended = workflow.now()
        if bisection:
            culprits.after_step(self.state, bisection, status, workflow.now())
        else:
            self._ended(sha, record, status)
        self.state.trains = [*self.state.trains, record][-KEEP_TRAINS:]
        self.state.running = None
        return True

    def _ended(self, sha: str, record: TrainRecord, status: TrainStatus | None) -> None:
        held_before = {h.sha for h in self.state.held}
        if status and status.state in (TrainState.succeeded, TrainState.rolled_back):
            self.state.held = self._held_since(status.held)
        if record.state in (TrainState.succeeded, TrainState.noop):
            self.state.last_deployed = sha
        else:
            self.state.failed = [*self.state.failed, sha][-KEEP_FAILED:]
        if status and status.soak_failed and workflow.patched(BISECT):
            alone = workflow.patched(HELD_ALONE_STAYS)
            culprits.after_rollback(self.state, sha, status, held_before, workflow.now(), retry_alone=not alone)

    def _held_since(self, held: list[HeldCommit]) -> list[HeldCommit]:
        """The train's held commits, each held since it was first: a hold that goes on is not new."""
        first = {h.sha: h.since for h in self.state.held}
        return [h.model_copy(update={"since": first.get(h.sha, h.since)}) for h in held]

    def _publish(self) -> None:
        """Keep the Web UI's details and the held-commits gauge current; neither is a command, so any moment will do."""
        workflow.set_current_details(details.pipeline(self.query_status()))
        train_metrics.held_commits(self.pipeline.name, len(self.state.held))

    def _time_for_a_new_run(self) -> bool:
        """Between trains: when history grows long, or when a new airagent version became current."""
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > MAX_HISTORY
            or info.is_target_worker_deployment_version_changed()
        )

    @workflow.query(name="status")
    def query_status(self) -> ConductorStatus:
        window = self._window()
        return ConductorStatus(
            pipeline=self.pipeline.name,
            queued=self._queued(),
            window_open=window.open,
            window=window.reason,
            state=self.state,
            settings=self.pipeline,
        )
