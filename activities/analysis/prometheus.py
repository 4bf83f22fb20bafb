"""The `prometheus` provider: a PromQL instant query through Prometheus' HTTP API, each series held to the metric's
conditions.

What an answer means:
- a scalar, or a vector of one series: its value, judged like any other reading;
- several series: each judged; the reading fails when any fails (naming those series' labels), else is
  inconclusive when any is, else successful;
- no series at all, or NaN: inconclusive. No data says nothing either way (a query over a counter nobody
  has incremented yet answers nothing); write `... or vector(0)` where no series means zero;
- a Prometheus that cannot answer (unreachable, timed out, or refusing the query, whose message is shown):
  an error, which the metric's `consecutive_error_limit` bounds, never a failure of the release.

A query naming `{{dag_id}}` is asked once per DAG Airflow re-serialized since the roll (the first MAX_DAGS),
and a failed reading names the DAGs whose series failed, so the regression is traced to their commits.
The address may carry a login, so it is never shown.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from activities.analysis.airflow import MAX_DAGS
from activities.analysis.outside import SHOWN, judged, measurement
from airagent import tls
from airagent.config import promql
from airagent.config.analysis import PrometheusMetric
from airagent.models.analysis import Measurement, Phase

# The series a reading names, and how much of each label value it shows.
SHOWN_SERIES, SHOWN_LABEL = 3, 40
# Worst first: the reading of several series is the worst of theirs.
WORST = (Phase.failed, Phase.inconclusive, Phase.successful)


@dataclass(frozen=True)
class Soak:
    """What the query's template variables stand for in this soak."""

    environment: str
    release: str
    start: datetime

    def values(self, dag_id: str = "") -> dict[str, str]:
        seconds = (datetime.now(UTC) - self.start).total_seconds()
        return {
            "environment": self.environment,
            "release": self.release,
            "dag_id": dag_id,
            "soak_start": str(int(self.start.timestamp())),
            "soak_duration": f"{max(1, math.ceil(seconds))}s",
        }


@dataclass(frozen=True)
class Series:
    """One series' reading: its labels and the DAG it was asked for, judged."""

    labels: dict[str, str]
    dag_id: str | None
    reading: Measurement


def per_dag(metric: PrometheusMetric) -> bool:
    return "dag_id" in promql.names(metric.query)


def measure(metric: PrometheusMetric, soak: Soak, dag_ids: list[str] | None = None) -> Measurement:
    """One reading: the query asked once, or once per changed DAG when it names `{{dag_id}}` (`dag_ids` None:
    no Airflow here to say which DAGs changed)."""
    base = metric.address or os.environ.get(metric.address_env or "")
    if not base:
        return _error(metric, f"{metric.address_env} is not set on the worker; set it to Prometheus' URL")
    if not per_dag(metric):
        return _combined(metric, _ask(metric, base, soak.values(), None), 0)
    if dag_ids is None:
        return measurement(metric.name, Phase.inconclusive, "not read", "no Airflow here to say which DAGs changed")
    if not dag_ids:
        return measurement(metric.name, Phase.successful, "no changed DAGs", "")
    read = dag_ids[:MAX_DAGS]
    found: list[Series] = []
    for dag_id in read:
        answer = _ask(metric, base, soak.values(dag_id), dag_id)
        if isinstance(answer, Measurement):
            return answer  # an error: Prometheus did not answer for every DAG
        found += answer or [Series({}, dag_id, measurement(metric.name, Phase.inconclusive, "no data", "no series"))]
    return _combined(metric, found, len(dag_ids) - len(read))


