"""Environments: where each runs (a `local` or a `kubernetes` target), how long it soaks, and what soak holds it to."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from airagent.config.analysis import AirflowMetric, Analysis, WebhookMetric, default_analysis
from airagent.config.base import Duration, Model, Name, _no_option


class LocalMetrics(Model):
    """Airflow's own metrics of a local environment, for a Prometheus on the same host."""

    statsd: bool = Field(
        False,
        description="send Airflow's StatsD metrics (with their dag_id, task_id, state... as tags) to an exporter "
        "airagent runs beside the components, which serves them for Prometheus at http://127.0.0.1:<port+5>/metrics; "
        "takes effect when the components next start",
    )


class LocalTarget(Model):
    type: Literal["local"] = "local"
    path: Path = Field(description="directory holding releases/, the `current` symlink and manifest.json")
    host: str | None = Field(
        None,
        description="the host this folder (and its Airflow) is on: its roll, rollback and soak run only on the "
        "worker there, which polls `<task queue>@<host>` (AIRAGENT_HOST, default its host name); "
        "unset: any worker, for a pipeline whose workers all run on one host",
    )
    airflow: bool = Field(
        True,
        description="run Airflow's components here (api-server, scheduler, dag-processor, "
        "triggerer); false leaves only the files, for an Airflow run elsewhere",
    )
    port: int = Field(
        8080,
        ge=1024,
        le=65530,
        description="the api-server's port; the environment also uses the next four ports (five with metrics)",
    )
    database_url_env: str | None = Field(
        None,
        description="environment variable, on the worker, holding the metadata database URL; "
        "default: SQLite in the environment's folder",
    )
    drain_timeout: Duration = Field(
        timedelta(minutes=10), ge=timedelta(0), description="how long a restart waits for running tasks to finish"
    )
    live_timeout: Duration = Field(
        timedelta(minutes=2),
        gt=timedelta(0),
        description="how long a roll waits for new DAG code to be parsed, or for components to be healthy",
    )
    metrics: LocalMetrics = LocalMetrics()

    @property
    def ports(self) -> range:
        return range(self.port, self.port + (6 if self.metrics.statsd else 5))

    @property
    def statsd_port(self) -> int:
        """The exporter's: StatsD in over UDP, /metrics out over TCP, on the one number after Airflow's ports."""
        return self.port + 5


def _dns_name(value: str) -> str:
    if (
        not value
        or len(value) > 253
        or not all((c.isalnum() and c.islower()) or c.isdigit() or c in "-." for c in value)
    ):
        raise ValueError(f"{value!r} is not a Kubernetes name; use lower-case letters, digits, '-' and '.'")
    return value


