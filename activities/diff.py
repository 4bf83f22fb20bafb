"""The `diff` stage: what each environment must change to reach the target commit, and how.

When earlier trains held commits back and none of this train's later commits could have
fixed them, the target is airagent's release commit of the head without them: on a broken
main, a train builds and validates the release that will pass, once.
"""

from __future__ import annotations

from datetime import UTC
from typing import cast

import git
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.environment import environment
from activities.heartbeat import keep_alive
from activities.holdback import hold
from airagent.config import Classification, PipelineSettings
from airagent.models import (
    ChangedFile,
    Commit,
    DiffInput,
    DiffResult,
    EnvironmentChange,
    HoldInput,
    Kind,
    Marker,
    RolloutMode,
)
from airagent.repo import RepoError, commit_exists, files_of, open_repository, resolve, stands_for

_CHANGE = {"A": "added", "D": "deleted", "M": "modified", "R": "renamed", "T": "type-changed", "C": "copied"}


def classify(path: str, rules: Classification) -> Kind:
    return Kind(rules.kind_of(path))


def changed_files(repo: git.Repo, live: str | None, target: str, rules: Classification) -> list[ChangedFile]:
    """Files that differ between two commits (everything, on a first deploy), with renames detected."""
    head = repo.commit(target)
    if live is None:
        return [ChangedFile(path=path, kind=classify(path, rules), change="added") for path in files_of(head)]
    files = []
    for d in repo.commit(live).diff(head, M=True):
        assert d.change_type is not None  # set on every entry of a diff between two commits
        change = _CHANGE.get(d.change_type, d.change_type)
        path = d.a_path if d.change_type == "D" else d.b_path
        assert path is not None  # the side the file is on: its old one if deleted, else its new one
        files.append(
            ChangedFile(
                path=path,
                kind=classify(path, rules),
                change=change,
                old_path=d.a_path if d.change_type == "R" else None,
            )
        )
        if d.change_type == "R":
            assert d.a_path is not None  # a rename has both sides
            if classify(d.a_path, rules) != files[-1].kind:
                # A file moved between kinds changes both: count the place it left too.
                files.append(ChangedFile(path=d.a_path, kind=classify(d.a_path, rules), change="deleted"))
    return sorted(files, key=lambda f: f.path)


MAX_COMMITS = 200


def train_commits(repo: git.Repo, lives: list[str | None], target: str) -> list[Commit]:
    """The commits this train carries: those the furthest-behind environment lacks, newest first."""
    if not lives:
        return []
    held: list[str]
    if any(
        live is None
        or not commit_exists(repo, live)
        # GitPython types the revs as Commit; git takes any rev, a sha too
        or not repo.is_ancestor(stands_for(repo, live)[0], target)  # type: ignore[arg-type]
        for live in lives
    ):
        revs, held = [target], []
    else:
        # A release without held commits stands for its head and carries them again.
        head, held = max(
            (stands_for(repo, live) for live in lives if live is not None),  # all of them: any() above was false
            key=lambda h: int(repo.git.rev_list("--count", target, f"^{h[0]}")) + len(h[1]),
        )
        revs = [target, f"^{head}"]
    newest = repo.iter_commits(revs, max_count=MAX_COMMITS)  # type: ignore[arg-type]  # GitPython: one rev; git: a list
    carried = [*newest, *reversed([repo.commit(sha) for sha in held])]
    return [
        Commit(
            sha=c.hexsha,
            author=c.author.name or "",
            email=c.author.email or "",
            summary=cast(str, c.summary),  # str: GitPython decodes a message, replacing what it cannot
            at=c.committed_datetime.astimezone(UTC),
        )
        for c in carried
    ]


@activity.defn(name="diff")
def diff(input: DiffInput) -> DiffResult:
    with keep_alive("diff"):  # a worker that dies mid-diff shows within the heartbeat timeout
        return _diff(input)


