"""`airagent.yaml`: what a platform team declares, and the snapshot a train carries.

Relative paths are resolved against the file's folder when it is loaded, so the
snapshot in a train's input means the same thing on every worker of the host.
"""

from __future__ import annotations

import fnmatch
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_FILE = "airagent.yaml"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def _duration(value: Any) -> Any:
    """Accept `90`, `90s`, `5m`, `1h` as well as what pydantic itself reads."""
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_option(value: Any) -> Any:
    # Names and refs end up as git arguments; one starting with '-' would read as an option.
    if isinstance(value, str) and value.startswith("-"):
        raise ValueError(f"{value!r} must not start with '-'")
    return value


def _relative(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # pydantic names the wrong type
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{value!r} must be a path inside the repository, like 'dags'")
    return path.as_posix()


class Notification(Model):
    """A receiver of train outcomes. Its URL is a secret, so the file names where to read it, never the URL."""

    type: Literal["webhook", "slack"] = "webhook"
    url_env: str = Field(description="environment variable, on the worker, holding the URL")
    on: list[Literal["succeeded", "failed", "rolled_back", "aborted", "held"]] = Field(
        ["succeeded", "failed", "rolled_back", "held"],
        description="train outcomes to tell; `held`: a train that held commits back, whatever its outcome",
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


# Names end up in workflow ids and visibility queries: keep them plain.
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class LocalTarget(Model):
    type: Literal["local"] = "local"
    path: Path = Field(description="directory holding releases/, the `current` symlink and manifest.json")
    airflow: bool = Field(
        True,
        description="run Airflow's components here (api-server, scheduler, dag-processor, "
        "triggerer); false leaves only the files, for an Airflow run elsewhere",
    )
    port: int = Field(
        8080, ge=1024, le=65530, description="the api-server's port; the environment also uses the next four ports"
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

    @property
    def ports(self) -> range:
        return range(self.port, self.port + 5)


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
    dag_ref: str = Field("airagent/{env}", description="git ref the GitDagBundle tracks; {env} is the environment")
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
        description="file holding `username:password` for the API (a mounted Secret); "
        "AIRAGENT_AIRFLOW_PASSWORD on the worker wins",
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
    """What soak holds an environment to; any failing probe rolls it back."""

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


Ref = Annotated[str, BeforeValidator(_no_option)]
RepoPath = Annotated[str, BeforeValidator(_relative)]


# --- validation: what the validate stage checks beyond "it parses" ---------------------


class Placeholders(Model):
    """What DAG files get when they look up Variables, Connections or environment variables at parse time.

    The validator has no metadata database and no secrets, so without placeholders a file
    that reads a Variable at top level fails to parse here while it works in production.
    """

    enabled: bool = Field(
        True,
        description="give made-up values to lookups not listed below; off: such a lookup "
        "fails the file, naming what to add",
    )
    variables: dict[str, Any] = Field({}, description="Variable key -> value (JSON text for deserialize_json)")
    connections: dict[str, str | dict[str, Any]] = Field(
        {}, description="conn_id -> URI, or fields such as {conn_type: postgres, host: db}"
    )
    env: dict[str, str] = Field({}, description="environment variable -> value, for os.getenv in DAG files")


class ParseTime(Model):
    """Seconds one file may take to parse: over `warn` it is reported, over `fail` it fails the train."""

    warn: Duration | None = None
    fail: Duration | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ParseTime:
        if self.warn is not None and self.fail is not None and self.warn >= self.fail:
            raise ValueError(
                f"warn ({self.warn.total_seconds():g}s) must be below fail ({self.fail.total_seconds():g}s)"
            )
        return self


class Policies(Model):
    """Rules every DAG must follow; each is off until set, and each failure names the rule."""

    require_owner: bool = Field(False, description="every task has an owner other than Airflow's default 'airflow'")
    allowed_owners: list[str] | None = Field(None, description="every task's owner is one of these")
    require_tags: bool = Field(False, description="every DAG has at least one tag")
    required_tags: list[str] = Field([], description="every DAG carries all of these tags")
    min_retries: int | None = Field(None, ge=0, description="every task retries at least this many times")
    allowed_schedules: list[str | None] | None = Field(
        None,
        description="schedules DAGs may use, as written: '@daily', a cron line, null for none; "
        "'assets' for asset-triggered, 'every 1:00:00' for a timedelta",
    )
    forbidden_imports: list[str] = Field(
        [], description="modules DAG files must not import (a name covers its submodules), e.g. pandas"
    )


class ValidationSettings(Model):
    placeholders: Placeholders = Placeholders()
    parse_time: ParseTime = ParseTime()
    policies: Policies = Policies()
    allow_dag_removal: list[str] = Field(
        [],
        description="dag_ids that may disappear from the live release without an "
        "'Airagent-Allow-Dag-Removal: <dag_id>' commit trailer",
    )


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

    @field_validator("environments")
    @classmethod
    def _unique_names(cls, envs: list[EnvironmentSettings]) -> list[EnvironmentSettings]:
        names = [e.name for e in envs]
        if not envs:
            raise ValueError("a pipeline needs at least one environment")
        if len(set(names)) != len(names):
            raise ValueError(f"environment names must be unique, got {names}")
        return envs


class PipelineDeclaration(_Pipeline):
    """A pipeline as written in the file; classification and runtime default to the top level."""

    classification: Classification | None = None
    runtime: Runtime | None = None

    @field_validator("environments")
    @classmethod
    def _own_ports(cls, envs: list[EnvironmentSettings]) -> list[EnvironmentSettings]:
        """Checked where the file is read, not where a train's snapshot is: history must always decode."""
        running = [e for e in envs if isinstance(e.target, LocalTarget) and e.target.airflow]
        for i, a in enumerate(running):
            for b in running[i + 1 :]:
                if set(a.target.ports) & set(b.target.ports):
                    raise ValueError(
                        f"{a.name} and {b.name} share ports (each uses port to port+4: "
                        f"{a.target.port} and {b.target.port}); give them ports at least 5 apart"
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

    @property
    def repo_is_url(self) -> bool:
        return is_url(self.repo)

    @property
    def image_from_ci(self) -> bool:
        """Its trains roll the runtime image CI built: kubernetes environments with the `external` builder."""
        return (
            self.image is not None
            and self.image.builder == "external"
            and any(isinstance(e.target, KubernetesTarget) for e in self.environments)
        )


def is_url(repo: str) -> bool:
    return "://" in repo or repo.startswith("git@")


class AirAgentConfig(Model):
    classification: Classification = Classification()
    runtime: Runtime = Runtime()
    pipelines: dict[Name, PipelineDeclaration]

    def pipeline(self, name: str, base: Path) -> PipelineSettings:
        if name not in self.pipelines:
            raise ConfigError(f"unknown pipeline {name!r}; declared pipelines: {', '.join(self.pipelines)}")
        decl = self.pipelines[name]
        repo = decl.repo if is_url(decl.repo) else str((base / decl.repo).resolve())
        envs = [_resolved(e, base) for e in decl.environments]
        return PipelineSettings(
            name=name,
            repo=repo,
            branch=decl.branch,
            dag_folder=decl.dag_folder,
            plugins_folder=decl.plugins_folder,
            allow_history_rewrite=decl.allow_history_rewrite,
            isolation=decl.isolation,
            poll_interval=decl.poll_interval,
            environments=envs,
            windows=decl.windows,
            notifications=decl.notifications,
            teams=decl.teams,
            validation=decl.validation,
            image=decl.image,
            classification=decl.classification or self.classification,
            runtime=decl.runtime or self.runtime,
        )


def _resolved(env: EnvironmentSettings, base: Path) -> EnvironmentSettings:
    """Relative paths of a target mean the file's folder; a kubernetes target's names mean the cluster."""
    target = env.target
    if isinstance(target, LocalTarget):
        target = target.model_copy(update={"path": (base / target.path.expanduser()).resolve()})
    else:
        paths = {
            f: (base / p.expanduser()).resolve()
            for f in ("kubeconfig", "credentials_file")
            if (p := getattr(target, f)) is not None
        }
        target = target.model_copy(update=paths)
    return env.model_copy(update={"target": target})


class ConfigError(Exception):
    """A mistake in airagent.yaml, worded for the person who has to fix it."""


class UnknownEnvironment(ConfigError):
    """A command named an environment the pipeline does not have."""


def load(path: Path | str = DEFAULT_FILE) -> tuple[AirAgentConfig, Path]:
    """Read and check the file; returns the config and the folder relative paths start from."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; create it or pass --config PATH") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', err)}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'pipelines' key at the top")
    try:
        config = AirAgentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, path, text)) from None
    return config, path.parent.resolve()


def load_pipeline(name: str, path: Path | str = DEFAULT_FILE) -> PipelineSettings:
    config, base = load(path)
    return config.pipeline(name, base)


def _describe(err: ValidationError, path: Path, text: str) -> str:
    lines = []
    for e in err.errors():
        loc = _untagged(tuple(e["loc"]))
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(text, loc)
        where = f"{path}:{line}" if line else str(path)
        lines.append(f"{where}: {field}: {e['msg']}{_hint(e)}")
    return "\n".join(lines)


def _untagged(loc: tuple) -> tuple:
    """A target's location without the union's tag: people wrote `target.namespace`."""
    return tuple(p for i, p in enumerate(loc) if not (p in TARGET_TYPES and i and loc[i - 1] == "target"))


def _hint(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "; remove it or check its spelling (see `airagent config schema`)"
    if error["type"] == "missing":
        return "; add it (see `airagent config schema`)"
    return ""


def _line_of(text: str, loc: tuple) -> int | None:
    """1-based line of the deepest YAML node on `loc`, so a message can point at the line."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def home() -> Path:
    """Where this host keeps airagent's state: runtimes, built releases, clones, the dev server's database."""
    return Path(os.environ.get("AIRAGENT_HOME") or Path.home() / ".airagent").resolve()
