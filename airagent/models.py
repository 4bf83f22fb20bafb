"""The typed models that cross Temporal: one in, one out, for every workflow and activity.

They carry no secrets and no file contents, only names, shas and short summaries,
because everything here lands in workflow history.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from airagent.config import EnvironmentSettings, PipelineSettings


class Kind(StrEnum):
    """What a changed file is to Airflow; decides how much of an environment must move."""

    dags = "dags"
    plugins = "plugins"
    config = "config"
    dependencies = "dependencies"
    image = "image"
    ignored = "ignored"


class RolloutMode(StrEnum):
    dags_only = "dags-only"
    restart = "restart"
    rebuild = "rebuild"

    @classmethod
    def for_kinds(cls, kinds: set[Kind]) -> RolloutMode:
        if kinds & {Kind.dependencies, Kind.image}:
            return cls.rebuild
        if kinds & {Kind.plugins, Kind.config}:
            return cls.restart
        return cls.dags_only


class TrainState(StrEnum):
    running = "running"
    paused = "paused"
    succeeded = "succeeded"
    failed = "failed"
    rolled_back = "rolled_back"
    aborted = "aborted"
    noop = "noop"

    @property
    def finished(self) -> bool:
        return self not in (TrainState.running, TrainState.paused)


class Outcome(StrEnum):
    running = "running"
    ok = "ok"
    failed = "failed"
    skipped = "skipped"
    stopped = "stopped"


# --- controls -------------------------------------------------------------------------


class TrainControl(StrEnum):
    """What a person may ask of a running train: each is a signal and an update of that name."""

    pause = "pause"
    resume = "resume"
    abort = "abort"
    rollback = "rollback"
    approve = "approve"


class PipelineControl(StrEnum):
    """What a person may ask of a pipeline's conductor: each is a signal and an update of that name."""

    pause = "pause"
    resume = "resume"
    freeze = "freeze"
    unfreeze = "unfreeze"


class Control(BaseModel):
    """Input of every signal and update; all optional so a bare `temporal workflow signal` works."""

    by: str | None = None
    reason: str | None = None
    environment: str | None = None


class ControlAck(BaseModel):
    accepted: bool
    message: str


class Event(BaseModel):
    at: datetime
    control: str
    by: str | None = None
    reason: str | None = None
    environment: str | None = None
    accepted: bool
    message: str


# --- diff -----------------------------------------------------------------------------


class Commit(BaseModel):
    sha: str
    author: str
    email: str
    summary: str
    at: datetime


class ChangedFile(BaseModel):
    path: str
    kind: Kind
    change: str = Field(description="added, modified, deleted, renamed or type-changed")
    old_path: str | None = None


class EnvironmentChange(BaseModel):
    """What one environment needs to reach the target; environments may run different commits."""

    environment: str
    live_commit: str | None
    live_release: str | None
    files: list[ChangedFile] = []
    mode: RolloutMode | None = Field(None, description="None when the environment already runs the target")

    @property
    def kinds(self) -> set[Kind]:
        return {f.kind for f in self.files}


class DiffInput(BaseModel):
    pipeline: PipelineSettings
    target: str
    held: list[HeldCommit] = Field([], description="commits earlier trains held back, to presume held again")


class DiffResult(BaseModel):
    target: str = Field(description="the commit the environments get")
    commits: list[Commit] = Field(description="the train's commits, newest first")
    environments: list[EnvironmentChange]
    head: str | None = Field(
        None,
        description="when earlier holds stand: the commit asked for, which `target` is airagent's release commit of",
    )
    held: list[HeldCommit] = Field([], description="the earlier holds that stand, left out of `target`")

    @property
    def empty(self) -> bool:
        return all(e.mode is None for e in self.environments)

    def for_environment(self, name: str) -> EnvironmentChange:
        return next(e for e in self.environments if e.environment == name)


# --- build ----------------------------------------------------------------------------


class BuildInput(BaseModel):
    pipeline: PipelineSettings
    target: str
    image: str | None = Field(None, description="the runtime image CI built, for the `external` image builder")


class Release(BaseModel):
    """An immutable release: the DAG bundle at one commit plus the runtime that runs it."""

    id: str
    commit: str
    runtime_hash: str
    runtime: str = Field(description="path of the runtime venv on this host")
    bundle: str = Field(description="path of the files at the commit on this host")
    dag_folder: str = Field(description="DAG folder, relative to the bundle")
    plugins_folder: str = Field(description="plugins folder, relative to the bundle")
    image: str | None = Field(
        None, description="runtime image, `<repository>:<runtime hash>`, for kubernetes environments"
    )


