"""A pipeline: one branch of one repo, deployed to an ordered list of environments, and everything it is set with."""

from __future__ import annotations

import fnmatch
from datetime import timedelta
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import Field, field_validator, model_validator

from airagent.config.analysis import Analysis
from airagent.config.base import Duration, Model, Name, Ref, RepoPath, _no_option, is_url
from airagent.config.errors import UnknownEnvironment
from airagent.config.targets import EnvironmentSettings, KubernetesTarget, LocalTarget, host_queue
from airagent.config.validation import ValidationSettings


class Notification(Model):
    """A receiver of train outcomes. Its URL is a secret, so the file names where to read it, never the URL."""

    type: Literal["webhook", "slack"] = "webhook"
    url_env: str = Field(description="environment variable, on the worker, holding the URL")
    on: list[Literal["succeeded", "failed", "rolled_back", "aborted", "held", "paused"]] = Field(
        ["succeeded", "failed", "rolled_back", "held", "paused"],
        description="train outcomes to tell; `held`: a train that held commits back, whatever its outcome; "
        "`paused`: a soak too inconclusive to judge, waiting for `approve` or `abort`",
    )


class DeployWindow(Model):
    """From each time `cron` fires (in `timezone`), for `duration`. A deny window wins over any allow window;
    when a pipeline has allow windows, trains start only inside one."""

    kind: Literal["allow", "deny"]
    cron: str = Field(description="when the window opens, e.g. '0 9 * * 1-5'")
    duration: Duration = Field(gt=timedelta(0))
    timezone: str = "UTC"
    name: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression; use five fields, like '0 9 * * 1-5'")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone; use an IANA name like 'Europe/Berlin'") from None
        return value


class Classification(Model):
    """Globs (fnmatch: `*` crosses folders) mapping changed files to kinds.

    The first kind that matches wins, in the order: ignored, image, dependencies,
    config, plugins, dags. A file no glob matches gets `unmatched`.
    """

    ignored: list[str] = ["*.md", "docs/*", "tests/*", ".github/*", ".ci/*", ".gitignore", "airagent.yaml"]
    image: list[str] = ["Dockerfile", "Containerfile", "image/*"]
    dependencies: list[str] = ["requirements*.txt", "constraints*.txt", "packages.txt"]
    config: list[str] = ["airflow.cfg", "config/*", "airflow_local_settings.py", "webserver_config.py"]
    plugins: list[str] = ["plugins/*"]
    dags: list[str] = ["dags/*"]
    unmatched: Literal["ignored", "image", "dependencies", "config", "plugins", "dags"] = Field(
        "config", description="kind of a file no glob matches; `config` restarts, which is the safe side"
    )

    def kind_of(self, path: str) -> str:
        for kind in ("ignored", "image", "dependencies", "config", "plugins", "dags"):
            if any(fnmatch.fnmatchcase(path, pattern) for pattern in getattr(self, kind)):
                return kind
        return self.unmatched


class Runtime(Model):
    python: str = "3.11"
    airflow: str = "3.3.2"
    requirements: str = Field("requirements.txt", description="requirements file in the repo, if present")


class ImageSettings(Model):
    """The runtime image of kubernetes environments: tagged by the runtime hash, so it is built once per runtime."""

    repository: str = Field(
        description="image repository, e.g. registry.example.com/data/airflow; the tag is always the runtime hash"
    )
    builder: Literal["external", "kaniko"] = Field(
        "external",
        description="external: CI builds and pushes, and passes the image with deploy/notify; "
        "kaniko: a Job in the cluster builds it from the commit and pushes",
    )
    dockerfile: RepoPath = "Dockerfile"
    context: str | None = Field(
        None,
        description="git URL the cluster clones the commit from (kaniko, and the "
        "validator Job); default the pipeline's repo when it is a URL",
    )
    namespace: str | None = Field(
        None, description="namespace of the build Job; default the first kubernetes environment's"
    )
    push_secret: str | None = Field(None, description="Secret (kubernetes.io/dockerconfigjson) kaniko pushes with")
    kaniko_image: str = "gcr.io/kaniko-project/executor:v1.23.2"
    build_deadline: Duration = Field(timedelta(minutes=30), gt=timedelta(0))
    git_sync_image: str = Field(
        "registry.k8s.io/git-sync/git-sync:v4.4.0",
        description="clones the commit for the validator Job, as the chart's git-sync does",
    )
    git_secret: str | None = Field(
        None,
        description="Secret with GITSYNC_USERNAME and GITSYNC_PASSWORD for a "
        "private repository (the chart's dags.gitSync.credentialsSecret)",
    )
    validate_deadline: Duration = Field(
        timedelta(minutes=15), gt=timedelta(0), description="how long the validator Job may run, image pull included"
    )

    @field_validator("repository")
    @classmethod
    def _untagged(cls, value: str) -> str:
        last = value.split("/")[-1]
        if value.startswith("-") or any(c.isspace() for c in value) or "@" in last or ":" in last:
            raise ValueError(f"{value!r}: give the repository without tag or digest, like registry.example.com/airflow")
        return value

    @field_validator("context")
    @classmethod
    def _context(cls, value: str | None) -> str | None:
        return _no_option(value)