class KubernetesTarget(Model):
    """Where an environment runs in Kubernetes and how airagent may move it.

    Workload names default to what the official Airflow chart makes for a release called
    `airflow`; set `release` to match `helm install <release>`.
    """

    type: Literal["kubernetes"] = "kubernetes"
    namespace: str = Field(description="namespace the chart is installed in")
    release: str = Field("airflow", description="Helm release name; workload names derive from it")
    deployments: list[str] | None = Field(
        None, description="Deployments to roll; default <release>-scheduler, -api-server, -dag-processor, -triggerer"
    )
    statefulsets: list[str] | None = Field(None, description="StatefulSets to roll; default <release>-worker")
    config_map: str | None = Field(
        "",
        description="the chart's Airflow config ConfigMap; default <release>-config, "
        "null when config is not managed through one",
    )
    workers: list[str] | None = Field(
        None, description="workloads whose pods run tasks and must drain; default the StatefulSets"
    )
    worker_drain: Duration = Field(
        timedelta(minutes=5), gt=timedelta(0), description="time a worker needs to finish its tasks when asked to stop"
    )
    dag_ref: str = Field(
        "airagent/{env}",
        description="git branch the GitDagBundle tracks, force-moved by airagent (never the pipeline's branch); "
        "{env} is the environment",
    )
    dag_remote: str | None = Field(
        None,
        description="git URL the GitDagBundle clones, where the ref is pushed; "
        "default the pipeline's repo when it is a URL",
    )
    rollout_deadline: Duration = Field(
        timedelta(minutes=15), gt=timedelta(0), description="how long a roll or rollback may take to become ready"
    )
    api_url: str | None = Field(
        None,
        description="the Airflow api-server's URL as the worker reaches it; without "
        "it a roll is confirmed by the pods only and soak probes only pods",
    )
    credentials_file: Path | None = Field(
        None,
        description="file holding `username:password` for the API (a mounted Secret); with neither this nor "
        "credentials_env, the worker's AIRAGENT_AIRFLOW_USERNAME and AIRAGENT_AIRFLOW_PASSWORD",
    )
    credentials_env: str | None = Field(
        None,
        description="environment variable, on the worker, holding `username:password` for the API; "
        "instead of credentials_file",
    )
    live_timeout: Duration = Field(
        timedelta(minutes=5),
        gt=timedelta(0),
        description="how long a roll waits for Airflow to serve the new DAG version",
    )
    context: str | None = Field(None, description="kubeconfig context; default the current one")
    kubeconfig: Path | None = Field(
        None, description="kubeconfig file; default $KUBECONFIG, ~/.kube/config or the in-cluster service account"
    )

    @field_validator("namespace", "release")
    @classmethod
    def _names(cls, value: str) -> str:
        return _dns_name(value)

    @field_validator("dag_ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        if value.startswith("-") or " " in value or ".." in value:
            raise ValueError(f"{value!r} is not a usable git ref; use something like 'airagent/{{env}}'")
        return value

    @field_validator("dag_remote")
    @classmethod
    def _remote(cls, value: str | None) -> str | None:
        return _no_option(value)

    def workloads(self) -> list[tuple[str, str]]:
        """(API plural, name) of every workload airagent rolls."""
        r = self.release
        deployments = (
            self.deployments
            if self.deployments is not None
            else [f"{r}-scheduler", f"{r}-api-server", f"{r}-dag-processor", f"{r}-triggerer"]
        )
        statefulsets = self.statefulsets if self.statefulsets is not None else [f"{r}-worker"]
        return [("deployments", n) for n in deployments] + [("statefulsets", n) for n in statefulsets]

    @property
    def chart_config(self) -> str | None:
        return f"{self.release}-config" if self.config_map == "" else self.config_map

    @property
    def drained(self) -> list[str]:
        return self.workers if self.workers is not None else [n for k, n in self.workloads() if k == "statefulsets"]


def _target_type(value: Any) -> str:
    # Payloads and files from before `kubernetes` existed carry no type: they are local.
    if isinstance(value, dict):
        return value.get("type", "local")
    return getattr(value, "type", "local")


TARGET_TYPES = ("local", "kubernetes")


Target = Annotated[
    Annotated[LocalTarget, Tag("local")] | Annotated[KubernetesTarget, Tag("kubernetes")],
    Discriminator(
        _target_type,
        custom_error_type="target_type",
        custom_error_message="target type must be 'local' or 'kubernetes'",
    ),
]


class WebhookProbe(Model):
    """An outside check of the environment (synthetic monitoring, a smoke-test service): healthy while it answers
    2xx to a GET. It knows nothing of DAGs, so a failure it finds is untraced: bisection finds the culprit."""

    name: Name
    url_env: str = Field(
        description="environment variable, on the worker, holding the URL (it may carry a "
        "token); asked with GET and the query parameters `release` and `commit`"
    )


class Probes(Model):
    """The settings soak had before `analysis:`; read as metrics of it (`metrics`), so an existing block still works."""

    failure_rate_tolerance: float = Field(
        0.1,
        ge=0,
        le=1,
        description="fail when the share of failed task instances during soak rises more than "
        "this above the share before the roll",
    )
    min_failed_tasks: int = Field(1, ge=1, description="...and at least this many failed during soak")
    baseline_window: Duration = Field(
        timedelta(hours=1), gt=timedelta(0), description="how far back before the roll the failure rate is measured"
    )
    timeout: Duration = Field(timedelta(seconds=10), gt=timedelta(0), description="per API request")
    webhooks: list[WebhookProbe] = []


class EnvironmentSettings(Model):
    name: Name
    target: Target
    soak: Duration = Field(timedelta(0), ge=timedelta(0), description="how long to watch the environment after a roll")
    probe_interval: Duration = Field(timedelta(seconds=30), gt=timedelta(0), description="how often soak checks")
    require_approval: bool = Field(False, description="hold the train before this environment until `approve`")
    probes: Probes = Probes()
    analysis: Analysis | Name | None = Field(
        None,
        description="what soak holds the environment to: metrics here, or the name of one under the pipeline's "
        "`analyses`; default: health, components, import errors and the changed-DAG judge",
    )
    smoke: Literal["off", "trigger"] = Field(
        "off", description="`trigger`: at the start of soak, run each changed DAG once, so soak has runs to judge"
    )
    smoke_dags: str | None = Field(None, description="with `smoke: trigger`, only the changed DAGs whose id matches")
    smoke_tags: list[str] = Field(
        [], description="with `smoke: trigger`, only the changed DAGs carrying one of these tags (any, if none given)"
    )

    def metrics(self) -> Analysis:
        """The analysis soak runs: the declared one (names are resolved when the pipeline is read), or the default
        with what a `probes:` block set."""
        if isinstance(self.analysis, Analysis):
            return self.analysis
        webhooks = [
            WebhookMetric(provider="webhook", name=w.name, url_env=w.url_env, consecutive_error_limit=2)
            for w in self.probes.webhooks
        ]
        analysis = default_analysis(webhooks)
        tuned = [
            f for f in ("failure_rate_tolerance", "min_failed_tasks", "baseline_window") if f in _tuned(self.probes)
        ]
        if tuned:  # a team that tuned the pooled failure rate keeps it
            analysis.metrics.append(AirflowMetric(name="task_failure_rate", measure="task_failure_rate"))
        return analysis

    @property
    def host(self) -> str | None:
        """The host whose worker alone may touch this environment; None: any worker."""
        return self.target.host if isinstance(self.target, LocalTarget) else None

    def task_queue(self, shared: str) -> str:
        """Where this environment's activities go: its host's queue beside the shared one, or the shared one."""
        return host_queue(shared, self.host) if self.host else shared


def _tuned(probes: Probes) -> set[str]:
    """The settings that differ from their defaults (what a file set is lost once a snapshot went through history)."""
    return {name for name, field in Probes.model_fields.items() if getattr(probes, name) != field.default}


def host_queue(shared: str, host: str) -> str:
    return f"{shared}@{host}"
