"""Conductor: one per pipeline, for ever. It watches the branch and runs one train at a time.

It is the only starter of trains: `airagent deploy` and CI ask it (the `deploy` update),
so two trains of one pipeline never run at once. Asked-for commits go first, in order;
then, when it follows the branch, commits that landed meanwhile ride the next train,
which deploys the branch head and so carries them all. A commit whose train failed is
not tried again on its own; a newer commit is, and so is one asked for again.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import takewhile

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ContinueAsNewVersioningBehavior

from workflows.controls import Controlled
from workflows.options import CLOCK, POLL

with workflow.unsafe.imports_passed_through():
    from activities.clock import read_clock
    from activities.poll import poll_branch
    from airagent import details, windows
    from airagent.models import (
        Bisection,
        Commit,
        ConductorInput,
        ConductorStatus,
        Control,
        ControlAck,
        DeployAnswer,
        DeployRequest,
        HeldCommit,
        Notify,
        PipelineControl,
        PollInput,
        TrainInput,
        TrainRecord,
        TrainState,
        TrainStatus,
        train_id,
    )
    from workflows.train import DeployTrain

KEEP_TRAINS = 20
KEEP_FAILED = 100
KEEP_EVENTS = 50
KEEP_IMAGES = 50
# Well under Temporal's limits; continue-as-new also follows the server's own suggestion.
MAX_HISTORY = 5_000
NO_SHA = "an image belongs to the commit it was built for: pass --sha with --image"
WINDOW_READS_CLOCK = "window-reads-the-server-clock"
BISECT = "bisect-untraced-soak-failures"


@workflow.defn(name="Conductor")
class Conductor(Controlled):
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
            record.state, record.reason = status.state.value, status.reason
            record.commits = len(status.commits)
            record.authors = sorted({c.author for c in status.commits})
        except ChildWorkflowError as err:
            record.state, record.reason = TrainState.failed.value, f"the train ended abnormally: {err.cause or err}"
        record.ended = workflow.now()
        if bisection:
            self._bisected(bisection, status)
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
            self._narrow(sha, status, held_before)

    def _narrow(self, sha: str, status: TrainStatus, held_before: set[str]) -> None:
        """After a soak rollback, hold back its culprit and deploy the rest: traced to DAGs, the train held them;
        else one suspect is the culprit, and several are bisected on the environment that failed."""
        held = {h.sha for h in status.held}
        suspects = [c for c in reversed(status.commits) if c.sha not in held]
        if held - held_before:
            if suspects:
                self._retry(sha)
            return
        why = status.reason.removeprefix(f"soak {status.soak_failed}: ").splitlines()[0][:300]
        if len(suspects) == 1:
            self._hold(suspects[0], f"the soak of {status.soak_failed} failed with it alone ({why})", sha)
        elif suspects:
            self.state.bisection = Bisection(
                head=sha, environment=status.soak_failed, why=why, suspects=suspects, bad=len(suspects) - 1
            )

    def _bisected(self, bisection: Bisection, status: TrainStatus | None) -> None:
        """One step's verdict narrows the suspects; the last holds the culprit back and deploys the head again."""
        middle = (bisection.good + bisection.bad) // 2
        if status and status.state == TrainState.succeeded:
            bisection.good = middle
        elif status and status.state == TrainState.rolled_back and status.soak_failed == bisection.environment:
            bisection.bad = middle
        else:  # the step could not tell: it failed before soaking, or was stopped
            self.state.bisection = None
            return
        bisection.step += 1
        if culprit := bisection.found:
            self.state.bisection = None
            self._hold(
                culprit,
                f"bisection: the soak of {bisection.environment} failed with it and passed "
                f"without it ({bisection.why})",
                bisection.head,
            )

    def _hold(self, commit: Commit, reason: str, head: str) -> None:
        """Hold back a commit an untraced soak failure was narrowed down to; the next train fills in its paths."""
        held = HeldCommit(
            sha=commit.sha,
            author=commit.author,
            summary=commit.summary,
            reason=reason,
            since=workflow.now(),
            regression=True,
        )
        self.state.held = [*(h for h in self.state.held if h.sha != commit.sha), held]
        self._retry(head)

    def _retry(self, sha: str) -> None:
        """Deploy `sha` again, now that more of its commits are held back."""
        self.state.failed = [f for f in self.state.failed if f != sha]
        if all(r.sha != sha for r in self.state.requests):
            self.state.requests = [DeployRequest(sha=sha, by="airagent: deploy the rest"), *self.state.requests]

    def _held_since(self, held: list[HeldCommit]) -> list[HeldCommit]:
        """The train's held commits, each held since it was first: a hold that goes on is not new."""
        first = {h.sha: h.since for h in self.state.held}
        return [h.model_copy(update={"since": first.get(h.sha, h.since)}) for h in held]

    def _publish(self) -> None:
        """Keep the Web UI's details current; they are not commands, so any moment will do."""
        workflow.set_current_details(details.pipeline(self.query_status()))

    def _time_for_a_new_run(self) -> bool:
        """Between trains: when history grows long, or when a new airagent version became current."""
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > MAX_HISTORY
            or info.is_target_worker_deployment_version_changed()
        )

    # --- controls -----------------------------------------------------------------------

    def _refusal(self, name: PipelineControl, control: Control) -> str | None:
        s = self.state
        if name == PipelineControl.pause and s.paused:
            return "already paused"
        if name == PipelineControl.resume and not s.paused:
            return "not paused"
        if name == PipelineControl.freeze and not control.reason:
            return "a freeze needs a reason, so whoever unfreezes knows what to check"
        if name == PipelineControl.unfreeze and not s.frozen:
            return "not frozen"
        return None

    def _apply(self, name: PipelineControl, control: Control | None) -> ControlAck:
        control = control or Control()
        refusal = self._refusal(name, control)
        message = (
            refusal
            or {
                PipelineControl.pause: "no new trains will start; a running train goes on",
                PipelineControl.resume: "trains flow again",
                PipelineControl.freeze: f"frozen: {control.reason}",
                PipelineControl.unfreeze: "unfrozen; trains flow again",
            }[name]
        )
        if refusal is None:
            if name in ("pause", "resume"):
                self.state.paused = name == PipelineControl.pause
            else:
                self.state.frozen = control.reason if name == PipelineControl.freeze else None
            self.wake = True
        event = self._event(name, control, refusal is None, message)
        self.state.events = [*self.state.events, event][-KEEP_EVENTS:]
        return ControlAck(accepted=refusal is None, message=message)

    @workflow.signal(name="notify")
    def notify(self, notice: Notify | None = None) -> None:
        self._notify(notice)

    @workflow.update(name="notify")
    def notify_update(self, notice: Notify | None = None) -> ControlAck:
        return self._notify(notice)

    @notify_update.validator
    def _notify_allowed(self, notice: Notify | None = None) -> None:
        if notice and notice.image and not notice.sha:
            raise ApplicationError(NO_SHA, type="ControlRejected", non_retryable=True)

    def _notify(self, notice: Notify | None) -> ControlAck:
        notice = notice or Notify()
        self.wake = True
        message = f"looking at {self.pipeline.branch} now" + (f" for {notice.sha[:12]}" if notice.sha else "")
        # A signal cannot be refused: an image without its commit is left out, the branch looked at anyway.
        if notice.image and notice.sha:
            self._remember_image(notice.sha, notice.image)
            message += f" with image {notice.image}"
        return ControlAck(accepted=True, message=message)

    def _remember_image(self, sha: str, image: str) -> None:
        images = {k: v for k, v in self.state.images.items() if k != sha}
        self.state.images = dict([*images.items(), (sha, image)][-KEEP_IMAGES:])

    @workflow.update(name="deploy")
    def deploy_update(self, request: DeployRequest) -> DeployAnswer:
        """Deploy one commit: the train's id, queued behind what runs; or why no train can start now."""
        s, train = self.state, train_id(self.pipeline.name, request.sha)
        if s.running and s.running.sha == request.sha:
            answer = DeployAnswer(accepted=True, train=train, message=f"{train} is deploying it")
        elif s.paused or s.frozen:
            why = (
                (
                    f"pipeline {self.pipeline.name} is frozen: {s.frozen}; `airagent pipeline unfreeze` lets trains "
                    "flow again"
                )
                if s.frozen
                else (f"pipeline {self.pipeline.name} is paused; `airagent pipeline resume` lets trains flow again")
            )
            answer = DeployAnswer(accepted=False, message=why)
        else:
            if request.image:
                self._remember_image(request.sha, request.image)
            if all(r.sha != request.sha for r in s.requests):
                s.requests = [*s.requests, request]
            self.wake = True
            answer = DeployAnswer(
                accepted=True, train=train, message=self._wait_reason(request.sha), asked=workflow.now()
            )
        event = self._event("deploy", Control(by=request.by), answer.accepted, answer.message)
        s.events = [*s.events, event][-KEEP_EVENTS:]
        return answer

    def _wait_reason(self, sha: str) -> str:
        s = self.state
        ahead = [s.running.sha[:12]] if s.running else []
        ahead += [r.sha[:12] for r in takewhile(lambda r: r.sha != sha, s.requests)]
        if ahead:
            return f"queued behind {', '.join(ahead)}"
        window = self._window()
        return "starting now" if window.open else f"queued: {window.reason}"

    @workflow.update(name="follow")
    def follow_update(self) -> ControlAck:
        """`pipeline start`: from now on the branch head deploys itself, also where `deploy` started the conductor."""
        was, self.state.follow, self.wake = self.state.follow, True, True
        return ControlAck(
            accepted=True,
            message=f"already following {self.pipeline.branch}"
            if was
            else f"following {self.pipeline.branch} from now on",
        )

    @workflow.signal(name=PipelineControl.pause)
    def pause(self, control: Control | None = None) -> None:
        self._apply(PipelineControl.pause, control)

    @workflow.signal(name=PipelineControl.resume)
    def resume(self, control: Control | None = None) -> None:
        self._apply(PipelineControl.resume, control)

    @workflow.signal(name=PipelineControl.freeze)
    def freeze(self, control: Control | None = None) -> None:
        self._apply(PipelineControl.freeze, control)

    @workflow.signal(name=PipelineControl.unfreeze)
    def unfreeze(self, control: Control | None = None) -> None:
        self._apply(PipelineControl.unfreeze, control)

    @workflow.update(name=PipelineControl.pause)
    def pause_update(self, control: Control | None = None) -> ControlAck:
        return self._apply(PipelineControl.pause, control)

    @pause_update.validator
    def _pause_allowed(self, control: Control | None = None) -> None:
        self._reject(PipelineControl.pause, control)

    @workflow.update(name=PipelineControl.resume)
    def resume_update(self, control: Control | None = None) -> ControlAck:
        return self._apply(PipelineControl.resume, control)

    @resume_update.validator
    def _resume_allowed(self, control: Control | None = None) -> None:
        self._reject(PipelineControl.resume, control)

    @workflow.update(name=PipelineControl.freeze)
    def freeze_update(self, control: Control | None = None) -> ControlAck:
        return self._apply(PipelineControl.freeze, control)

    @freeze_update.validator
    def _freeze_allowed(self, control: Control | None = None) -> None:
        self._reject(PipelineControl.freeze, control)

    @workflow.update(name=PipelineControl.unfreeze)
    def unfreeze_update(self, control: Control | None = None) -> ControlAck:
        return self._apply(PipelineControl.unfreeze, control)

    @unfreeze_update.validator
    def _unfreeze_allowed(self, control: Control | None = None) -> None:
        self._reject(PipelineControl.unfreeze, control)

    @workflow.query(name="status")
    def query_status(self) -> ConductorStatus:
        window = self._window()
        return ConductorStatus(
            pipeline=self.pipeline.name,
            queued=self._queued(),
            window_open=window.open,
            window=window.reason,
            state=self.state,
        )
