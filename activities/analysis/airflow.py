"""The `airflow` provider: measurements read from the environment's own Airflow.

Health, components and import errors come from the target's probe round (one per soak
round, whatever reads it), where a reading that could not be taken is marked an error.
`changed_dags` reads each changed DAG's task instances by DAG version and asks the judge.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from activities.airflow_api import AirflowApi
from activities.analysis import changed_dags as judge
from activities.analysis.airflow_samples import samples
from airagent.config.analysis import AirflowMetric
from airagent.models import ProbeReading
from airagent.models.analysis import Measurement, Phase

# Which of a probe round's readings each measure is; `pods` is the components of a kubernetes environment.
READINGS = {
    "health": ("health",),
    "components": ("components", "pods"),
    "import_errors": ("import_errors",),
    "task_failure_rate": ("task_failure_rate",),
}
# Readings no metric claims: the environment's own record. Failing, someone moved it: the soak fails at once.
CLAIMED = {name for names in READINGS.values() for name in names}
# The changed DAGs a round reads; the rest are named as left out, so the status never claims more than was read.
MAX_DAGS = 50


def from_readings(metric: AirflowMetric, readings: list[ProbeReading]) -> Measurement:
    found = next((r for r in readings if r.probe in READINGS[metric.measure]), None)
    at = datetime.now(UTC)
    if found is None:
        return Measurement(
            metric=metric.name, phase=Phase.inconclusive, value="not read", detail="no Airflow here to read", at=at
        )
    phase = Phase.error if found.error else Phase.successful if found.ok else Phase.failed
    return Measurement(
        metric=metric.name, phase=phase, value=found.reading, detail=found.threshold, at=found.at, dag_ids=found.dag_ids
    )


def changed(metric: AirflowMetric, api: AirflowApi | None, dag_ids: list[str], since: datetime) -> Measurement:
    """Each changed DAG judged on its new version against its earlier ones: failed when any is worse (naming
    each such DAG), inconclusive when one has too little data and none is worse."""
    at = datetime.now(UTC)
    if api is None:
        return Measurement(
            metric=metric.name, phase=Phase.inconclusive, value="not read", detail="no Airflow here", at=at
        )
    if not dag_ids:
        return Measurement(metric=metric.name, phase=Phase.successful, value="no changed DAGs", at=at)
    read, left = dag_ids[:MAX_DAGS], dag_ids[MAX_DAGS:]
    try:
        verdicts = [judge.judge(samples(api, d, since, metric.judge.history), metric.judge) for d in read]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:
        return Measurement(
            metric=metric.name, phase=Phase.error, value="", detail=f"{type(err).__name__}: {err}", at=at
        )
    worse = [v for v in verdicts if v.phase == Phase.failed]
    unsure = [v for v in verdicts if v.phase == Phase.inconclusive]
    phase = Phase.failed if worse else Phase.inconclusive if unsure else Phase.successful
    shown = worse or unsure or verdicts
    value = f"{len(worse)} worse, {len(unsure)} inconclusive of {len(read)} changed DAGs"
    if left:
        value += f" ({len(left)} more not read)"
    return Measurement(
        metric=metric.name,
        phase=phase,
        value=value,
        detail="; ".join(v.detail for v in shown[:3]),
        at=at,
        dag_ids=sorted(v.dag_id for v in worse),
    )
