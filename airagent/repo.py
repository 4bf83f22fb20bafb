"""The pipeline's git repository, through GitPython: opened in place, or cloned once and fetched."""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import git

from airagent.config import ImageSettings, PipelineSettings, home

_SHA = re.compile(r"^[0-9a-fA-F]{4,40}$")


class RepoError(Exception):
    """The repository or a commit in it cannot be used; the message says what to do."""


def open_repository(pipeline: PipelineSettings, fetch: bool = True) -> git.Repo:
    """The repository a pipeline deploys from; a URL is mirrored under AIRAGENT_HOME and fetched."""
    if not pipeline.repo_is_url:
        try:
            return git.Repo(pipeline.repo)
        except (git.NoSuchPathError, git.InvalidGitRepositoryError):
            raise RepoError(
                f"pipeline {pipeline.name!r}: {pipeline.repo} is not a git repository; fix `repo`"
            ) from None
    key = hashlib.sha256(pipeline.repo.encode()).hexdigest()[:16]
    path = home() / "repos" / f"{pipeline.name}-{key}.git"
    if not path.exists():
        return _clone(pipeline.repo, path)
    repo = git.Repo(path)
    if fetch:
        # Branches and tags only: a mirror's own prune would drop the release commits under refs/airagent/.
        repo.remotes.origin.fetch(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], prune=True)
        if not pipeline.host_bound:
            # Release commits other workers of the fleet made and pushed (keep_release); never pruned.
            repo.remotes.origin.fetch([f"+{RELEASES}*:{RELEASES}*"])
    return repo


def _clone(url: str, path: Path) -> git.Repo:
    """Mirror `url` at `path` whole or not at all: activities of one worker (the conductor's poll, a train's
    diff) may clone at once, and one that found a half-made clone saw none of its commits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch:
        made = Path(scratch) / "clone.git"
        git.Repo.clone_from(url, made, bare=True, mirror=True)
        try:
            made.rename(path)
        except OSError:
            if not path.exists():
                raise
    return git.Repo(path)


def resolve(repo: git.Repo, pipeline: PipelineSettings, sha: str | None = None) -> str:
    """A full commit sha: the one given (abbreviated is fine) or the head of the pipeline's branch."""
    if sha is None:
        try:
            return _lookup(repo, pipeline.branch)
        except _MISSING:
            raise RepoError(
                f"pipeline {pipeline.name!r}: branch {pipeline.branch!r} not found in {pipeline.repo}; fix `branch`"
            ) from None
    if not _SHA.match(sha):
        raise RepoError(f"{sha!r} is not a commit sha; pass 4 to 40 hex digits")
    try:
        return _lookup(repo, sha)
    except _MISSING:
        raise RepoError(f"commit {sha} is not in {pipeline.repo}; push it or check the sha") from None


def commit_exists(repo: git.Repo, sha: str) -> bool:
    try:
        _lookup(repo, sha)
        return True
    except _MISSING:
        return False


_MISSING = (git.BadName, git.BadObject, ValueError)


def _lookup(repo: git.Repo, rev: str) -> str:
    commit = repo.commit(rev)
    commit.tree  # noqa: B018 - a full sha (the all-zero one CI sends for a deleted branch) parses without a lookup
    return commit.hexsha


# Trailers of a release commit airagent made without held commits (activities/holdback.py).
RELEASE_OF = "Airagent-Release-Of"
HELD = "Airagent-Held"
# Where release commits are kept, never on a branch; the mirror's fetch leaves these refs alone. Only a commit
# kept here speaks through the trailers above (`is_release`).
RELEASES = "refs/airagent/releases/"


def cluster_url(pipeline: PipelineSettings, image: ImageSettings | None = None) -> str | None:
    """The git URL that Jobs in the cluster (kaniko, the validator's git-sync) clone commits from, by the
    pipeline's image settings or the `image` given."""
    settings = image or pipeline.image
    if settings is None:
        return None
    return settings.context or (pipeline.repo if pipeline.repo_is_url else None)


def files_of(commit: git.Commit) -> list[str]:
    """Every file of a commit's tree, by its path from the repository's root."""
    # GitPython's types allow the edge tuples only `as_edge=True` yields, and any PathLike for a tree entry's path
    items = cast("Iterator[git.Blob | git.Tree | git.Submodule]", commit.tree.traverse())
    return [cast(str, item.path) for item in items if item.type == "blob"]


def keep_release(repo: git.Repo, pipeline: PipelineSettings, sha: str) -> str:
    """Keep a release commit under its ref here and wherever else it must be reachable (`release_remotes`)
    before the next stage asks for it. Returns the ref."""
    ref = RELEASES + sha
    git.Reference.create(repo, ref, sha, force=True)
    for url in release_remotes(pipeline):
        repo.git.push(url, f"+{sha}:{ref}")
    return ref


def release_remotes(pipeline: PipelineSettings) -> list[str]:
    """Where release commits are pushed: the URL the cluster clones from, and, when any worker of the fleet may
    run the next stage, the repository every worker's clone fetches from."""
    urls = [cluster_url(pipeline), pipeline.repo if pipeline.repo_is_url and not pipeline.host_bound else None]
    return list(dict.fromkeys(url for url in urls if url))


def ref_of(repo: git.Repo, pipeline: PipelineSettings, sha: str) -> str:
    """The ref a clone fetches to find `sha`: its release ref for a release commit, else the pipeline's branch."""
    return RELEASES + sha if is_release(repo, sha) else f"refs/heads/{pipeline.branch}"


def is_release(repo: git.Repo, sha: str) -> bool:
    """Whether `sha` is a release commit airagent made: one `keep_release` keeps under its own ref. Its message
    proves nothing, as anyone can write the trailers in a commit (a copied message, a cherry-picked release)."""
    full = repo.commit(sha).hexsha
    try:
        return _lookup(repo, RELEASES + full) == full
    except _MISSING:
        return False


def stands_for(repo: git.Repo, sha: str) -> tuple[str, list[str]]:
    """The head a commit stands for and the commits it leaves out: itself and none, for a user's commit,
    whatever trailers its message carries."""
    if not is_release(repo, sha):
        return sha, []
    trailers = repo.commit(sha).trailers_list
    head = next((value for key, value in trailers if key == RELEASE_OF), sha)
    return head, [value for key, value in trailers if key == HELD]
