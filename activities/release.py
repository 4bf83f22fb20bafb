"""A release on this worker: its files and runtime, made here again when another worker of the fleet built it.

`build` makes a release on one worker's disk (`Release.bundle` and `Release.runtime` are
paths there), but a pipeline that is not host-bound (kubernetes environments) may run
any stage on any worker. Rather than share that disk (a ReadWriteMany volume every
replica mounts, and locks on it), each worker makes the release again from its
content-addressed inputs: the commit names the files, exported as `build` exports them,
and the runtime hash names the venv they build, checked here. A copy made here is the
same release; each worker needs only a disk of its own, and a worker that dies takes
nothing with it. A release commit airagent made (held-back commits) is pushed under
refs/airagent/releases/ to the repository every worker fetches from (`keep_release`), so
a worker that lacks it fetches; until it can, the stage fails and is retried, never
passes on files that are not there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import git
from temporalio.exceptions import ApplicationError

from activities import images
from activities.bundle import export_commit, inside
from activities.heartbeat import keep_alive
from activities.runtime import ensure_runtime, runtime_hash
from airagent.config import PipelineSettings, home
from airagent.models import Release
from airagent.repo import RepoError, commit_exists, open_repository


def release_hash(pipeline: PipelineSettings, bundle: Path, sha: str) -> str:
    """The runtime hash a release is known by: the venv's inputs, plus the Dockerfile when the pipeline has
    `image:` (so it is also the image tag). One function, so CI's `airagent image tag`, the build and a
    release made again on another worker agree."""
    requirements = bundle / pipeline.runtime.requirements
    digest = runtime_hash(pipeline.runtime, requirements.read_bytes() if requirements.is_file() else b"")
    if pipeline.image is not None:
        dockerfile = inside(bundle, pipeline.image.dockerfile, "image.dockerfile", sha)
        digest = images.image_hash(digest, dockerfile.read_bytes() if dockerfile.is_file() else b"")
    return digest


def folder(pipeline: PipelineSettings, release_id: str) -> Path:
    """Where a release's files live on this worker: `bundle/` and `release.json`, written last."""
    return home() / "releases" / pipeline.name / release_id


def remember(pipeline: PipelineSettings) -> None:
    """The settings this pipeline's releases here were made with, beside them: the worker's own gc reads them
    (worker.janitor), as in a fleet the conductor's collection after a train runs on one replica only."""
    path = home() / "releases" / pipeline.name / "pipeline.json"
    text = pipeline.model_dump_json(indent=2)
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".pipeline.{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def nearest(pipeline: PipelineSettings) -> tuple[str, Path] | None:
    """(commit, bundle) of the pipeline's release made here last: a new one is exported by difference from it."""
    made = []
    for described in (home() / "releases" / pipeline.name).glob("[!.]*/release.json"):  # not a scratch folder
        with contextlib.suppress(OSError, ValueError):
            made.append((described.stat().st_mtime, Release.model_validate_json(described.read_text())))
    if not made:
        return None
    newest = max(made, key=lambda m: m[0])[1]
    return newest.commit, folder(pipeline, newest.id) / "bundle"


def place(scratch: Path, final: Path, release: Release) -> None:
    """Move a finished release folder into place whole; a twin that got there first (another activity making
    the same release) is kept, as it is the same release."""
    if (final / "release.json").exists():
        return
    (scratch / "release.json").write_text(release.model_dump_json(indent=2))
    try:
        scratch.rename(final)
    except OSError:
        if not (final / "release.json").exists():
            raise


def present(release: Release, pipeline: PipelineSettings | None) -> Release:
    """`release` with this worker's paths, its files and runtime made here if they are not.

    Raises a retryable ApplicationError while its commit is not to be had or its folder here is found emptied,
    and a non-retryable one when the commit's files give another runtime than the release's.
    """
    if pipeline is None:  # a request from a train older than the pipeline in it: nothing to make it from
        return release
    final = folder(pipeline, release.id)
    with keep_alive(f"release {release.id}"):
        repo = repository_with(pipeline, release.commit)
        if not (final / "release.json").is_file():
            _make(release, pipeline, final)
        here = _with_runtime(release, pipeline, final / "bundle")
    _expect_dags(repo, here)
    return here


def repository_with(pipeline: PipelineSettings, sha: str) -> git.Repo:
    """The pipeline's repository holding `sha`, fetched when this worker's clone does not have it yet."""
    try:
        repo = open_repository(pipeline, fetch=False)
        if not commit_exists(repo, sha):
            repo = open_repository(pipeline)
    except RepoError as err:
        raise ApplicationError(str(err), type="BadInput", non_retryable=True) from None
    if not commit_exists(repo, sha):
        raise ApplicationError(
            f"commit {sha[:12]} is not in {pipeline.repo}, even after a fetch; a release commit airagent made "
            f"is found under refs/airagent/releases/ once the worker that made it has pushed it",
            type="CommitUnavailable",
        )
    return repo


def _make(release: Release, pipeline: PipelineSettings, final: Path) -> None:
    """The commit's files in a scratch folder, checked against the release's runtime hash, then placed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = final.with_name(f".{release.id}.{uuid.uuid4().hex[:8]}")
    try:
        export_commit(pipeline, release.commit, scratch / "bundle", nearest(pipeline))
        made = _with_runtime(release, pipeline, scratch / "bundle")
        place(scratch, final, made.model_copy(update={"bundle": str(final / "bundle")}))
        remember(pipeline)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _with_runtime(release: Release, pipeline: PipelineSettings, bundle: Path) -> Release:
    """`release` on `bundle`, with the runtime its files give on this worker: the one it was built with."""
    digest = release_hash(pipeline, bundle, release.commit)
    if digest != release.runtime_hash:
        raise ApplicationError(
            f"release {release.id}: commit {release.commit[:12]} gives runtime hash {digest} with this pipeline's "
            f"settings, not {release.runtime_hash}; its runtime settings changed since it was built, so deploy "
            "the commit again in a new train",
            type="ReleaseMismatch",
            non_retryable=True,
        )
    _, runtime = ensure_runtime(pipeline.runtime, bundle / pipeline.runtime.requirements, pipeline.sandbox)
    return release.model_copy(update={"bundle": str(bundle), "runtime": str(runtime)})


def _expect_dags(repo: git.Repo, release: Release) -> None:
    """A DAG folder found empty while the commit has files there would validate as passing: refuse it.

    Any file counts, on both sides: `git archive` leaves out files marked export-ignore, so a file-by-file
    comparison could fail a good release."""
    dags = Path(release.bundle) / release.dag_folder
    if any(files for _, _, files in os.walk(dags)):
        return
    listed = repo.git.ls_tree("-r", "--name-only", "--full-tree", release.commit, "--", release.dag_folder or ".")
    if listed.strip():
        raise ApplicationError(
            f"release {release.id}: {dags} holds no file, while commit {release.commit[:12]} has files in "
            f"{release.dag_folder!r}; the release folder was emptied on this worker (being removed?): remove "
            f"{Path(release.bundle).parent} and the next attempt makes it again",
            type="ReleaseIncomplete",
        )
