"""Soak, inside a train: rounds of analysis on an environment just rolled, smoke runs, and the verdict.

Soak time counts in fired timers, so a paused train's clock stops while its rounds go on.
Each round's judging happens in the `soak_check` activity; the train acts only on the
verdict history records: roll back, pause for a person when too little data is
inconclusive, or go on. After a rollback for environment-wide metrics alone, those are
read again on the release before, and an environment just as unwell there blames no
commit.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.options import LONG, QUICK, on
from workflows.train_bookkeeping import Failed, Stop, TrainBookkeeping, cause

with workflow.unsafe.imports_passed_through():
    from activities.analysis import judge
    from activities.soak import soak_check, soak_smoke
    from airagent.config import EnvironmentSettings, PipelineSettings
    from airagent.config.analysis import Analysis
    from airagent.models import (
        Baseline,
        Control,
        EnvironmentChange,
        Outcome,
        Release,
        SmokeInput,
        SoakCheckInput,
        SoakCheckResult,
        StageRecord,
        TrainState,
    )
    from airagent.models.analysis import MetricState, Phase

# Trains that began soaking before this patch count their soak by the clock; remove once none run.
SOAK_COUNTS_TICKS = "soak-counts-ticks"
# Trains that began soaking before this patch roll back on any failing reading; remove once none run.
SOAK_ANALYSIS = "soak-analysis"


class TrainSoak(TrainBookkeeping):
    """The soak steps of DeployTrain, which gives them the environment to soak after its roll."""

    pipeline: PipelineSettings
    release: Release | None
    baselines: dict[str, Baseline | None]
    before: dict[str, EnvironmentChange]
    approved: set[str]
    awaiting_approval: str | None

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
