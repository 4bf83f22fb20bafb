"""An environment's driver, whatever its target, so the roll and soak stages do not care which one it is.

A driver (targets/base.py) rolls, rolls back, reads its environment's own record (the
marker), probes, and hands back the baseline it took before its roll in progress.
`environment()` picks the driver by the target's type. The local driver lives here
because a files-only environment's probe is a parse of its live release: this is where
targets and validation meet, so neither imports the other.
"""

from __future__ import annotations

from activities.airflow_api import AirflowApi
from activities.probes import reading
from activities.targets.base import Driver, Rolled
from activities.targets.local_airflow import LocalAirflow
from activities.validation.parse import parse_release
from airagent.config import EnvironmentSettings, KubernetesTarget, LocalTarget, PipelineSettings
from airagent.models import Baseline, Expected, Marker, ProbeReading, Release, RolloutMode


def environment(settings: EnvironmentSettings, pipeline: PipelineSettings | None = None) -> Driver:
    """The driver for `settings`; `pipeline`'s repository is where a kubernetes environment's DAG ref moves."""
    if isinstance(settings.target, KubernetesTarget):
        from activities.targets.kube_airflow import KubernetesAirflow  # the kubernetes client loads only when used

        return KubernetesAirflow(settings, pipeline)
    return LocalDriver(settings)


class LocalDriver:
    """The local target: files and a `current` symlink, and Airflow's processes unless `airflow: false`."""

    def __init__(self, settings: EnvironmentSettings):
        assert isinstance(settings.target, LocalTarget)  # environment() gives a kubernetes target its own driver
        self.airflow = LocalAirflow(settings.name, settings.target, settings.probes)
        self.files, self.runs_airflow = self.airflow.files, settings.target.airflow

    def roll(
        self, release: Release, mode: RolloutMode, dags: dict[str, list[str]], replaces: Expected | None = None
    ) -> Rolled:
        return _from_record(*self.airflow.roll(release, mode, dags, replaces))

    def rollback(self, to: str | None) -> Rolled:
        return _from_record(*self.airflow.rollback(to))

    def marker(self) -> Marker:
        record = self.files.record()
        return Marker(
            live=record.live.id if record.live else None,
            previous=record.previous.id if record.previous else None,
            rolled=list(dict.fromkeys(s.release for s in record.history if s.release)),
            live_commit=record.live.commit if record.live else None,
        )

    def probe(self, release: Release, baseline: Baseline | None) -> list[ProbeReading]:
        readings = [self._marker(release.id)]
        if readings[0].ok and (live := self.files.live()) is not None:
            readings += self.airflow.probe(live, baseline) if self.runs_airflow else [_parses(live)]
        return readings

    def baseline(self) -> Baseline | None:
        return self.airflow.baseline()

    def preflight(self) -> list[str]:
        return []

    def airflow_api(self) -> AirflowApi | None:
        try:
            return self.airflow.api() if self.runs_airflow else None
        except FileNotFoundError:  # no login yet: the environment never started
            return None

    def _marker(self, expected: str) -> ProbeReading:
        """The environment's own record still says the release is live."""
        linked, live = self.files.linked(), self.files.live()
        ok = linked == expected and live is not None and live.id == expected
        return reading("marker", ok, f"`current` → {linked}, record → {live and live.id}", f"both {expected}")


def _from_record(record, changed: bool, detail: str) -> Rolled:
    return Rolled(
        record.live.id if record.live else None,
        record.previous.id if record.previous else None,
        changed,
        detail,
    )


def _parses(live: Release) -> ProbeReading:
    """Without Airflow components here, the live DAG folder parsing is what can be checked."""
    report = parse_release(live)
    return reading("parse", report.ok, report.summary().splitlines()[0], "every DAG file parses")
