"""Soak analysis as a team declares it: named metrics, each read by a provider and held to conditions and limits.

A metric's readings are *measurements*: successful, failed, error (the provider could not
read: a stall, a refused connection) or inconclusive (too little data). Failures beyond
`failure_limit`, or errors in a row beyond `consecutive_error_limit`, fail the metric and
roll the environment back; a metric still inconclusive when the soak ends does what its
`inconclusive` says. With no `analysis:`, an environment gets `default_analysis`, which
never rolls back on one stalled answer.
"""

from __future__ import annotations

import operator
import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Discriminator, Field, field_validator, model_validator

from airagent.config import promql
from airagent.config.base import Duration, Model, Name

OPERATORS = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_COMPARISON = re.compile(r"result\s*(<=|>=|==|!=|<|>)\s*(\S+)")
CONDITION_FORMS = "`result < 0.1`, `result == pass`, or several joined by `and` / `or` (and binds first)"


def _comparisons(condition: str) -> list[list[tuple[str, str]]]:
    """`a and b or c` as [[a, b], [c]]; each comparison as (operator, operand)."""
    alternatives = []
    for alternative in re.split(r"\s+or\s+", condition.strip()):
        parts = []
        for part in re.split(r"\s+and\s+", alternative):
            found = _COMPARISON.fullmatch(part.strip())
            if not found:
                raise ValueError(f"{part.strip()!r} is not a condition; write one like {CONDITION_FORMS}")
            parts.append((found[1], found[2].strip("'\"")))
        alternatives.append(parts)
    return alternatives


def holds(condition: str, result: str) -> bool:
    """Whether a reading meets a condition. Numbers compare as numbers; anything else as words, where only
    `==` and `!=` mean something (an ordering of words is never true)."""
    for alternative in _comparisons(condition):
        if all(_compare(result, op, operand) for op, operand in alternative):
            return True
    return False


def _compare(result: str, op: str, operand: str) -> bool:
    try:
        return bool(OPERATORS[op](float(result), float(operand)))
    except ValueError:
        if op in ("==", "!="):
            return bool(OPERATORS[op](result.strip().lower(), operand.lower()))
        return False


def _condition(value: str) -> str:
    _comparisons(value)
    return value.strip()


Condition = Annotated[str, AfterValidator(_condition)]
Inconclusive = Literal["continue", "pause", "rollback"]


class _Metric(Model):
    name: Name
    interval: Duration | None = Field(
        None, gt=timedelta(0), description="how often it is read; default: the environment's probe_interval"
    )
    failure_limit: int = Field(0, ge=0, description="failed measurements tolerated; one more fails the metric")
    consecutive_error_limit: int = Field(
        4, ge=0, description="errors in a row tolerated (the provider erred or timed out); one more fails the metric"
    )
    inconclusive: Inconclusive = Field(
        "continue",
        description="when the soak ends with too little data: `continue` the train, `pause` it and notify until "
        "`approve` or `abort`, or `rollback`",
    )

    def held_to(self) -> str:
        """What the metric is held to, for the status and the rollback reason."""
        return f"fails after {self.failure_limit + 1} failed, or {self.consecutive_error_limit + 1} errors in a row"


