"""The `roll` stage and its undo, for the local target: swap what an environment runs, and confirm it runs."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import keep_alive
from activities.targets.local import LocalEnvironment
from activities.targets.local_airflow import EnvironmentDown, LocalAirflow, NotLive
from airagent.config import EnvironmentSettings
from airagent.models import Marker, RollbackInput, RollInput, RollResult


def environment(settings: EnvironmentSettings) -> LocalAirflow:
    return LocalAirflow(settings.name, settings.target, settings.probes)


@activity.defn(name="roll")
def roll(input: RollInput) -> RollResult:
    env = environment(input.environment)
    try:
        with keep_alive(f"roll {input.environment.name}"):
            manifest, changed, detail = env.roll(input.release, input.mode, input.dags)
    except EnvironmentDown as err:
        raise ApplicationError(str(err), type="EnvironmentDown", non_retryable=True) from None
    except NotLive as err:
        raise ApplicationError(str(err), type="NotLive", non_retryable=True) from None
    activity.logger.info("%s: %s %s: %s", input.environment.name, "rolled to" if changed else "already on",
                         input.release.id, detail)
    return _result(input.environment.name, manifest, changed, detail) \
        .model_copy(update={"baseline": env.baseline()})


@activity.defn(name="rollback")
def rollback(input: RollbackInput) -> RollResult:
    env = environment(input.environment)
    try:
        with keep_alive(f"rollback {input.environment.name}"):
            manifest, changed, detail = env.rollback(input.to_release)
    except FileNotFoundError as err:
        raise ApplicationError(str(err), type="NothingToRollBackTo", non_retryable=True) from None
    except NotLive as err:  # retried: a rollback is how an environment gets well again
        raise ApplicationError(str(err), type="NotLive") from None
    return _result(input.environment.name, manifest, changed, detail)


@activity.defn(name="read_marker")
def read_marker(environment: EnvironmentSettings) -> Marker:
    manifest = LocalEnvironment(environment.target.path).manifest()
    return Marker(
        live=manifest.live.id if manifest.live else None,
        previous=manifest.previous.id if manifest.previous else None,
        rolled=list(dict.fromkeys(s.release for s in manifest.history if s.release)),
    )


def _result(name, manifest, changed, detail) -> RollResult:
    return RollResult(
        environment=name,
        live=manifest.live.id if manifest.live else None,
        previous=manifest.previous.id if manifest.previous else None,
        changed=changed,
        detail=detail,
    )
