"""The client's calls for previews: start or extend one, list them, read one's status, take it down."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client, WorkflowFailureError, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError

from airagent import search_attributes as sa
from airagent.config import PipelineSettings
from airagent.models import Control, Extend, PreviewInput, PreviewState, PreviewStatus, preview_id
from airagent.repo import open_repository, resolve
from interface.visibility import NotFound, of_pipeline, running
from workflows.preview import Preview


class PreviewRefused(Exception):
    """A preview cannot start: the pipeline's cap is reached, or it is ending; the message says why."""


class PreviewCalls:
    """Mixed into the client (interface/client.py), whose connection these calls use."""

    client: Client
    task_queue: str

    async def preview_up(
        self, pipeline: PipelineSettings, branch: str, ttl: timedelta | None = None, by: str | None = None
    ) -> PreviewStatus:
        """Start the branch's preview, or have the running one live `ttl` (default the pipeline's) from now.
        Refused past the pipeline's cap, naming the previews that run."""
        resolve(open_repository(pipeline), pipeline.model_copy(update={"branch": branch}))  # names a missing branch
        ttl = ttl or pipeline.previews.ttl
        wf_id = preview_id(pipeline.name, branch)
        handle = self.client.get_workflow_handle(wf_id)
        if await running(handle):
            try:
                return await handle.execute_update("extend", Extend(ttl=ttl, by=by), result_type=PreviewStatus)
            except WorkflowUpdateFailedError as err:
                raise PreviewRefused(getattr(err.cause, "message", None) or str(err.cause or err)) from None
        others = await self.running_previews(pipeline.name)
        if len(others) >= pipeline.previews.cap:
            raise PreviewRefused(
                f"pipeline {pipeline.name!r} runs {len(others)} previews, its cap (previews.cap: "
                f"{pipeline.previews.cap}): {', '.join(others)}; take one down with "
                f"`airagent preview down --branch B -p {pipeline.name}`"
            )
        await self.client.start_workflow(
            Preview.run,
            PreviewInput(pipeline=pipeline, branch=branch, ttl=ttl, by=by),
            id=wf_id,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(sa.PIPELINE, pipeline.name), SearchAttributePair(sa.BRANCH, branch)]
            ),
            static_summary=f"Preview of {branch} ({pipeline.name})",
        )
        return PreviewStatus(pipeline=pipeline.name, branch=branch)

    async def running_previews(self, pipeline: str) -> list[str]:
        """The branches whose previews run for `pipeline`, as the server's visibility lists them."""
        query = f"WorkflowType = 'Preview' AND ExecutionStatus = 'Running' AND {of_pipeline(pipeline)}"
        return [ex.typed_search_attributes.get(sa.BRANCH) or ex.id async for ex in self.client.list_workflows(query)]

    async def previews(self, pipeline: str | None = None) -> list[PreviewStatus]:
        """Every running preview's status, of one pipeline or all."""
        query = "WorkflowType = 'Preview' AND ExecutionStatus = 'Running'"
        if pipeline:
            query += f" AND {of_pipeline(pipeline)}"
        found = []
        async for ex in self.client.list_workflows(query):
            try:
                found.append(await self.client.get_workflow_handle(ex.id).query(Preview.query_status))
            except (RPCError, WorkflowQueryFailedError):
                continue  # ended between the list and the query
        return sorted(found, key=lambda p: (p.pipeline, p.branch))

    async def preview_status(self, pipeline: str, branch: str) -> PreviewStatus:
        handle = self.client.get_workflow_handle(preview_id(pipeline, branch), result_type=PreviewStatus)
        try:
            if await running(handle):
                return await handle.query(Preview.query_status)
            return await handle.result()
        except (RPCError, WorkflowFailureError) as err:
            raise NotFound(f"no preview of {branch!r} in pipeline {pipeline!r}: {err}") from None

    async def wait_preview(
        self, pipeline: str, branch: str, until=lambda s: s.state != PreviewState.starting, timeout: float = 600
    ) -> PreviewStatus:
        """The preview's status once `until` holds (default: it serves, or says why not)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                status = await self.preview_status(pipeline, branch)
                if until(status):
                    return status
            except NotFound:  # not started yet
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"preview of {branch} did not get there within {timeout:.0f}s")
            await asyncio.sleep(0.5)

    async def preview_down(
        self, pipeline: str, branch: str, by: str | None = None, reason: str | None = None
    ) -> PreviewStatus:
        """Tear the preview down; returns its last status, once nothing of it is left."""
        handle = self.client.get_workflow_handle(preview_id(pipeline, branch), result_type=PreviewStatus)
        if not await running(handle):
            raise NotFound(f"no preview of {branch!r} runs in pipeline {pipeline!r}; `airagent preview list`")
        await handle.execute_update(Preview.down, Control(by=by, reason=reason))
        return await handle.result()