# --- validate -------------------------------------------------------------------------


class DagFacts(BaseModel):
    """What the parser saw of one DAG, for the policies; kept out of workflow history (see FileReport)."""

    dag_id: str
    owners: list[str] = []
    tags: list[str] = []
    schedule: str | None = None
    retries: dict[str, int] = Field({}, description="task_id -> retries")


class Problem(BaseModel):
    """One reason a file fails validation beyond not importing: a policy, the parse-time budget, a duplicate."""

    rule: str = Field(description="e.g. min_retries, parse_time, duplicate_dag_id; the setting to look at")
    message: str
    dag_id: str | None = None


class FileReport(BaseModel):
    path: str
    dag_ids: list[str] = []
    error: str | None = None
    parse_seconds: float = 0.0
    problems: list[Problem] = []
    warnings: list[str] = []
    placeholders: list[str] = Field([], description="lookups that got made-up values while parsing")
    teams: list[str] = []
    last_commit: Commit | None = Field(None, description="the commit that last touched the file, for a broken one")
    cached: bool = Field(False, description="taken from the validation cache, not parsed this time")
    # Facts for the policies: many per file, needed only inside the activity.
    dags: list[DagFacts] = Field([], exclude=True)
    imports: list[str] = Field([], exclude=True)
    same_file_duplicates: list[str] = Field([], exclude=True)
    transient: bool = Field(False, exclude=True, description="hung or died: not cached, the next try may differ")

    @property
    def failed(self) -> bool:
        return bool(self.error or self.problems)

    def reasons(self) -> list[str]:
        found = [last_line(self.error)] if self.error else []
        if self.error and self.placeholders:
            found[0] += (
                f" (parsed with placeholders for {', '.join(self.placeholders)}; give real values "
                "under validation.placeholders if the error comes from one)"
            )
        return found + [f"{p.rule}: {p.message}" for p in self.problems]


class RemovedDag(BaseModel):
    dag_id: str
    path: str = Field(description="the file that defined it in the live release")
    teams: list[str] = []


class ValidationReport(BaseModel):
    files: list[FileReport]
    duplicates: dict[str, list[str]] = Field({}, description="dag_id -> files defining it")
    removed: list[RemovedDag] = Field([], description="DAGs live now, gone in this release, without consent")
    parsed: int | None = Field(None, description="files parsed this time; the others came from the cache")

    @property
    def broken(self) -> list[FileReport]:
        return [f for f in self.files if f.failed]

    @property
    def ok(self) -> bool:
        return not self.broken and not self.duplicates and not self.removed

    def failures(self) -> dict[str, str]:
        """Each failing path (from the repository's root) and why, to trace the failure to commits."""
        found = {f.path: "; ".join(f.reasons()) for f in self.broken}
        for dag_id, paths in self.duplicates.items():
            for path in paths:
                found.setdefault(path, f"dag_id {dag_id!r} is defined in {', '.join(paths)}")
        for r in self.removed:
            found.setdefault(r.path, f"DAG {r.dag_id!r} is live but gone from this release")
        return found

    def by_team(self) -> dict[str, list[str]]:
        """Failure lines per owning team ('(no team)' for unowned paths), for the people who must act."""
        teams: dict[str, list[str]] = {}

        def add(owners: list[str], line: str) -> None:
            for team in owners or ["(no team)"]:
                teams.setdefault(team, []).append(line)

        for f in self.broken:
            blame = ""
            if f.last_commit:
                c = f.last_commit
                blame = f" — last changed in {c.sha[:8]} by {c.author}: {c.summary}"
            for reason in f.reasons():
                add(f.teams, f"{f.path}: {reason}{blame}")
        for r in self.removed:
            add(
                r.teams,
                f"{r.path}: DAG {r.dag_id!r} is live but gone from this release; if that is meant, add "
                f"the trailer 'Airagent-Allow-Dag-Removal: {r.dag_id}' to a commit, or list it under "
                "validation.allow_dag_removal",
            )
        return dict(sorted(teams.items(), key=lambda kv: (kv[0] == "(no team)", kv[0])))

    def summary(self) -> str:
        dags = sum(len(f.dag_ids) for f in self.files)
        head = f"{len(self.files)} files, {dags} DAGs"
        if self.parsed is not None:
            head += f" ({self.parsed} parsed, {len(self.files) - self.parsed} from cache)"
        warnings = [f"warning: {f.path}: {w}" for f in self.files for w in f.warnings]
        if self.ok:
            return "\n".join([f"{head}: all parse", *warnings])
        lines = [
            f"{head}: {len(self.broken)} broken, {len(self.duplicates)} duplicate dag_ids, "
            f"{len(self.removed)} removed DAGs"
        ]
        for team, failures in self.by_team().items():
            lines.append(f"team {team}:" if team != "(no team)" else "no owning team:")
            lines += [f"  {line}" for line in failures]
        for dag_id, paths in self.duplicates.items():
            lines.append(f"dag_id {dag_id!r} defined in {', '.join(paths)}")
        return "\n".join(lines + warnings)


