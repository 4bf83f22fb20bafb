"""What every target offers and refuses alike: the Driver protocol, what a roll answers, a swap in an
environment's record, the error tree, and the release files every target reads. Stages and targets meet here, so
neither imports the other's modules.

Each target keeps its own record in the environment (`local.Record` in manifest.json, `kube_record.Record` in a
ConfigMap); `Marker` is what a driver reads off it for the stages."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

from pydantic import BaseModel

from activities.airflow_api import AirflowApi
from airagent.models import Baseline, Expected, Marker, ProbeReading, Release, RolloutMode

# Where a repository keeps its Airflow configuration, first match wins.
CONFIG_FILES = ("config/airflow.cfg", "airflow.cfg")


class Rolled(NamedTuple):
    live: str | None
    previous: str | None
    changed: bool
    detail: str


class Swap(BaseModel):
    """One change of what an environment runs, as its record keeps it, oldest first."""

    at: datetime
    action: Literal["roll", "rollback"]
    release: str | None
    commit: str | None = None  # the local record keeps it per swap; the kubernetes one beside the live release
    replaced: str | None


class Driver(Protocol):
    def roll(
        self, release: Release, mode: RolloutMode, dags: dict[str, list[str]], replaces: Expected | None = None
    ) -> Rolled:
        """Raises UnexpectedLive, changing nothing, when the record names another live release than `replaces`."""

    def rollback(self, to: str | None) -> Rolled: ...

    def marker(self) -> Marker: ...

    def probe(self, release: Release, baseline: Baseline | None) -> list[ProbeReading]: ...

    def baseline(self) -> Baseline | None: ...

    def preflight(self) -> list[str]: ...

    def airflow_api(self) -> AirflowApi | None:
        """The environment's Airflow API, for soak analysis; None when it runs no Airflow airagent can reach."""


def config_file(release: Release | None) -> Path | None:
    """The release's airflow.cfg, where the repository keeps one."""
    if release is None:
        return None
    return next((Path(release.bundle) / c for c in CONFIG_FILES if (Path(release.bundle) / c).is_file()), None)


# --- the error tree: each is a refusal or a failure the roll stage names to the train ------


class TargetError(Exception):
    """A target could not do what it was asked; the message says why and what to do."""


class UnexpectedLive(TargetError):
    """The environment's record names another live release than the roll's diff saw: someone moved it since."""

    def __init__(self, environment: str, expected: str | None, live: str | None, live_commit: str | None, release: str):
        self.environment, self.expected, self.live, self.release = environment, expected, live, release
        runs = f"{live} (commit {live_commit[:12]})" if live and live_commit else live or "nothing"
        super().__init__(
            f"{environment} runs {runs} but this train expected {expected or 'nothing'} there, to "
            f"replace with {release}: another train or a person changed it since the diff; nothing "
            "was changed, and the next train will diff again"
        )


def check_live(
    environment: str, replaces: Expected | None, live: str | None, live_commit: str | None, release: str
) -> None:
    """Refuse a roll over anything but what its diff saw, or `release` itself (a retry); None checks nothing."""
    if replaces is not None and live not in (replaces.live, release):
        raise UnexpectedLive(environment, replaces.live, live, live_commit, release)


class EnvironmentDown(TargetError):
    """The environment's components are not all running: bring it up before rolling."""


class NotLive(TargetError):
    """The new release did not become live in time; the reason says what was missing."""


class RolloutFailed(TargetError):
    """The roll cannot succeed by waiting longer; names the workload, and the pod when one is to blame."""

    def __init__(self, message: str, workload: str | None = None, pod: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.workload, self.pod, self.reason = workload, pod, reason


class RolloutTimeout(RolloutFailed):
    """The deadline passed with workloads still rolling."""
