"""The `build` stage: a release directory, the runtime venv it runs in, and for kubernetes its image.

The release's files come straight out of git (`bundle`), so no shared working tree
can race; the runtime is reused whenever its inputs are unchanged (`runtime`).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import images
from activities.bundle import export_commit, inside
from activities.release import folder, nearest, place, release_hash, remember, repository_with
from activities.runtime import ensure_runtime
from airagent.config import PipelineSettings
from airagent.models import BuildInput, Release
from airagent.repo import RepoError, open_repository, ref_of, resolve


def image_tag(pipeline: PipelineSettings, sha: str | None = None) -> str:
    """`<repository>:<runtime hash>` of a commit (default the branch head), without building anything: the tag
    CI must build and push for the `external` builder."""
    assert pipeline.image is not None
    commit = resolve(open_repository(pipeline), pipeline, sha)
    with tempfile.TemporaryDirectory(prefix="airagent-tag-") as scratch:
        export_commit(pipeline, commit, Path(scratch))
        return f"{pipeline.image.repository}:{release_hash(pipeline, Path(scratch), commit)}"


@activity.defn(name="build")
def build(input: BuildInput) -> Release:
    pipeline = input.pipeline
    try:
        repo = repository_with(pipeline, input.target)  # diff may have run on another worker, or made the commit
        sha = resolve(repo, pipeline, input.target)
    except RepoError as err:
        raise ApplicationError(str(err), type="BadInput", non_retryable=True) from None
    scratch = folder(pipeline, f".{sha[:12]}.{uuid.uuid4().hex[:8]}")
    try:
        export_commit(pipeline, sha, scratch / "bundle", nearest(pipeline))
        bundle = scratch / "bundle"
        dag_folder = inside(bundle, pipeline.dag_folder, "dag_folder", sha)
        inside(bundle, pipeline.plugins_folder, "plugins_folder", sha)
        if not dag_folder.is_dir():
            raise ApplicationError(
                f"commit {sha[:12]}: dag_folder {pipeline.dag_folder!r} is not a folder in the repository; "
                "fix `dag_folder` in airagent.yaml",
                type="BadInput",
                non_retryable=True,
            )
        _, runtime = ensure_runtime(pipeline.runtime, bundle / pipeline.runtime.requirements, pipeline.sandbox)
        digest = release_hash(pipeline, bundle, sha)
        image = images.image_for(pipeline, digest, sha, input.image, ref_of(repo, pipeline, sha))
        release_id = f"{sha[:12]}-{digest[:8]}"
        final = folder(pipeline, release_id)
        release = Release(
            id=release_id,
            commit=sha,
            runtime_hash=digest,
            runtime=str(runtime),
            bundle=str(final / "bundle"),
            dag_folder=pipeline.dag_folder,
            plugins_folder=pipeline.plugins_folder,
            image=image,
        )
        place(scratch, final, release)
        remember(pipeline)
        return release
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