def _diff(input: DiffInput) -> DiffResult:
    pipeline = input.pipeline
    try:
        repo = open_repository(pipeline)
        target = resolve(repo, pipeline, input.target)
    except RepoError as err:
        raise ApplicationError(str(err), type="BadInput", non_retryable=True) from None
    markers = [(env.name, environment(env).marker()) for env in pipeline.environments]
    changes = _changes(repo, pipeline, markers, target)
    commits = train_commits(repo, [c.live_commit for c in changes if c.mode], target)
    if not input.held or not commits:
        return DiffResult(target=target, commits=commits, environments=changes)
    presumed = hold(
        repo,
        HoldInput(
            pipeline=pipeline,
            target=target,
            commits=[c.sha for c in commits],
            live_commit=markers[0][1].live_commit,
            bundle="",
            failures={},
            held=input.held,
        ),
    )
    if presumed.commit is None:
        return DiffResult(target=target, commits=commits, environments=changes)
    return DiffResult(
        target=presumed.commit,
        head=target,
        commits=commits,
        held=presumed.held,
        environments=_changes(repo, pipeline, markers, presumed.commit),
    )


def _changes(
    repo: git.Repo, pipeline: PipelineSettings, markers: list[tuple[str, Marker]], target: str
) -> list[EnvironmentChange]:
    changes = []
    for name, live in markers:
        live_commit = live.live_commit
        if live_commit == target or (
            live_commit and not pipeline.allow_history_rewrite and _carries(repo, live_commit, target)
        ):
            changes.append(EnvironmentChange(environment=name, live_commit=live_commit, live_release=live.live))
            continue
        if live_commit is not None:
            _check_ancestry(repo, pipeline.name, pipeline.allow_history_rewrite, name, live_commit, target)
        # A live commit lost to a rewrite is compared as a first deploy: everything changes.
        base = live_commit if live_commit and commit_exists(repo, live_commit) else None
        files = changed_files(repo, base, target, pipeline.classification)
        # Only ignored files (docs, tests, CI) changed: nothing to roll. The environment keeps its live commit,
        # and the next train's diff starts there, so these files still reach it with the next real change.
        kinds = {f.kind for f in files} - {Kind.ignored}
        changes.append(
            EnvironmentChange.of(
                files,
                environment=name,
                live_commit=live_commit,
                live_release=live.live,
                mode=RolloutMode.for_kinds(kinds) if kinds else None,
            )
        )
    return changes


def _carries(repo: git.Repo, live: str, target: str) -> bool:
    """Whether what runs already holds `target`: a later commit of the same history, no commit held back from it
    in `target`. A deploy of an earlier commit (a CI job for an earlier push, arriving late) then finds nothing
    to do; going back to it is a rollback, or a deploy with allow_history_rewrite."""
    if not commit_exists(repo, live):
        return False
    head, held = stands_for(repo, live)
    # GitPython types the revs as Commit; git takes any rev, a sha too
    return repo.is_ancestor(target, head) and not any(repo.is_ancestor(h, target) for h in held)  # type: ignore[arg-type]


def _check_ancestry(repo: git.Repo, pipeline: str, allowed: bool, env: str, live: str, target: str) -> None:
    if not commit_exists(repo, live):
        if allowed:
            return
        raise ApplicationError(
            f"{env} runs {live[:12]}, which is no longer in the repository (history was rewritten); "
            f"set allow_history_rewrite: true on pipeline {pipeline!r} to deploy anyway",
            type="HistoryRewritten",
            non_retryable=True,
        )
    # GitPython types the revs as Commit; git takes any rev, a sha too
    if not allowed and not repo.is_ancestor(stands_for(repo, live)[0], target):  # type: ignore[arg-type]
        raise ApplicationError(
            f"{env} runs {live[:12]}, which is not an ancestor of {target[:12]} (history was rewritten "
            f"or the commit is older than what is live); set allow_history_rewrite: true on pipeline "
            f"{pipeline!r} to deploy anyway",
            type="HistoryRewritten",
            non_retryable=True,
        )