def _ask(metric: PrometheusMetric, base: str, values: dict[str, str], dag_id: str | None) -> list[Series] | Measurement:
    """Each series of one query's answer, judged; or the error that kept Prometheus from answering."""
    seconds = metric.timeout.total_seconds()
    try:
        # POST: a long query fits, and it stays out of proxies' access logs.
        answer = httpx.post(
            f"{base.rstrip('/')}/api/v1/query",
            data={"query": promql.render(metric.query, values), "timeout": f"{seconds:g}"},
            timeout=seconds + 5,
            verify=tls.context(),
        )
    except httpx.TimeoutException:
        return _error(metric, f"no answer within {metric.timeout}")
    except (httpx.HTTPError, httpx.InvalidURL) as err:
        return _error(metric, f"Prometheus did not answer ({type(err).__name__})")
    try:
        body = answer.json()
    except ValueError:
        return _error(metric, f"HTTP {answer.status_code}, not Prometheus' query API; check the address")
    if not isinstance(body, dict):
        return _error(metric, f"HTTP {answer.status_code}, not Prometheus' query API; check the address")
    if body.get("status") != "success":
        kind = body.get("errorType", f"HTTP {answer.status_code}")
        return _error(metric, f"Prometheus refused the query ({kind}): {body.get('error', 'no reason given')}")
    try:
        return _series(metric, body["data"]["resultType"], body["data"]["result"], dag_id)
    except (KeyError, TypeError, IndexError):
        return _error(metric, "an answer not shaped like Prometheus' query API; check the address")


def _series(metric: PrometheusMetric, kind: str, result: Any, dag_id: str | None) -> list[Series] | Measurement:
    if kind in ("scalar", "string"):
        return [Series({}, dag_id, _judged(metric, str(result[1])))]
    if kind == "vector":
        return [Series(dict(s["metric"]), dag_id, _judged(metric, str(s["value"][1]))) for s in result]
    return _error(metric, f"the query answers a {kind}; ask for an instant value, like max_over_time(x[5m])")


def _judged(metric: PrometheusMetric, value: str) -> Measurement:
    if value.strip().lower() == "nan":
        return measurement(metric.name, Phase.inconclusive, value, "NaN: no data to judge")
    return judged(metric, value)


def _combined(metric: PrometheusMetric, found: list[Series] | Measurement, left: int) -> Measurement:
    """One reading of every series: the worst, naming the series that made it so."""
    if isinstance(found, Measurement):
        return found
    more = f" ({left} more DAGs not read)" if left else ""
    if not found:
        return measurement(metric.name, Phase.inconclusive, "no data", f"the query answered no series{more}")
    if len(found) == 1:
        series, reading = found[0], found[0].reading
        detail = f"{series.dag_id}: {reading.detail}" if series.dag_id else reading.detail
        dags = [series.dag_id] if series.dag_id and reading.phase == Phase.failed else []
        return reading.model_copy(update={"detail": (detail + more)[:SHOWN], "dag_ids": dags})
    phase = next(p for p in WORST if any(s.reading.phase == p for s in found))
    worst = [s for s in found if s.reading.phase == phase]
    value = f"{len(worst)} of {len(found)} series {phase}"
    shown = "; ".join(f"{_named(s, found)} = {s.reading.value}" for s in worst[:SHOWN_SERIES])
    if len(worst) > SHOWN_SERIES:
        shown += f"; {len(worst) - SHOWN_SERIES} more"
    reading = measurement(metric.name, phase, value, f"{worst[0].reading.detail}: {shown}{more}")
    if phase == Phase.failed:
        reading.dag_ids = sorted({s.dag_id for s in worst if s.dag_id})
    return reading


def _named(series: Series, among: list[Series]) -> str:
    """A series by the labels that tell it from the others, as PromQL writes a selector, each value cut short:
    `{dag_id="etl", task_id="load"}`; by its DAG where no label does."""
    keys = {k for s in among for k in s.labels} - {"__name__"}
    telling = sorted(k for k in keys if len({s.labels.get(k) for s in among}) > 1)
    if not telling:
        return series.dag_id or "{}"
    return "{" + ", ".join(f'{k}="{series.labels.get(k, "")[:SHOWN_LABEL]}"' for k in telling) + "}"


def _error(metric: PrometheusMetric, detail: str) -> Measurement:
    return measurement(metric.name, Phase.error, "", detail)
