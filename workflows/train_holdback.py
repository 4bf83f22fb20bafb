"""Held back, inside a train: failures traced to some of its commits leave those out, and the rest deploys.

A runtime that does not build is traced to the commits that changed the requirements; a
validation failure to the commits that changed the failing files or a module they import.
Each round makes airagent's release commit of the head without the held commits, and
builds and validates it again, until a release passes or nothing more traces. After a
soak rollback, the DAGs whose tasks failed are traced the same way, for the conductor to
hold back from the next trains.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.options import QUICK
from workflows.train_bookkeeping import Failed, TrainBookkeeping, cause

with workflow.unsafe.imports_passed_through():
    from activities.holdback import hold_back
    from airagent.config import PipelineSettings
    from airagent.models import (
        DiffResult,
        HeldCommit,
        HoldInput,
        HoldResult,
        Release,
        SoakFailed,
        TrainInput,
        ValidateInput,
        ValidationReport,
    )
    from airagent.models.held import soak_reason

# Rounds of holding back before a release that still fails validation fails the train.
MAX_HOLD_ROUNDS = 3
# A failure's text travels in history and notifications: the head of it says enough.
MAX_REASON = 1000
HOLD_BACK = "hold-back"
# Trains whose runtime failed to build before this patch failed there; remove once none run.
HOLD_BACK_REQUIREMENTS = "hold-back-requirements"


class TrainHoldBack(TrainBookkeeping):
    """The hold-back steps of DeployTrain, which gives them its stages."""

    pipeline: PipelineSettings
    release: Release | None
    report: ValidationReport | None
    failures: dict[str, str]

    async def _diff(self, target: str, presume: list[HeldCommit] | None = None) -> DiffResult:
        raise NotImplementedError

    async def _build(self, input: TrainInput) -> Release:
        raise NotImplementedError

    async def _validate(self, request: ValidateInput) -> None:
        raise NotImplementedError

    async def _built(self, input: TrainInput, change: DiffResult) -> DiffResult:
        """Build the release. A runtime that does not build is traced to the commits that changed the requirements
        file: those are held back and the head is built without them."""
        try:
            self.release = await self._build(input)
            return change
        except Failed as failure:
            if (
                failure.kind != "RuntimeBuildFailed"
                or not self.pipeline.isolation
                or not workflow.patched(HOLD_BACK_REQUIREMENTS)
            ):
                raise
            self.failures[input.pipeline.runtime.requirements] = failure.detail.removeprefix(f"{failure.kind}: ")[
                :MAX_REASON
            ]
            hold = await self._hold_back(self._hold_input(input, self.failures))
            if hold.commit is None or self._holds_everything(hold.held):
                raise
        self.status.held = hold.held
        await self._checkpoint()
        change = await self._diff(hold.commit)
        self.release = await self._build(input)
        return change

    async def _validated(self, input: TrainInput, change: DiffResult) -> DiffResult:
        """Validate the release. When its failures trace to some of the train's commits, hold those back
        and validate the head without their changes, until a release passes or nothing more traces."""
        failures = self.failures
        rounds = 0
        while True:
            self.report = None
            assert self.release is not None
            try:
                await self._validate(
                    ValidateInput(
                        release=self.release,
                        pipeline=input.pipeline,
                        live_commits=[e.live_commit for e in change.environments if e.live_commit],
                    )
                )
                return change
            except Failed:
                rounds += 1
                # Only a report's failures trace to commits; a validate that could not run fails the train.
                if (
                    self.report is None
                    or rounds > MAX_HOLD_ROUNDS
                    or not self.pipeline.isolation
                    or not workflow.patched(HOLD_BACK)
                ):
                    raise
            failures |= self.report.failures()
            hold = await self._hold_back(self._hold_input(input, failures))
            if hold.commit is None or self._holds_everything(hold.held):
                raise Failed("validate", self.report.summary())  # nothing else to deploy
            self.status.held = hold.held
            await self._checkpoint()
            change = await self._diff(hold.commit)
            self.release = await self._build(input)

    def _hold_input(self, input: TrainInput, failures: dict[str, str], soak: bool = False) -> HoldInput:
        """What `hold_back` needs of this train: its head and commits, and what the first environment runs."""
        return HoldInput(
            pipeline=self.pipeline,
            target=self.status.target,
            commits=[c.sha for c in self.status.commits],
            live_commit=self.status.environments[0].live_commit,
            bundle=self.release.bundle if self.release else "",
            failures=failures,
            held=input.held,
            soak=soak,
        )

    def _holds_everything(self, held: list[HeldCommit]) -> bool:
        return {c.sha for c in self.status.commits} <= {h.sha for h in held}

    async def _hold_back(self, request: HoldInput) -> HoldResult:
        """Trace failures (and earlier holds) to commits; the current stage's detail names what is held."""
        try:
            hold: HoldResult = await workflow.execute_activity(hold_back, request, **QUICK)
        except ActivityError as err:
            raise Failed(
                self._stages[-1].name, f"{self._stages[-1].detail}\n(could not hold back: {cause(err)})"
            ) from None
        if hold.held:
            self._stages[-1].detail = (
                (self._stages[-1].detail or "")
                + "\nheld back: "
                + ", ".join(f"{h.sha[:12]} ({h.author})" for h in hold.held)
            )
        return hold

    async def _trace_regression(self, input: TrainInput, env: str) -> None:
        """After a soak rollback, the DAGs whose tasks failed lead to their files and the commits that changed
        them: the conductor holds those back from the next train. Best effort: the rollback is done."""
        status = self._env(env)
        dags, why = status.blamed_dags(), status.blame()[:MAX_REASON]
        request = self._hold_input(input, {}, soak=True)
        if self.report and self.report.digest and self.release:  # bounded: the activity finds the files
            traced = bool(dags)
            request.soak_failed = SoakFailed(
                environment=env, dag_ids=sorted(dags), release=self.release, report=self.report.digest, why=why
            )
        else:  # a report from before bounded reports lists every file
            request.failures = {
                f.path: soak_reason(sorted(dags & set(f.dag_ids)), env, why)
                for f in (self.report.files if self.report else [])
                if dags & set(f.dag_ids)
            }
            traced = bool(request.failures)
        if not traced or not self.release or not self.pipeline.isolation or not workflow.patched(HOLD_BACK):
            return
        try:
            hold: HoldResult = await workflow.execute_activity(hold_back, request, **QUICK)
        except ActivityError:
            return
        known = {h.sha for h in self.status.held}
        self.status.held = [*self.status.held, *(h for h in hold.held if h.sha not in known)]
