"""Preview: a real Airflow for one branch, `preview/<pipeline>/<branch>`, until its TTL, the branch's end, or `down`.

    place ─▶ build ─▶ validate ─▶ start ─▶ every poll_interval: poll ─▶ build ─▶ validate ─▶ diff ─▶ roll
                                                                                      ─▶ teardown

It uses the stages trains use, on an environment of its own: it never touches the
pipeline's environments and never asks the conductor for anything, so it holds no train.
A branch head that does not build or validate is reported; Airflow keeps serving the
head before it. Time decides only through fired timers and clock readings in history.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.options import CLOCK, LONG, POLL, QUICK, ROLL, ROLLBACK, on

with workflow.unsafe.imports_passed_through():
    from activities.build import build
    from activities.clock import read_clock
    from activities.diff import diff
    from activities.poll import poll_branch
    from activities.preview import (
        check_branch,
        drop_preview_dag_ref,
        preview_environment,
        start_preview,
        teardown_preview,
    )
    from activities.roll import roll, rollback
    from activities.validate import validate
    from airagent import search_attributes as sa
    from airagent.config import EnvironmentSettings, KubernetesTarget, LocalTarget, PipelineSettings
    from airagent.models import (
        BranchCheck,
        BuildInput,
        Control,
        ControlAck,
        DiffInput,
        Expected,
        Extend,
        PollInput,
        PreviewInput,
        PreviewPlace,
        PreviewRef,
        PreviewStart,
        PreviewState,
        PreviewStatus,
        Release,
        RollbackInput,
        RollInput,
        ValidateInput,
    )

# Runs recorded before a kubernetes preview's teardown also deleted its DAG ref.
DROP_DAG_REF = "preview-drops-its-dag-ref"
# A preview polls every few seconds for hours: a new run before its history grows long.
MAX_HISTORY = 5000


@workflow.defn(name="Preview")
class Preview:
    @workflow.init
    def __init__(self, input: PreviewInput) -> None:
        self.base = input.pipeline  # merged means: into this pipeline's branch
        self.status = input.status or PreviewStatus(pipeline=input.pipeline.name, branch=input.branch)
        self.env: EnvironmentSettings | None = input.environment
        self.ending: str | None = None
        self.clock: datetime | None = None  # the clock reading the TTL timer was last set from
        self.rearmed = False
        self.tried: str | None = self.status.head  # the last head built, served or not
        self.diverged = input.diverged

    @workflow.run
    async def run(self, input: PreviewInput) -> PreviewStatus:
        workflow.upsert_search_attributes([sa.PIPELINE.value_set(self.base.name), sa.BRANCH.value_set(input.branch)])
        now = await workflow.execute_activity(read_clock, **CLOCK)
        self.clock = now
        if self.status.expires is None:
            self.status.expires = now + input.ttl
        if self.env is None:
            self.env = await workflow.execute_activity(
                preview_environment,
                PreviewPlace(pipeline=self.base, branch=input.branch),
                **on(self.base.task_queue(workflow.info().task_queue), QUICK),
            )
        self._where(self.env)
        self._publish()
        expiry = asyncio.create_task(self._expire())
        while self.ending is None:
            await self._follow()
            if self.ending is None and self._time_for_a_new_run():
                expiry.cancel()
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    input.model_copy(update={"status": self.status, "environment": self.env, "diverged": self.diverged})
                )
            try:
                await workflow.wait_condition(
                    lambda: self.ending is not None, timeout=self.pipeline.previews.poll_interval
                )
            except TimeoutError:
                pass
        expiry.cancel()
        await self._teardown()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.status

    @property
    def pipeline(self) -> PipelineSettings:
        """The pipeline as the preview's stages see it: the branch, and the preview's environment alone. A branch is
        rebased and force-pushed at will, so history rewrites are fine; nothing is held back. Image builds and
        validator Jobs stay where the pipeline's run: the preview's namespace exists only once it starts."""
        update = {
            "branch": self.status.branch,
            "environments": [self.env] if self.env else self.base.environments,
            "allow_history_rewrite": True,
            "isolation": False,
            "notifications": [],
        }
        first = self.base.environments[0].target
        if isinstance(first, KubernetesTarget) and self.base.image and not self.base.image.namespace:
            update["image"] = self.base.image.model_copy(update={"namespace": first.namespace})
        return self.base.model_copy(update=update)

    def _where(self, env: EnvironmentSettings) -> None:
        """Where people reach the preview's Airflow: its ports on the worker's host, or its namespace's api-server."""
        if isinstance(env.target, LocalTarget):
            self.status.url = f"http://127.0.0.1:{env.target.port}"
            self.status.login_file = str(env.target.path / "secrets" / "api-login")
            return
        namespace, service = env.target.namespace, f"{env.target.release}-api-server"
        pattern = self.base.previews.kubernetes.url
        if pattern:
            self.status.url = pattern.format(namespace=namespace)
        else:
            self.status.url = f"http://{service}.{namespace}.svc:8080"
            self.status.reach = (
                f"kubectl port-forward -n {namespace} svc/{service} 8080:8080; then http://localhost:8080"
            )

    # --- following the branch --------------------------------------------------------------

    async def _follow(self) -> None:
        """One look at the branch: end the preview when it was deleted or merged, else serve its new head."""
        head: str | None = None
        try:
            head = (
                await workflow.execute_activity(poll_branch, PollInput(pipeline=self.pipeline), **self._on(POLL))
            ).head
        except ActivityError as err:
            poll_error = _why(err)
        try:
            state = await workflow.execute_activity(
                check_branch, BranchCheck(pipeline=self.base, branch=self.status.branch, head=head), **self._on(POLL)
            )
        except ActivityError as err:
            self._note(error=f"cannot look at the branch: {_why(err)}")
            return
        if not state.exists:
            self.ending = f"branch {self.status.branch} was deleted"
            return
        if head is None:
            self._note(error=f"poll: {poll_error}")
            return
        # A branch made from the pipeline's head is in it from the start: merged only once it went its own way.
        if state.merged and self.diverged:
            self.ending = f"branch {self.status.branch} was merged into {self.base.branch} ({head[:12]})"
            return
        self.diverged = self.diverged or not state.merged
        self.status.head = head
        if head != self.tried:
            self.tried = head
            await self._serve(head)

    async def _serve(self, head: str) -> None:
        """Build and validate the head; start Airflow on it, or roll it in as a train would."""
        self._note(event=f"building {head[:12]}")
        try:
            release: Release = await workflow.execute_activity(
                build, BuildInput(pipeline=self.pipeline, target=head), **self._on(LONG)
            )
            report = await workflow.execute_activity(
                validate, ValidateInput(release=release, pipeline=self.pipeline), **self._on(LONG)
            )
        except ActivityError as err:
            return self._broken(head, f"build: {_why(err)}")
        if not report.ok:
            return self._broken(head, f"validate: {report.summary()}")
        assert self.env is not None
        if self.status.release is None:
            try:
                detail = await workflow.execute_activity(
                    start_preview,
                    PreviewStart(
                        environment=self.env,
                        pipeline=self.pipeline,
                        release=release,
                        report=report.digest,
                        source=self.base.environments[0] if isinstance(self.env.target, KubernetesTarget) else None,
                    ),
                    **self._on(ROLL),
                )
            except ActivityError as err:
                return self._broken(head, f"start: {_why(err)}")
            return self._served(release, f"started on {release.id}: {detail}")
        try:
            change = (
                await workflow.execute_activity(diff, DiffInput(pipeline=self.pipeline, target=head), **self._on(QUICK))
            ).for_environment(self.env.name)
        except ActivityError as err:
            return self._broken(head, f"diff: {_why(err)}")
        if change.mode is None:
            self.status.commit = head
            return self._note(event=f"{head[:12]}: nothing to roll (ignored files only)", error=None)
        try:
            result = await workflow.execute_activity(
                roll,
                RollInput(
                    environment=self.env,
                    release=release,
                    mode=change.mode,
                    report=report.digest,
                    pipeline=self.pipeline,
                    replaces=Expected(live=change.live_release),
                ),
                **self._on(ROLL),
            )
        except ActivityError as err:
            await self._roll_back(change.live_release)
            return self._broken(head, f"roll ({change.mode}): {_why(err)}")
        self._served(release, f"{change.mode}: {result.detail}")

    async def _roll_back(self, to: str | None) -> None:
        """After a failed roll, what the preview served before; if that fails too, the status says the roll did."""
        assert self.env is not None
        try:
            await workflow.execute_activity(
                rollback,
                RollbackInput(environment=self.env, to_release=to, pipeline=self.pipeline),
                **self._on(ROLLBACK),
            )
        except ActivityError:
            pass

    # --- ending ----------------------------------------------------------------------

    async def _expire(self) -> None:
        """The TTL: a timer to `expires`, set again whenever `up` extends it."""
        while True:
            assert self.clock is not None and self.status.expires is not None
            self.rearmed = False
            try:
                await workflow.wait_condition(
                    lambda: self.rearmed, timeout=max(self.status.expires - self.clock, timedelta(seconds=1))
                )
            except TimeoutError:
                self.ending = self.ending or f"its TTL passed ({_at(self.status.expires)})"
                return

    async def _teardown(self) -> None:
        assert self.env is not None and self.ending is not None
        self._note(event=f"tearing down: {self.ending}")
        try:
            said = await workflow.execute_activity(teardown_preview, self.env, **self._on(ROLLBACK))
            if isinstance(self.env.target, KubernetesTarget) and workflow.patched(DROP_DAG_REF):
                ref = PreviewRef(environment=self.env, pipeline=self.pipeline)
                said += "; " + await workflow.execute_activity(drop_preview_dag_ref, ref, **self._on(QUICK))
            self._note(event=f"torn down: {said}")
        except ActivityError as err:
            self._note(error=f"teardown: {_why(err)}")
        self.status.state, self.status.ended_because = PreviewState.ended, self.ending
        self._publish()

    def _time_for_a_new_run(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > MAX_HISTORY

    # --- controls and status ----------------------------------------------------------------

    @workflow.update(name="extend")
    async def extend(self, request: Extend) -> PreviewStatus:
        """`preview up` on a running preview: it lives at least `ttl` from now."""
        if self.ending is not None:
            raise _ended(self.ending)
        await workflow.wait_condition(lambda: self.status.expires is not None)  # run() sets it first thing
        now = await workflow.execute_activity(read_clock, **CLOCK)
        assert self.status.expires is not None
        if now + request.ttl > self.status.expires:
            self.clock, self.status.expires, self.rearmed = now, now + request.ttl, True
            self._note(event=f"extended to {_at(self.status.expires)}" + (f" by {request.by}" if request.by else ""))
        return self.status

    @workflow.update(name="down")
    def down(self, control: Control) -> ControlAck:
        if self.ending is not None:
            return ControlAck(accepted=False, message=f"already ending: {self.ending}")
        self.ending = (
            "down" + (f" by {control.by}" if control.by else "") + (f": {control.reason}" if control.reason else "")
        )
        return ControlAck(accepted=True, message=f"tearing down the preview of {self.status.branch}")

    @workflow.query(name="status")
    def query_status(self) -> PreviewStatus:
        return self.status

    def _served(self, release: Release, event: str) -> None:
        self.status.state, self.status.commit, self.status.release = PreviewState.serving, release.commit, release.id
        self._note(event=event, error=None)

    def _broken(self, head: str, why: str) -> None:
        if self.status.release is None:
            self.status.state = PreviewState.broken
        served = f"; still serving {self.status.commit[:12]}" if self.status.commit else ""
        self._note(event=f"{head[:12]} not served{served}", error=why)

    def _note(self, event: str | None = None, **error: str | None) -> None:
        if event is not None:
            self.status.event = event
        if "error" in error:
            self.status.error = error["error"]
        self._publish()

    def _publish(self) -> None:
        """The Web UI: search attributes for the list, current details for the preview's page."""
        workflow.upsert_search_attributes(
            [
                sa.STATE.value_set(self.status.state.value),
                sa.GIT_SHA.value_set(self.status.commit) if self.status.commit else sa.GIT_SHA.value_unset(),
            ]
        )
        workflow.set_current_details(self.status.details())

    def _on(self, options):
        """Every activity after the preview's place is made runs on the host that holds its folder."""
        assert self.env is not None
        return on(self.env.task_queue(workflow.info().task_queue), options)


def _why(err: ActivityError) -> str:
    return str(err.cause or err)


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ended(why: str) -> ApplicationError:
    return ApplicationError(f"the preview is ending: {why}; run `preview up` again once it has", non_retryable=True)