class KubernetesPreviews(Model):
    """Previews of a pipeline whose first environment is `kubernetes`: each a namespace of its own, holding a copy
    of the chart's objects in the first environment's namespace, with the preview values over them."""

    namespace_prefix: str = Field(
        "airagent-preview-",
        description="a preview's namespace is this, then the pipeline and branch, then a hash; the worker's "
        "ServiceAccount may create and delete namespaces with this prefix only (infra/policies.yaml)",
    )
    values: RepoPath | None = Field(
        None,
        description="values file in the repository, read at the branch's commit: replicas per component, Airflow "
        "config sections and env of the preview's copy (README: Previews on Kubernetes); default every "
        "component at 1 replica",
    )
    url: str | None = Field(
        None,
        description="the preview's Airflow as people reach it, with {namespace}: e.g. "
        "https://{namespace}.previews.example.com for a wildcard Ingress; default a `kubectl port-forward` hint",
    )

    @field_validator("namespace_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if (
            not 1 <= len(value) <= 30
            or not value[0].isalpha()
            or not all(c.islower() or c.isdigit() or c == "-" for c in value)
        ):
            raise ValueError(
                f"{value!r}: a namespace prefix is 1 to 30 lower-case letters, digits and '-', starting with a letter"
            )
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "{namespace}" not in value:
            raise ValueError(f"{value!r} names no {{namespace}}; every preview needs a URL of its own")
        try:
            value.format(namespace="x")
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"{value!r}: only {{namespace}} may stand in braces") from None
        return value


class PreviewSettings(Model):
    """Previews: a short-lived Airflow per branch for its authors (`airagent preview up`), beside the pipeline's
    environments and never touching them. Each costs a host what one environment costs, hence the cap."""

    cap: int = Field(
        3, ge=0, description="previews that may run at once for this pipeline; `preview up` beyond is refused"
    )
    ttl: Duration = Field(
        timedelta(hours=8), gt=timedelta(0), description="how long a preview lives unless `preview up` extends it"
    )
    poll_interval: Duration = Field(
        timedelta(seconds=10), gt=timedelta(0), description="how often a preview looks for new commits on its branch"
    )
    first_port: int = Field(
        28000,
        ge=1024,
        le=65000,
        description="local previews take five free ports each, looked for from here up",
    )
    kubernetes: KubernetesPreviews = KubernetesPreviews()


class _Pipeline(Model):
    repo: Ref = Field(".", description="path of a git repository, or a URL to clone")
    branch: Ref = "main"
    dag_folder: RepoPath = "dags"
    plugins_folder: RepoPath = "plugins"
    allow_history_rewrite: bool = Field(False, description="deploy even when the live commit is not an ancestor")
    isolation: bool = Field(
        True,
        description="hold back the commits a validation failure traces to and deploy "
        "the rest; off: a train deploys all its commits or none",
    )
    sandbox: bool = Field(
        True,
        description="parse DAG files and build runtimes in a bubblewrap sandbox (no network, secrets or other "
        "processes); off: repository code runs with the worker's own rights, and the status warns",
    )
    poll_interval: Duration = Field(
        timedelta(seconds=30),
        gt=timedelta(0),
        description="how often the conductor looks for new commits on the branch",
    )
    environments: list[EnvironmentSettings]
    windows: list[DeployWindow] = Field([], description="when trains may start; none means always")
    notifications: list[Notification] = []
    teams: dict[str, list[str]] = Field({}, description="team -> globs of the paths it owns, to name who broke what")
    validation: ValidationSettings = ValidationSettings()
    image: ImageSettings | None = Field(None, description="how kubernetes environments get their runtime image")
    analyses: dict[Name, Analysis] = Field({}, description="analyses by name, for environments to share")
    previews: PreviewSettings = PreviewSettings()

    @field_validator("environments")
    @classmethod
    def _unique_names(cls, envs: list[EnvironmentSettings]) -> list[EnvironmentSettings]:
        names = [e.name for e in envs]
        if not envs:
            raise ValueError("a pipeline needs at least one environment")
        if len(set(names)) != len(names):
            raise ValueError(f"environment names must be unique, got {names}")
        return envs

    @model_validator(mode="after")
    def _named_analyses(self) -> Self:
        """An environment naming an analysis gets it, so a train's snapshot carries the metrics themselves."""
        for env in self.environments:
            if isinstance(env.analysis, str):
                if env.analysis not in self.analyses:
                    known = ", ".join(sorted(self.analyses)) or "none are declared"
                    raise ValueError(
                        f"environment {env.name}: analysis {env.analysis!r} is not under `analyses` ({known}); "
                        "declare it there or write the metrics in place"
                    )
                env.analysis = self.analyses[env.analysis]
        return self