class ChangedDagsPolicy(Model):
    """How the changed-DAG judge tells a worse DAG version from noise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(0.05, gt=0, lt=1, description="significance of each one-sided test")
    min_new: int = Field(
        3, ge=1, description="finished task instances on the new version (and before it) to judge failures"
    )
    min_duration_samples: int = Field(5, ge=2, description="successful durations per task and side before judging")
    failure_margin: float = Field(
        0.2, ge=0, le=1, description="the new failure rate must exceed the old by this, with probability 1 - alpha"
    )
    duration_ratio: float = Field(1.5, ge=1, description="the new median duration must be at least this times the old")
    new_dag_failure_rate: float = Field(0.5, gt=0, lt=1, description="what a DAG with no earlier version is held to")
    history: Duration = Field(
        timedelta(days=7), gt=timedelta(0), description="how far back before the roll the earlier versions' runs count"
    )


AirflowMeasure = Literal["health", "components", "import_errors", "task_failure_rate", "changed_dags"]


class AirflowMetric(_Metric):
    """Read from the environment's own Airflow: its health, its components (processes or pods), its import errors,
    its task failure rate pooled over every DAG (with the thresholds of the environment's `probes:`), or each
    changed DAG's new version against its previous one (`changed_dags`)."""

    provider: Literal["airflow"] = "airflow"
    measure: AirflowMeasure
    judge: ChangedDagsPolicy = Field(ChangedDagsPolicy(), description="for `changed_dags`")


class WebhookMetric(_Metric):
    """A team's own HTTP check, asked with GET and `release` and `commit`: it answers JSON with a `result`
    (`pass`, `fail`, `inconclusive` or a number) or, without one, 2xx for pass and anything else for fail."""

    provider: Literal["webhook"]
    url_env: str = Field(description="environment variable, on the worker, holding the URL (it may carry a token)")
    success: Condition | None = "result == pass"
    failure: Condition | None = "result == fail"
    timeout: Duration = Field(timedelta(seconds=10), gt=timedelta(0))


class JobMetric(_Metric):
    """A command run in the release's runtime, in the validation sandbox (no deployer secrets): its last output
    line is the result. Without conditions, exit code 0 is successful and any other failed."""

    provider: Literal["job"]
    command: list[str] = Field(min_length=1, description="program and arguments, run in the release's folder")
    success: Condition | None = None
    failure: Condition | None = None
    timeout: Duration = Field(timedelta(minutes=2), gt=timedelta(0))


class PrometheusMetric(_Metric):
    """A PromQL instant query through Prometheus' HTTP API, each series of its answer held to the conditions.
    `{{environment}}`, `{{release}}` and `{{dag_id}}` stand in quoted label values (a query naming `{{dag_id}}`
    is asked once per changed DAG); `{{soak_start}}` (unix seconds) and `{{soak_duration}}` (like `95s`, for a
    range) anywhere. No series, or NaN, is inconclusive; a Prometheus that cannot answer is an error."""

    provider: Literal["prometheus"]
    address: str | None = Field(
        None, description="Prometheus' URL, like http://prometheus:9090; with a login in it, use address_env"
    )
    address_env: str | None = Field(
        None, description="environment variable, on the worker, holding Prometheus' URL (it may carry a login)"
    )
    query: str = Field(min_length=1, description=f"PromQL; template variables: {', '.join(promql.VARIABLES)}")
    success: Condition | None = None
    failure: Condition | None = None
    timeout: Duration = Field(timedelta(seconds=10), gt=timedelta(0))

    @field_validator("query")
    @classmethod
    def _template(cls, query: str) -> str:
        if found := promql.problems(query):
            raise ValueError("; ".join(found))
        return query

    @model_validator(mode="after")
    def _complete(self) -> PrometheusMetric:
        if (self.address is None) == (self.address_env is None):
            raise ValueError("give Prometheus' URL in address, or the variable holding it in address_env (one)")
        if not self.success and not self.failure:
            raise ValueError(f"give a success and/or a failure condition, like {CONDITION_FORMS}")
        return self


Metric = Annotated[AirflowMetric | WebhookMetric | JobMetric | PrometheusMetric, Discriminator("provider")]
PROVIDERS = ("airflow", "webhook", "job", "prometheus")


class Analysis(Model):
    metrics: list[Metric] = Field(min_length=1)

    @field_validator("metrics")
    @classmethod
    def _unique(cls, metrics: list[Metric]) -> list[Metric]:
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique within an analysis, got {names}")
        return metrics


def default_analysis(webhooks: list[WebhookMetric] | None = None) -> Analysis:
    """What an environment is held to without an `analysis:`. One stalled or 503 answer is an error, and only
    three in a row fail; an unhealthy answer or a dead component fails on its second reading; a new import
    error at once (it is deterministic); a changed DAG only when its runs show it is worse, twice."""
    return Analysis(
        metrics=[
            AirflowMetric(name="health", measure="health", failure_limit=1, consecutive_error_limit=2),
            AirflowMetric(name="components", measure="components", failure_limit=1, consecutive_error_limit=2),
            AirflowMetric(name="import_errors", measure="import_errors", consecutive_error_limit=2),
            AirflowMetric(name="changed_dags", measure="changed_dags", failure_limit=1, consecutive_error_limit=2),
            *(webhooks or []),
        ]
    )