def last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


class ValidateInput(BaseModel):
    release: Release
    # Optional so a train started before these existed still validates (parse only).
    pipeline: PipelineSettings | None = Field(
        None, description="for policies, placeholders, teams, blame and the removal check"
    )
    live_commits: list[str] = Field(
        [],
        description="commits live in the environments now: their DAGs must not vanish without consent, and "
        "the commits from each to the release carry the consent trailers",
    )


class HeldCommit(BaseModel):
    """A commit whose changes a release leaves out, and why."""

    sha: str
    author: str
    summary: str
    teams: list[str] = []
    paths: list[str] = Field([], description="what it changed; the release keeps these as the environment has them")
    reason: str = Field(description="the failure traced to it, or the held commit whose paths it shares")
    since: datetime | None = None
    regression: bool = Field(
        False,
        description="held for a soak regression: until a later commit changes its "
        "paths, as validation cannot tell it is fixed",
    )
    depends: list[str] = Field(
        [],
        description="the failing files it changed and the modules they import: a later "
        "commit changing none of them cannot have fixed it; empty for a commit "
        "held only for sharing a path",
    )


class HoldInput(BaseModel):
    pipeline: PipelineSettings
    target: str = Field(description="the head the train was asked to deploy")
    commits: list[str] = Field(description="the train's commits, newest first, as its diff found them")
    live_commit: str | None = Field(None, description="what the first environment runs: held paths stay as there")
    bundle: str = Field(description="the failed release's files, to trace what its broken DAG files import")
    failures: dict[str, str] = Field(description="path from the repository root -> why it failed")
    held: list[HeldCommit] = Field(
        [],
        description="commits earlier trains held back: presumed held again unless a "
        "later commit of the train could have fixed them",
    )
    soak: bool = Field(False, description="the failures are a soak regression: trace them, make no release")


class HoldResult(BaseModel):
    commit: str | None = Field(
        None,
        description="the release commit without the held changes; None: the failures trace to no commit of the train",
    )
    held: list[HeldCommit] = []


# --- roll, rollback, soak -------------------------------------------------------------


class Expected(BaseModel):
    """What a roll expects to find live: the release its diff saw (None: nothing, a first deploy)."""

    live: str | None


class RollInput(BaseModel):
    environment: EnvironmentSettings
    release: Release
    mode: RolloutMode
    dags: dict[str, list[str]] = Field(
        {},
        description="repository path -> dag_ids validation found there; "
        "a dags-only roll is done once Airflow serves them",
    )
    pipeline: PipelineSettings | None = Field(
        None, description="whose repository a kubernetes environment's DAG ref is moved in"
    )
    replaces: Expected | None = Field(
        None,
        description="what the train's diff saw live; the target refuses to roll "
        "over anything else; None only in inputs recorded before "
        "this check existed",
    )


class RollbackInput(BaseModel):
    environment: EnvironmentSettings
    to_release: str | None = Field(description="None puts the environment back to running nothing")
    pipeline: PipelineSettings | None = Field(None, description="as in RollInput")


class Marker(BaseModel):
    """What an environment's own record says runs there, and what ran before."""

    live: str | None
    previous: str | None
    rolled: list[str] = Field([], description="every release ever rolled there, oldest first")
    live_commit: str | None = None


class Baseline(BaseModel):
    """How the environment was just before a roll: what soak compares against."""

    at: datetime
    import_errors: list[str] = Field([], description="files with import errors before the roll")
    failed: int = Field(0, description="task instances failed in the window before the roll")
    finished: int = Field(0, description="task instances finished (success or failed) in that window")
    restarts: dict[str, int] = Field({}, description="kubernetes: container restarts per pod before the roll")


