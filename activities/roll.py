"""The `roll` stage and its undo, for any target: swap what an environment runs, and confirm it runs."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.environment import environment
from activities.heartbeat import keep_alive
from activities.release import present
from activities.targets.base import EnvironmentDown, NotLive, Rolled, RolloutFailed, UnexpectedLive
from activities.validation import reports
from airagent.config import EnvironmentSettings
from airagent.models import Marker, RollbackInput, RollInput, RollResult


@activity.defn(name="roll")
def roll(input: RollInput) -> RollResult:
    input = input.model_copy(update={"release": present(input.release, input.pipeline)})  # built elsewhere?
    env = environment(input.environment, input.pipeline)
    try:
        with keep_alive(f"roll {input.environment.name}"):
            warnings = env.preflight()
            rolled = env.roll(input.release, input.mode, _dags(input), input.replaces)
    except UnexpectedLive as err:  # refused before changing anything: the next train diffs what is live now
        raise ApplicationError(str(err), type="UnexpectedLive", non_retryable=True) from None
    except EnvironmentDown as err:
        raise ApplicationError(str(err), type="EnvironmentDown", non_retryable=True) from None
    except NotLive as err:
        raise ApplicationError(str(err), type="NotLive", non_retryable=True) from None
    except RolloutFailed as err:  # a crash-looping pod or a passed deadline: waiting again will not help
        raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from None
    except LookupError as err:  # a workload or ConfigMap the target names is not there
        raise ApplicationError(str(err), type="BadTarget", non_retryable=True) from None
    activity.logger.info(
        "%s: %s %s: %s",
        input.environment.name,
        "rolled to" if rolled.changed else "already on",
        input.release.id,
        rolled.detail,
    )
    return _result(input.environment.name, rolled).model_copy(update={"baseline": env.baseline(), "warnings": warnings})


@activity.defn(name="rollback")
def rollback(input: RollbackInput) -> RollResult:
    env = environment(input.environment, input.pipeline)
    try:
        with keep_alive(f"rollback {input.environment.name}"):
            rolled = env.rollback(input.to_release)
    except (FileNotFoundError, LookupError) as err:
        raise ApplicationError(str(err), type="NothingToRollBackTo", non_retryable=True) from None
    except (NotLive, RolloutFailed) as err:  # retried: a rollback is how an environment gets well again
        raise ApplicationError(str(err), type=type(err).__name__) from None
    return _result(input.environment.name, rolled)


@activity.defn(name="read_marker")
def read_marker(settings: EnvironmentSettings) -> Marker:
    return environment(settings).marker()


def _dags(input: RollInput) -> dict[str, list[str]]:
    """The release's DAGs by file: from the validation report the train names, or as trains before it sent them."""
    if input.report is None:
        return input.dags
    return reports.dag_ids(reports.recall(input.report, input.release, input.pipeline))


def _result(name: str, rolled: Rolled) -> RollResult:
    return RollResult(
        environment=name, live=rolled.live, previous=rolled.previous, changed=rolled.changed, detail=rolled.detail
    )
