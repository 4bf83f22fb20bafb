"""What a person, CI or `airagent deploy` may ask of a pipeline's conductor, and how it answers.

`deploy` queues a commit (or says why no train can start now), `notify` makes it look at
the branch, `follow` makes the branch head deploy itself; `pause`, `resume`, `freeze` and
`unfreeze` steer whether trains start. Each control is a signal and an update of the same
name. `reconfigure`, an update only, replaces the settings the next trains deploy with:
they change by an operator's action, never by a commit. Handlers only change the state
and wake the conductor's loop.
"""

from __future__ import annotations

from itertools import takewhile

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows import culprits
from workflows.controls import Controlled

with workflow.unsafe.imports_passed_through():
    from airagent import windows
    from airagent.config import PipelineSettings
    from airagent.models import (
        ConductorState,
        Control,
        ControlAck,
        DeployAnswer,
        DeployRequest,
        HeldCommit,
        Notify,
        PipelineControl,
        Reconfigure,
        Unhold,
        settings_changes,
        train_id,
    )

KEEP_EVENTS = 50
KEEP_IMAGES = 50
NO_SHA = "an image belongs to the commit it was built for: pass --sha with --image"


class ConductorControls(Controlled[PipelineControl]):
    """The controls of the Conductor; the conductor keeps the state they read and set."""

    pipeline: PipelineSettings
    state: ConductorState
    wake: bool

    def _window(self) -> windows.WindowState:
        raise NotImplementedError

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

    @workflow.update(name="reconfigure")
    def reconfigure_update(self, request: Reconfigure) -> ControlAck:
        """The operator's new settings, from the next train on: the running train goes on with the settings
        it started with, as gates it has passed or waits at were set for it."""
        changes = settings_changes(self.pipeline, request.settings)
        if not changes:
            return ControlAck(accepted=True, message="unchanged: the conductor already deploys with these settings")
        running = self.state.running
        message = f"changed {', '.join(changes)}; the next train deploys with them" + (
            f" ({running.id} goes on with the settings it started with)" if running else ""
        )
        self.pipeline, self.wake = request.settings, True  # awake: the nap follows the new poll interval and windows
        event = self._event("reconfigure", Control(by=request.by, reason=request.reason), True, message)
        self.state.reconfigured = event
        self.state.events = [*self.state.events, event][-KEEP_EVENTS:]
        return ControlAck(accepted=True, message=message)

    @workflow.update(name="unhold")
    def unhold_update(self, request: Unhold) -> ControlAck:
        """Lift a hold a person judges wrong (a regression that was the environment's, a flaky test): the
        commit deploys with the next train, which starts now for the newest commit seen."""
        held = self._held(request)
        self.state.held = [h for h in self.state.held if h.sha != held.sha]
        if head := self.state.head or self.state.last_deployed:
            culprits.retry(self.state, head)
        self.wake = True
        message = f"{held.sha[:12]} ({held.author}: {held.summary}) is no longer held; the next train deploys it"
        event = self._event("unhold", Control(by=request.by, reason=request.reason), True, message)
        self.state.events = [*self.state.events, event][-KEEP_EVENTS:]
        return ControlAck(accepted=True, message=message)

    @unhold_update.validator
    def _unhold_allowed(self, request: Unhold) -> None:
        if not request.reason.strip():
            raise ApplicationError(
                "an unhold needs a reason, so whoever reads the event log knows why the hold was wrong",
                type="ControlRejected",
                non_retryable=True,
            )
        self._held(request)

    def _held(self, request: Unhold) -> HeldCommit:
        found = [h for h in self.state.held if len(request.sha) >= 7 and h.sha.startswith(request.sha)]
        if len(found) != 1:
            held = ", ".join(h.sha[:12] for h in self.state.held) or "none"
            why = "matches several held commits" if found else "is not held"
            raise ApplicationError(
                f"{request.sha} {why} (held now: {held}); give at least 7 characters of one held sha",
                type="ControlRejected",
                non_retryable=True,
            )
        return found[0]

    @reconfigure_update.validator
    def _reconfigure_allowed(self, request: Reconfigure) -> None:
        new, bisection = request.settings, self.state.bisection
        refusal = None
        if new.name != self.pipeline.name:
            refusal = f"these settings are pipeline {new.name!r}'s; this conductor deploys {self.pipeline.name!r}"
        elif bisection and bisection.environment not in [e.name for e in new.environments]:
            refusal = (
                f"a bisection runs on {bisection.environment}, which these settings remove; keep it until the "
                "bisection ends (`airagent pipeline status`)"
            )
        if refusal:
            raise ApplicationError(refusal, type="ControlRejected", non_retryable=True)

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
