"""What a person may ask of a running train, and what the train does about it.

Controls (signals, and updates that answer) only set flags and record who asked and why;
the train acts on them at its safe points: between stages, and while soaking or waiting
for approval. Each is a signal and an update of the same name, so `temporal workflow
signal` works as well as `airagent pause`, which hears whether it was taken.
"""

from __future__ import annotations

from temporalio import workflow

from workflows.controls import Controlled

with workflow.unsafe.imports_passed_through():
    from airagent.config import PipelineSettings
    from airagent.models import Control, ControlAck, TrainControl, TrainStatus


class TrainControls(Controlled[TrainControl]):
    """The controls of DeployTrain; the train keeps the state they read and set."""

    pipeline: PipelineSettings
    status: TrainStatus
    paused: bool
    stop: tuple[TrainControl, Control] | None
    awaiting_approval: str | None
    approved: set[str]
    touched: list[str]  # environments whose roll began, in order

    def _publish(self) -> None:
        raise NotImplementedError

    def _refusal(self, name: TrainControl, control: Control) -> str | None:
        if self.status.state.finished:
            return f"the train has already ended {self.status.state}"
        known = [e.name for e in self.pipeline.environments]
        if control.environment and control.environment not in known:
            return f"unknown environment {control.environment!r}; this pipeline has {', '.join(known)}"
        if self.stop and name != TrainControl.resume:
            return f"the train is already stopping ({self.stop[0]})"
        if name == TrainControl.pause and self.paused:
            return "already paused"
        if name == TrainControl.resume and not self.paused:
            return "not paused"
        if name == TrainControl.rollback and not self.touched:
            return "no environment has been rolled yet, so there is nothing to roll back; use abort to stop the train"
        if name == TrainControl.rollback and control.environment and control.environment not in self.touched:
            return f"{control.environment} was not rolled by this train; rolled so far: {', '.join(self.touched)}"
        if name == TrainControl.approve and self.awaiting_approval is None:
            return "no approval is pending"
        if name == TrainControl.approve and control.environment not in (None, self.awaiting_approval):
            return f"the pending approval is for {self.awaiting_approval}, not {control.environment}"
        return None

    def _apply(self, name: TrainControl, control: Control | None) -> ControlAck:
        control = control or Control()
        refusal = self._refusal(name, control)
        if refusal is None:
            message = self._act(name, control)
        self.status.events.append(self._event(name, control, refusal is None, refusal or message))
        self._publish()
        return ControlAck(accepted=refusal is None, message=refusal or message)

    def _act(self, name: TrainControl, control: Control) -> str:
        if name == TrainControl.pause:
            self.paused = True
            return "pausing at the next safe point"
        if name == TrainControl.resume:
            self.paused = False
            return "resumed"
        if name == TrainControl.approve:
            assert self.awaiting_approval is not None  # the refusal says so otherwise
            self.approved.add(self.awaiting_approval)
            return f"approved {self.awaiting_approval}"
        self.stop = (name, control)
        if name == TrainControl.abort:
            return f"aborting; rolling back {', '.join(reversed(self.touched)) or 'nothing'}"
        return f"rolling back {control.environment or ', '.join(reversed(self.touched))}"

    @workflow.signal(name=TrainControl.pause)
    def pause(self, control: Control | None = None) -> None:
        self._apply(TrainControl.pause, control)

    @workflow.signal(name=TrainControl.resume)
    def resume(self, control: Control | None = None) -> None:
        self._apply(TrainControl.resume, control)

    @workflow.signal(name=TrainControl.abort)
    def abort(self, control: Control | None = None) -> None:
        self._apply(TrainControl.abort, control)

    @workflow.signal(name=TrainControl.rollback)
    def rollback(self, control: Control | None = None) -> None:
        self._apply(TrainControl.rollback, control)

    @workflow.signal(name=TrainControl.approve)
    def approve(self, control: Control | None = None) -> None:
        self._apply(TrainControl.approve, control)

    @workflow.update(name=TrainControl.pause)
    def pause_update(self, control: Control | None = None) -> ControlAck:
        return self._apply(TrainControl.pause, control)

    @pause_update.validator
    def _pause_allowed(self, control: Control | None = None) -> None:
        self._reject(TrainControl.pause, control)

    @workflow.update(name=TrainControl.resume)
    def resume_update(self, control: Control | None = None) -> ControlAck:
        return self._apply(TrainControl.resume, control)

    @resume_update.validator
    def _resume_allowed(self, control: Control | None = None) -> None:
        self._reject(TrainControl.resume, control)

    @workflow.update(name=TrainControl.abort)
    def abort_update(self, control: Control | None = None) -> ControlAck:
        return self._apply(TrainControl.abort, control)

    @abort_update.validator
    def _abort_allowed(self, control: Control | None = None) -> None:
        self._reject(TrainControl.abort, control)

    @workflow.update(name=TrainControl.rollback)
    def rollback_update(self, control: Control | None = None) -> ControlAck:
        return self._apply(TrainControl.rollback, control)

    @rollback_update.validator
    def _rollback_allowed(self, control: Control | None = None) -> None:
        self._reject(TrainControl.rollback, control)

    @workflow.update(name=TrainControl.approve)
    def approve_update(self, control: Control | None = None) -> ControlAck:
        return self._apply(TrainControl.approve, control)

    @approve_update.validator
    def _approve_allowed(self, control: Control | None = None) -> None:
        self._reject(TrainControl.approve, control)

    @workflow.query(name="status")
    def query_status(self) -> TrainStatus:
        return self.status