class ProbeReading(BaseModel):
    probe: str
    ok: bool
    reading: str = Field(description="what the probe saw")
    threshold: str = Field(description="what it was held to")
    at: datetime
    dag_ids: list[str] = Field([], description="the DAGs a failing reading is about, to trace it to commits")

    def line(self) -> str:
        return f"{self.probe}: {self.reading} ({'ok' if self.ok else 'FAILED'}; threshold: {self.threshold})"


class RollResult(BaseModel):
    environment: str
    live: str | None
    previous: str | None
    changed: bool = Field(description="False when the environment was already there (a retried activity)")
    detail: str = Field("", description="what the roll did: drain, restarts, confirmation")
    baseline: Baseline | None = None
    warnings: list[str] = Field([], description="pre-flight warnings read before the roll")


class SoakCheckInput(BaseModel):
    environment: EnvironmentSettings
    release: Release
    baseline: Baseline | None = None


class SoakCheckResult(BaseModel):
    healthy: bool
    detail: str
    readings: list[ProbeReading] = []


# --- the train ------------------------------------------------------------------------


class BisectStep(BaseModel):
    """A train of a bisection: it rolls one environment only, to learn whether its commit soaks healthy."""

    environment: str
    step: int
    steps: int = Field(description="about log2 of the suspects")
    why: str = Field(description="the untraced soak failure being narrowed down")

    def line(self) -> str:
        return f"bisection step {self.step} of ~{self.steps} on {self.environment}: {self.why}"


class TrainInput(BaseModel):
    pipeline: PipelineSettings
    target: str
    image: str | None = Field(None, description="the runtime image CI built for this commit (`external` builder)")
    held: list[HeldCommit] = Field([], description="commits earlier trains held back (the conductor's held)")
    bisect: BisectStep | None = None


class StageRecord(BaseModel):
    name: str
    environment: str | None = None
    started: datetime
    ended: datetime | None = None
    outcome: Outcome = Outcome.running
    detail: str = ""


class EnvironmentStatus(BaseModel):
    name: str
    live: str | None = Field(None, description="release id live now")
    previous: str | None = Field(None, description="release id live before this train")
    live_commit: str | None = None
    mode: RolloutMode | None = None
    state: str = "pending"
    probes: dict[str, list[ProbeReading]] = Field({}, description="each probe's latest readings, newest last")
    warnings: list[str] = Field([], description="pre-flight: what a roll here could drop, and the fix")


class TrainStatus(BaseModel):
    pipeline: str
    target: str
    state: TrainState = TrainState.running
    stage: str | None = None
    environment: str | None = None
    reason: str = ""
    release: str | None = None
    environments: list[EnvironmentStatus] = []
    commits: list[Commit] = []
    kinds: list[Kind] = []
    mode: RolloutMode | None = None
    validation: str | None = None
    held: list[HeldCommit] = Field([], description="commits whose changes the release leaves out, and why")
    release_commit: str | None = Field(
        None,
        description="what the release is made of when commits are held: airagent's commit of the target without them",
    )
    soak_failed: str | None = Field(None, description="the environment whose soak failed and was rolled back")
    bisect: BisectStep | None = None
    stages: list[StageRecord] = []
    events: list[Event] = []
    started: datetime | None = None
    ended: datetime | None = None

    def environment_status(self, name: str) -> EnvironmentStatus:
        return next(e for e in self.environments if e.name == name)


def train_id(pipeline: str, sha: str) -> str:
    return f"train/{pipeline}/{sha[:12]}"


def conductor_id(pipeline: str) -> str:
    return f"pipeline/{pipeline}"


class Announcement(BaseModel):
    """One delivery: which receiver of the pipeline, and the train as it ended."""

    pipeline: PipelineSettings
    receiver: int = Field(description="index into the pipeline's notifications")
    status: TrainStatus
    changed: list[str] = Field([], description="repository paths this train changed")
    broken: list[str] = Field([], description="repository paths validation found broken")


class TrainSummary(BaseModel):
    """One row of `airagent history`, read from visibility rather than from each train."""

    id: str
    pipeline: str
    sha: str
    state: str
    stage: str | None
    started: datetime | None
    ended: datetime | None


# --- the conductor --------------------------------------------------------------------


class PollInput(BaseModel):
    pipeline: PipelineSettings


class PollResult(BaseModel):
    head: str


