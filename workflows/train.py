"""DeployTrain: one train's journey, diff → build → validate → per environment roll → soak.

`run` reads as the stage list. Controls (signals, and updates that answer) only set
flags; the train acts on them at its safe points: between stages, and while soaking
or waiting for approval. Everything that touches the world is an activity.
"""

from __future__ import annotations

from temporalio import workflow

from workflows import train_metrics
from workflows.options import LONG, QUICK, ROLL, ROLLBACK
from workflows.train_bookkeeping import Failed, Stop
from workflows.train_holdback import HOLD_BACK, TrainHoldBack
from workflows.train_soak import TrainSoak

with workflow.unsafe.imports_passed_through():
    from activities.build import build
    from activities.diff import diff
    from activities.roll import roll, rollback
    from activities.validate import validate
    from airagent import search_attributes as sa
    from airagent.config import EnvironmentSettings
    from airagent.models import (
        Baseline,
        BuildInput,
        Control,
        DiffInput,
        DiffResult,
        EnvironmentChange,
        EnvironmentStatus,
        Expected,
        HeldCommit,
        Outcome,
        Release,
        RollbackInput,
        RollInput,
        TrainControl,
        TrainInput,
        TrainState,
        TrainStatus,
        ValidateInput,
        ValidationReport,
    )


