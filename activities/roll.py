"""The `roll` stage and its undo, for the local target: swap what an environment runs."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import keep_alive
from activities.targets.local import LocalEnvironment
from airagent.config import EnvironmentSettings
from airagent.models import Marker, RollbackInput, RollInput, RollResult


@activity.defn(name="roll")
def roll(input: RollInput) -> RollResult:
    env = LocalEnvironment(input.environment.target.path)
    with keep_alive(f"roll {input.environment.name}"):
        manifest, changed = env.roll(input.release)
    activity.logger.info("%s: %s %s", input.environment.name, "rolled to" if changed else "already on",
                         input.release.id)
    return _result(input.environment.name, manifest, changed)


@activity.defn(name="rollback")
def rollback(input: RollbackInput) -> RollResult:
    env = LocalEnvironment(input.environment.target.path)
    try:
        with keep_alive(f"rollback {input.environment.name}"):
            manifest, changed = env.rollback(input.to_release)
    except FileNotFoundError as err:
        raise ApplicationError(str(err), type="NothingToRollBackTo", non_retryable=True) from None
    return _result(input.environment.name, manifest, changed)


@activity.defn(name="read_marker")
def read_marker(environment: EnvironmentSettings) -> Marker:
    manifest = LocalEnvironment(environment.target.path).manifest()
    return Marker(
        live=manifest.live.id if manifest.live else None,
        previous=manifest.previous.id if manifest.previous else None,
        rolled=list(dict.fromkeys(s.release for s in manifest.history if s.release)),
    )


def _result(name, manifest, changed) -> RollResult:
    return RollResult(
        environment=name,
        live=manifest.live.id if manifest.live else None,
        previous=manifest.previous.id if manifest.previous else None,
        changed=changed,
    )
