"""What the workflows that take controls (trains, conductors) share: refusing an update, recording a control."""

from __future__ import annotations

from enum import StrEnum
from typing import Generic, TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from airagent.models import Control, Event

Name = TypeVar("Name", bound=StrEnum)


class Controlled(Generic[Name]):
    """A base for workflows whose `_refusal` says why a control (one of `Name`) cannot be taken now, or None."""

    def _refusal(self, name: Name, control: Control) -> str | None:
        raise NotImplementedError

    def _reject(self, name: Name, control: Control | None) -> None:
        """An update validator: a refused control never enters history."""
        refusal = self._refusal(name, control or Control())
        if refusal:
            raise ApplicationError(refusal, type="ControlRejected", non_retryable=True)

    @staticmethod
    def _event(name: str, control: Control, accepted: bool, message: str) -> Event:
        return Event(
            at=workflow.now(),
            control=name,
            by=control.by,
            reason=control.reason,
            environment=control.environment,
            accepted=accepted,
            message=message,
        )