@workflow.defn(name="DeployTrain")
class DeployTrain(TrainHoldBack, TrainSoak):
    @workflow.init
    def __init__(self, input: TrainInput) -> None:
        self.pipeline = input.pipeline
        self.status = TrainStatus(
            pipeline=input.pipeline.name,
            target=input.target,
            environments=[EnvironmentStatus(name=e.name) for e in input.pipeline.environments],
            started=workflow.now(),
            bisect=input.bisect,
        )
        self.paused = False
        self.stop: tuple[TrainControl, Control] | None = None
        self.awaiting_approval: str | None = None
        self.approved: set[str] = set()
        self.touched: list[str] = []  # environments whose roll began, in order
        self.before: dict[str, EnvironmentChange] = {}  # what each touched environment ran before
        self.release: Release | None = None
        self.report: ValidationReport | None = None
        self.changed: list[str] = []
        self.baselines: dict[str, Baseline | None] = {}  # how each environment was before its roll
        self.failures: dict[str, str] = {}  # path -> why, for every failure this train traced to commits
        self._published: tuple | None = None

    @workflow.run
    async def run(self, input: TrainInput) -> TrainStatus:
        workflow.upsert_search_attributes(
            [sa.PIPELINE.value_set(input.pipeline.name), sa.GIT_SHA.value_set(input.target)]
        )
        train_metrics.train_started(input.pipeline.name)
        await self._journey(input)
        if workflow.patched("announce") and self.status.state != TrainState.noop:
            await self._announce()
        if workflow.patched(FAIL_AS_WORKFLOW):
            self._fail_unless_succeeded()
        return self.status

    async def _journey(self, input: TrainInput) -> TrainStatus:
        try:
            # Earlier holds that still stand are left out from the start: a broken main costs no extra round.
            presume = input.held if self.pipeline.isolation and workflow.patched(HOLD_BACK) else []
            change = await self._diff(input.target, presume)
            if change.held and self._holds_everything(change.held):
                raise Failed(
                    "diff",
                    "every commit of this train is held back: "
                    + "; ".join(f"{h.sha[:12]} {h.reason}" for h in change.held),
                )
            if change.empty:
                return self._finish(TrainState.noop, NOTHING_TO_ROLL)
            await self._checkpoint()
            change = await self._built(input, change)
            await self._checkpoint()
            change = await self._validated(input, change)
            for env in input.pipeline.environments:
                await self._checkpoint()
                env_change = change.for_environment(env.name)
                if input.bisect and env.name != input.bisect.environment:
                    self._env(env.name).state = "skipped: bisecting on " + input.bisect.environment
                    continue
                if env_change.mode is None:
                    self._env(env.name).state = "unchanged"
                    continue
                if env.require_approval:
                    await self._approval(env.name)
                await self._roll(env, env_change)
                await self._soak(env)
            if self.stop:
                raise Stop()
            where = f"on {input.bisect.environment}, for the bisection" if input.bisect else "in every environment"
            assert self.release is not None
            return self._finish(TrainState.succeeded, f"{self.release.id} live {where}")
        except Stop:
            return await self._stopped()
        except Failed as failure:
            reason = f"{failure.stage}{' ' + failure.environment if failure.environment else ''}: {failure.detail}"
            problems = await self._rollback([failure.environment]) if failure.environment else ""
            if failure.state == TrainState.rolled_back and failure.environment and not problems:
                if unwell := await self._unwell_before(failure.environment):
                    return self._finish(TrainState.failed, f"{reason}; {unwell}")
                self.status.soak_failed = failure.environment
                await self._trace_regression(input, failure.environment)
            return self._finish(TrainState.failed if problems else failure.state, reason + problems)

    # --- stages -----------------------------------------------------------------------

    async def _diff(self, target: str, presume: list[HeldCommit] | None = None) -> DiffResult:
        change: DiffResult = await self._activity(
            "diff", None, diff, DiffInput(pipeline=self.pipeline, target=target, held=presume or []), QUICK
        )
        self.status.saw(change)
        self.changed = sorted({f.path for e in change.environments for f in e.files})
        note = _settings_note(self.pipeline.name, change)
        if note and note not in self.status.notes:
            self.status.notes.append(note)
        self._stages[-1].detail = "; ".join(_describe_change(e) for e in change.environments)
        return change

    async def _build(self, input: TrainInput) -> Release:
        release: Release = await self._activity(
            "build",
            None,
            build,
            BuildInput(
                pipeline=input.pipeline, target=self.status.release_commit or self.status.target, image=input.image
            ),
            LONG,
        )
        self.status.release = release.id
        self._stages[-1].detail = f"release {release.id} (runtime {release.runtime_hash})"
        return release

    async def _validate(self, request: ValidateInput) -> None:
        report = await self._activity("validate", None, validate, request, LONG)
        self.report = report
        self.status.validation = report.summary()
        if not report.ok:
            self._end(self._stages[-1], Outcome.failed, report.summary())
            raise Failed("validate", report.summary())
        self._stages[-1].detail = report.summary()

    async def _approval(self, env: str) -> None:
        record = self._begin("approve", env)
        self.awaiting_approval = env
        self._publish()
        await workflow.wait_condition(lambda: env in self.approved or self.stop is not None)
        self.awaiting_approval = None
        if self.stop:
            self._end(record, Outcome.stopped)
            raise Stop()
        self._end(record, Outcome.ok, "approved")

    async def _roll(self, env: EnvironmentSettings, change: EnvironmentChange) -> None:
        assert self.release is not None
        self.touched.append(env.name)
        self.before[env.name] = change
        status = self._env(env.name)
        status.state = "rolling"
        assert change.mode is not None  # unchanged environments are skipped before
        report = self.report.digest if self.report else None  # bounded: the roll reads the DAGs from it
        dags = {f.path: f.dag_ids for f in self.report.files} if self.report and not report else {}
        try:
            result = await self._activity(
                "roll",
                env.name,
                roll,
                RollInput(
                    environment=env,
                    release=self.release,
                    mode=change.mode,
                    dags=dags,
                    report=report,
                    pipeline=self.pipeline,
                    replaces=Expected(live=change.live_release),
                ),
                ROLL,
            )
        except Failed as failure:
            if failure.kind in REFUSED_UNTOUCHED:  # refused before changing anything: nothing to undo
                self.touched.remove(env.name)
                status.state = "down" if failure.kind == "EnvironmentDown" else "moved"
            else:
                failure.environment = env.name
            raise
        self.baselines[env.name] = result.baseline
        status.warnings = result.warnings
        status.live, status.live_commit, status.state = result.live, self.release.commit, "soaking"
        self._stages[-1].detail = f"{change.live_release or 'nothing'} → {result.live} ({change.mode})" + (
            f": {result.detail}" if result.detail else ""
        )

    async def _rollback(self, environments: list[str]) -> str:
        """Put each environment back on what it ran before this train; returns what went wrong, if anything."""
        problems = []
        for name in environments:
            before = self.before[name]
            try:
                result = await self._activity(
                    "rollback",
                    name,
                    rollback,
                    RollbackInput(
                        environment=self.pipeline.environment(name),
                        to_release=before.live_release,
                        pipeline=self.pipeline,
                    ),
                    ROLLBACK,
                )
            except Failed as failure:
                problems.append(f"rollback of {name} failed: {failure.detail}")
                continue
            env = self._env(name)
            env.live, env.live_commit, env.state = result.live, before.live_commit, "rolled_back"
            self._stages[-1].detail = f"back on {result.live or 'nothing'}"
        return "".join(f"; {p}" for p in problems)

    async def _stopped(self) -> TrainStatus:
        assert self.stop is not None
        kind, control = self.stop
        names = (
            [control.environment]
            if kind == TrainControl.rollback and control.environment
            else list(reversed(self.touched))
        )
        problems = await self._rollback(names)
        who = f" by {control.by}" if control.by else ""
        why = f": {control.reason}" if control.reason else ""
        state = TrainState.aborted if kind == TrainControl.abort else TrainState.rolled_back
        if problems:
            state = TrainState.failed
        return self._finish(state, f"{kind}{who}{why}{problems}")

    # --- safe points --------------------------------------------------------------------


# Roll failures raised before the target changed anything, so the train rolls nothing back.
REFUSED_UNTOUCHED = ("EnvironmentDown", "UnexpectedLive")
NOTHING_TO_ROLL = (
    "nothing to roll: every environment runs this commit or a later one, or differs from it in ignored files only"
)
# Trains started before this patch complete whatever their outcome; those after fail unless they succeeded.
FAIL_AS_WORKFLOW = "fail-as-workflow"


def _settings_note(pipeline: str, change: DiffResult) -> str | None:
    """Say so when the train's commits change an airagent.yaml: a train never applies it, as gates belong to the
    operator. On a first deploy (nothing live) every file is new, not changed."""
    path = next((p for e in change.environments if e.live_commit for p in e.settings_files), None)
    if path is None:
        return None
    return (
        f"{path} changed in this train's commits; not applied: trains deploy with the operator's settings "
        f"— run `airagent pipeline reconfigure -p {pipeline} -c {path}` to apply it"
    )


def _describe_change(e: EnvironmentChange) -> str:
    if e.mode is None:
        return f"{e.environment}: nothing to roll"
    kinds = ", ".join(sorted(e.kinds))
    return f"{e.environment}: {e.count} files ({kinds}) → {e.mode}"