class Notify(BaseModel):
    """What CI sends after a merge: a hint that the branch moved; the conductor deploys the branch head."""

    sha: str | None = None
    by: str | None = None
    image: str | None = Field(None, description="the runtime image CI built for `sha` (`external` builder)")


class DeployRequest(BaseModel):
    """What `airagent deploy`, the Python client and CI ask of a pipeline's conductor: deploy this commit."""

    sha: str = Field(description="the full commit sha, resolved by the client")
    image: str | None = Field(None, description="the runtime image CI built for it (`external` builder)")
    by: str | None = None


class DeployAnswer(BaseModel):
    """The conductor's answer: the train that deploys the commit, or why none can start now."""

    accepted: bool
    train: str | None = Field(None, description="id of the train that deploys (or is deploying) the commit")
    message: str
    asked: datetime | None = Field(
        None,
        description="when the conductor queued it: a run of the train that started "
        "earlier deployed the same commit before",
    )


class TrainRecord(BaseModel):
    id: str
    sha: str
    state: str = TrainState.running.value
    reason: str = ""
    commits: int = 0
    authors: list[str] = []
    started: datetime
    ended: datetime | None = None


class Bisection(BaseModel):
    """Narrowing an untraced soak failure down to one commit: each step deploys the middle suspect (with
    every suspect before it) to the environment that failed; healthy moves `good` up, a rollback `bad` down."""

    head: str = Field(description="the commit whose train rolled back; deployed again once the culprit is held")
    environment: str
    why: str
    suspects: list[Commit] = Field(description="the train's commits that were not held, oldest first")
    good: int = Field(-1, description="the newest suspect known to soak healthy; -1: none, what ran before is")
    bad: int = Field(description="the oldest suspect known to fail")
    step: int = 1

    @property
    def probe(self) -> Commit:
        return self.suspects[(self.good + self.bad) // 2]

    @property
    def found(self) -> Commit | None:
        return self.suspects[self.bad] if self.bad - self.good == 1 else None

    def step_input(self) -> BisectStep:
        n, probe = len(self.suspects), self.probe
        earlier = (self.good + self.bad) // 2 - self.good - 1
        return BisectStep(
            environment=self.environment,
            step=self.step,
            steps=max((n - 1).bit_length(), self.step),
            why=f"the soak of {self.environment} failed after {n} commits ({self.why}); does it fail "
            f"with {probe.sha[:12]} ({probe.author}: {probe.summary})"
            + (f" and the {earlier} untested before it?" if earlier else "?"),
        )


class ConductorState(BaseModel):
    """Everything the conductor knows; carried whole across continue-as-new."""

    paused: bool = False
    frozen: str | None = Field(None, description="the reason, while frozen")
    head: str | None = Field(None, description="newest commit seen on the branch")
    last_deployed: str | None = None
    failed: list[str] = Field([], description="shas whose train did not succeed; never retried on their own")
    running: TrainRecord | None = None
    trains: list[TrainRecord] = Field([], description="the most recent trains, newest last")
    poll_error: str | None = None
    blocked: str | None = Field(None, description="why the queued commit's train cannot start now")
    images: dict[str, str] = Field({}, description="sha -> runtime image CI announced for it, newest last")
    requests: list[DeployRequest] = Field([], description="commits asked for by `deploy`, deployed first, in order")
    follow: bool = Field(
        True, description="deploy the branch head on its own; off for a conductor that only `airagent deploy` started"
    )
    held: list[HeldCommit] = Field(
        [],
        description="commits the last good train left out; later trains leave them "
        "out too until a commit that could fix them lands",
    )
    bisection: Bisection | None = None
    events: list[Event] = []


class ConductorInput(BaseModel):
    pipeline: PipelineSettings
    state: ConductorState = ConductorState()


class ConductorStatus(BaseModel):
    pipeline: str
    queued: str | None = Field(None, description="the commit the next train will deploy")
    window_open: bool = True
    window: str = ""
    state: ConductorState


# --- rollback outside a train ---------------------------------------------------------


class EnvironmentRollbackInput(BaseModel):
    pipeline: PipelineSettings
    environment: str
    to_release: str | None = Field(None, description="default: the release live before the current one")
    by: str | None = None
    reason: str | None = None


class EnvironmentRollbackResult(BaseModel):
    environment: str
    live: str | None
    replaced: str | None
    frozen: str = Field(description="the reason the pipeline was frozen with")


def rollback_id(pipeline: str, environment: str) -> str:
    return f"rollback/{pipeline}/{environment}"