class PipelineDeclaration(_Pipeline):
    """A pipeline as written in the file; classification and runtime default to the top level."""

    classification: Classification | None = None
    runtime: Runtime | None = None

    @field_validator("environments")
    @classmethod
    def _probes_or_analysis(cls, envs: list[EnvironmentSettings]) -> list[EnvironmentSettings]:
        """A `probes:` block beside an `analysis:` would be silently unread; only its timeout still counts."""
        for env in envs:
            unread = sorted(set(env.probes.model_fields_set) - {"timeout"}) if env.analysis is not None else []
            if unread:
                raise ValueError(
                    f"environment {env.name}: probes.{unread[0]} is not read when `analysis:` is set; write it "
                    "as a metric of the analysis (a webhook as `provider: webhook`, the failure rate as "
                    "`measure: task_failure_rate`)"
                )
        return envs

    @field_validator("environments")
    @classmethod
    def _own_ports(cls, envs: list[EnvironmentSettings]) -> list[EnvironmentSettings]:
        """Checked where the file is read, not where a train's snapshot is: history must always decode."""
        running = [(e.name, e.target) for e in envs if isinstance(e.target, LocalTarget) and e.target.airflow]
        for i, (a, at) in enumerate(running):
            for b, bt in running[i + 1 :]:
                if set(at.ports) & set(bt.ports):
                    apart = len(at.ports) if at.port < bt.port else len(bt.ports)
                    raise ValueError(
                        f"{a} and {b} share ports (each uses port to port+4, port+5 with metrics: "
                        f"{at.port} and {bt.port}); give them ports at least {apart} apart"
                    )
        return envs


class PipelineSettings(_Pipeline):
    """One pipeline as a train sees it: resolved, absolute, self-contained."""

    name: Name
    classification: Classification = Classification()
    runtime: Runtime = Runtime()

    def teams_of(self, paths: list[str]) -> list[str]:
        return sorted(
            {
                team
                for team, globs in self.teams.items()
                for path in paths
                if any(fnmatch.fnmatchcase(path, g) for g in globs)
            }
        )

    def environment(self, name: str) -> EnvironmentSettings:
        for env in self.environments:
            if env.name == name:
                return env
        names = [e.name for e in self.environments]
        raise UnknownEnvironment(f"pipeline {self.name!r} has no environment {name!r}; it has {names}")

    def task_queue(self, shared: str, environment: str | None = None) -> str:
        """Where a stage's activity goes: an environment's own host queue; the train's other stages (diff reads
        every record, a release is built where it is rolled) go to the one host its local environments name."""
        if environment is not None:
            return self.environment(environment).task_queue(shared)
        hosts = {e.host for e in self.environments if e.host}
        return host_queue(shared, hosts.pop()) if len(hosts) == 1 else shared

    @property
    def repo_is_url(self) -> bool:
        return is_url(self.repo)

    @property
    def host_bound(self) -> bool:
        """Every environment is `local`, folders on the host whose worker runs its trains. Otherwise any worker
        of the fleet may run any stage, so release commits must be reachable from each one's clone."""
        return all(isinstance(e.target, LocalTarget) for e in self.environments)

    @property
    def image_from_ci(self) -> bool:
        """Its trains roll the runtime image CI built: kubernetes environments with the `external` builder."""
        return (
            self.image is not None
            and self.image.builder == "external"
            and any(isinstance(e.target, KubernetesTarget) for e in self.environments)
        )
