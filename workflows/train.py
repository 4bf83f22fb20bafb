"""DeployTrain: one train's journey, diff → build → validate → per environment roll → soak.

`run` reads as the stage list. Controls (signals, and updates that answer) only set
flags; the train acts on them at its safe points: between stages, and while soaking
or waiting for approval. Everything that touches the world is an activity.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.options import ANNOUNCE, LONG, QUICK, ROLL, ROLLBACK, on
from workflows.train_bookkeeping import Failed, Stop, cause
from workflows.train_holdback import HOLD_BACK, TrainHoldBack

with workflow.unsafe.imports_passed_through():
    from activities.analysis import judge
    from activities.announce import announce
    from activities.build import build
    from activities.diff import diff
    from activities.roll import roll, rollback
    from activities.soak import soak_check, soak_smoke
    from activities.validate import validate
    from airagent import search_attributes as sa
    from airagent.config import EnvironmentSettings
    from airagent.config.analysis import Analysis
    from airagent.models import (
        Announcement,
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
        SmokeInput,
        SoakCheckInput,
        SoakCheckResult,
        StageRecord,
        TrainControl,
        TrainInput,
        TrainState,
        TrainStatus,
        ValidateInput,
        ValidationReport,
    )
    from airagent.models.analysis import MetricState, Phase


@workflow.defn(name="DeployTrain")
class DeployTrain(TrainHoldBack):
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

    async def _announce(self) -> None:
        """Tell each configured receiver how the train ended; a receiver that stays down never fails the train."""
        broken = [f.path for f in self.report.broken] if self.report else []
        for index, receiver in enumerate(self.pipeline.notifications):
            if self.status.state.value not in receiver.on and not (self.status.held and "held" in receiver.on):
                continue
            try:
                await workflow.execute_activity(
                    announce,
                    Announcement(
                        pipeline=self.pipeline, receiver=index, status=self.status, changed=self.changed, broken=broken
                    ),
                    **ANNOUNCE,
                )
            except ActivityError as err:
                self.status.events.append(
                    self._event("notify", Control(), False, f"{receiver.type} notification not delivered: {cause(err)}")
                )

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

    async def _soak(self, env: EnvironmentSettings) -> None:
        """Probe on an interval for the configured time. Paused time does not count, but probes go on:
        an environment getting worse is rolled back whether or not someone is looking."""
        assert self.release is not None
        status = self._env(env.name)
        record = self._begin("soak", env.name)
        if env.soak <= timedelta(0):
            status.state = "live"
            self._end(record, Outcome.skipped, "no soak configured")
            return
        # Soak time is counted in fired timers: a clock reading can differ between the live worker and a
        # replay (a query answered across a timed-out workflow task moved it), and then so would the branch.
        by_ticks = workflow.patched(SOAK_COUNTS_TICKS)
        states: list[MetricState] | None = [] if workflow.patched(SOAK_ANALYSIS) else None
        if states is not None and env.smoke == "trigger":
            await self._smoke(env, record)
        remaining, checks, final = env.soak, 0, False
        while remaining > timedelta(0) or (states is not None and not final):
            await self._checkpoint(record, hold=False)
            if remaining > timedelta(0):
                paused, started, tick = self.paused, workflow.now(), min(env.probe_interval, remaining)
                # A pause or resume ends the tick early, so a tick that ran out was all paused or all not.
                fired = await _timer(tick, lambda: self.paused != paused or self.stop is not None)  # noqa: B023
                if not paused:
                    remaining -= (tick if fired else timedelta(0)) if by_ticks else workflow.now() - started
                self._show_paused(record, remaining)
                if self.stop or self.paused != paused:
                    continue
            final = remaining <= timedelta(0)  # the last round concludes each metric still running
            check = await self._soak_check(env, record, states, final)
            checks += 1
            states = check.metrics if states is not None else None
            if not check.healthy:
                self._end(record, Outcome.failed, check.detail)
                raise Failed("soak", check.detail, env.name, state=TrainState.rolled_back)
            record.detail = f"{checks} checks healthy; {_short(remaining)} to go"
            self._publish()
        if states and check.verdict == Phase.inconclusive:
            await self._inconclusive(env.name, record, check.detail)
        status.state = "live"
        self._end(record, Outcome.ok, f"healthy for {_short(env.soak)} ({checks} checks)" + _verdicts(states))

    async def _smoke(self, env: EnvironmentSettings, record: StageRecord) -> None:
        """Run each changed DAG once, so the soak has runs to judge; a smoke run that cannot start costs the
        judge its data, never the train."""
        assert self.release is not None
        baseline = self.baselines.get(env.name)
        said = ""
        request = SmokeInput(
            environment=env,
            release=self.release,
            train=workflow.info().workflow_id,
            since=baseline.at if baseline else workflow.now(),
        )
        try:
            runs = await workflow.execute_activity(soak_smoke, request, **on(self._queue(env.name), QUICK))
        except ActivityError as err:
            runs, said = {}, f"smoke runs on {env.name} not triggered: {cause(err)}"
        started = [d for d, run in runs.items() if not run.startswith("error:")]
        refused = [f"{d} ({run})" for d, run in runs.items() if run.startswith("error:")]
        if runs or not said:
            said = f"smoke runs on {env.name} of {len(started)} changed DAGs: {', '.join(started[:10]) or 'none'}"
            said += f"; not started: {', '.join(refused[:5])}" if refused else ""
        self.status.events.append(self._event("smoke", Control(by="airagent"), bool(started), said))
        self._publish()

    async def _soak_check(
        self, env: EnvironmentSettings, record: StageRecord, states: list[MetricState] | None, final: bool
    ) -> SoakCheckResult:
        """One round of analysis; the environment's status shows each metric and reading it returns."""
        assert self.release is not None
        try:
            check: SoakCheckResult = await workflow.execute_activity(
                soak_check,
                SoakCheckInput(
                    environment=env,
                    release=self.release,
                    baseline=self.baselines.get(env.name),
                    metrics=states,
                    final=final,
                    sandbox=self.pipeline.sandbox,
                ),
                **on(self._queue(env.name), LONG),
            )
        except ActivityError as err:
            self._end(record, Outcome.failed, cause(err))
            raise Failed("soak", cause(err), env.name) from None
        status = self._env(env.name)
        status.keep(check.readings)
        status.analysis = check.metrics
        return check

    async def _inconclusive(self, env: str, record: StageRecord, why: str) -> None:
        """Too little data to judge, and the analysis says to ask: pause, tell the receivers, and wait for
        `approve` (the train goes on) or `abort`."""
        record.detail = f"inconclusive, waiting for approve or abort: {why}"
        self.approved.discard(env)
        self.awaiting_approval, self.status.state = env, TrainState.paused
        self._publish()
        await self._announce()
        await workflow.wait_condition(lambda: env in self.approved or self.stop is not None)
        self.awaiting_approval, self.status.state = None, TrainState.running
        if self.stop:
            self._end(record, Outcome.stopped, f"{self.stop[0]} requested while inconclusive")
            raise Stop()

    async def _unwell_before(self, name: str) -> str | None:
        """When only environment-wide metrics (health, components, a webhook) failed the soak, read them again
        on the release rolled back to: failing there too, the environment is unwell whatever runs on it, and no
        commit is to blame (nothing is held or bisected). Says how, or None when the commits may be to blame."""
        env, before, status = self.pipeline.environment(name), self.before[name], self._env(name)
        analysis = env.metrics()
        failed = judge.failed(analysis, status.analysis)
        if not failed or not all(judge.environment_wide(m) for m in failed) or not before.live_release:
            return None
        assert self.release is not None
        again = env.model_copy(update={"analysis": Analysis(metrics=failed)})
        previous = self.release.model_copy(update={"id": before.live_release, "commit": before.live_commit or ""})
        record = self._begin("confirm", name)
        states: list[MetricState] = []
        rounds = max(max(m.failure_limit, m.consecutive_error_limit) for m in failed) + 1
        for round in range(rounds):
            check: SoakCheckResult = await workflow.execute_activity(
                soak_check,
                SoakCheckInput(
                    environment=again,
                    release=previous,
                    baseline=self.baselines.get(name),
                    metrics=states,
                    final=round == rounds - 1,
                    sandbox=self.pipeline.sandbox,
                ),
                **on(self._queue(name), LONG),
            )
            states = check.metrics
            if check.verdict != Phase.running:
                break
            await workflow.sleep(env.probe_interval)
        if check.verdict == Phase.failed:
            self._end(record, Outcome.failed, f"just as unwell on {before.live_release}: {check.detail}")
            return f"{name} is just as unwell on {before.live_release}, so no commit is blamed: {check.detail}"
        self._end(record, Outcome.ok, f"well on {before.live_release}: the release is to blame")
        return None

    def _show_paused(self, record: StageRecord, remaining: timedelta) -> None:
        state = TrainState.paused if self.paused else TrainState.running
        if state != self.status.state:
            self.status.state = state
            if self.paused:
                record.detail = f"paused with {_short(remaining)} to go: the clock stopped, probes go on"
            self._publish()

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

    async def _checkpoint(self, record: StageRecord | None = None, hold: bool = True) -> None:
        """Hold while paused (unless told not to); leave for the stop path when an abort or rollback was accepted."""
        if hold and self.paused and not self.stop:
            self.status.state = TrainState.paused
            self._publish()
            await workflow.wait_condition(lambda: not self.paused or self.stop is not None)
            self.status.state = TrainState.running
            self._publish()
        if self.stop:
            if record is not None:
                self._end(record, Outcome.stopped, f"{self.stop[0]} requested")
            raise Stop()


# Roll failures raised before the target changed anything, so the train rolls nothing back.
REFUSED_UNTOUCHED = ("EnvironmentDown", "UnexpectedLive")
NOTHING_TO_ROLL = (
    "nothing to roll: every environment runs this commit or a later one, or differs from it in ignored files only"
)
# Trains started before this patch complete whatever their outcome; those after fail unless they succeeded.
FAIL_AS_WORKFLOW = "fail-as-workflow"
# Trains that began soaking before this patch count their soak by the clock; remove once none run.
SOAK_COUNTS_TICKS = "soak-counts-ticks"
# Trains that began soaking before this patch roll back on any failing reading; remove once none run.
SOAK_ANALYSIS = "soak-analysis"


async def _timer(timeout: timedelta, wake) -> bool:
    """Wait `timeout` unless `wake()` comes true first; whether the timer ran out."""
    try:
        await workflow.wait_condition(wake, timeout=timeout)
    except TimeoutError:
        return True
    return False


def _verdicts(states: list[MetricState] | None) -> str:
    return ": " + ", ".join(f"{s.metric} {s.verdict}" for s in states) if states else ""


def _short(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


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
