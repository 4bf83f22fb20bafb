"""The conductor: what it is asked (deploys, notices), what it keeps across runs, and what it shows."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from airagent.config import PipelineSettings
from airagent.models.common import Commit, Event, TrainState
from airagent.models.held import HeldCommit
from airagent.models.train import BisectStep


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


class Reconfigure(BaseModel):
    """`airagent pipeline reconfigure`: the operator's new settings for the conductor's next trains, who and why."""

    settings: PipelineSettings
    by: str | None = None
    reason: str | None = None


class Unhold(BaseModel):
    """`airagent pipeline unhold`: a person lifts a hold they judge wrong, without touching the files; who and why."""

    sha: str = Field(description="the held commit, or a unique prefix of at least 7 characters")
    by: str | None = None
    reason: str = ""


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
    reconfigured: Event | None = Field(
        None, description="the operator's last reconfigure (who, when, why, what changed), kept past the event log"
    )


class ConductorInput(BaseModel):
    pipeline: PipelineSettings
    state: ConductorState = ConductorState()


class ConductorStatus(BaseModel):
    pipeline: str
    queued: str | None = Field(None, description="the commit the next train will deploy")
    window_open: bool = True
    window: str = ""
    state: ConductorState
    settings: PipelineSettings | None = Field(
        None, description="what its next trains deploy with: the operator's settings (None from an older worker)"
    )


def settings_changes(old: PipelineSettings, new: PipelineSettings) -> list[str]:
    """The top-level settings that differ, naming the environments that do: `["environments (prod)", "isolation"]`."""
    changed = [name for name in PipelineSettings.model_fields if getattr(old, name) != getattr(new, name)]
    before, after = ({e.name: e for e in p.environments} for p in (old, new))
    envs = [name for name in {**before, **after} if before.get(name) != after.get(name)]
    return [f"environments ({', '.join(envs)})" if c == "environments" and envs else c for c in changed]
