"""Hold back the commits a validation failure traces to; the release is the head without their changes.

A failing path (a DAG file that does not import, a plugin, a duplicate dag_id's files, a
removed DAG) is traced to the train's commits that changed it or a module of the DAG
folder it imports. Those are held, with every commit that touches a path a held commit
touched (to a fixpoint), so a release never carries half of a commit or of a file's history.

The release commit is a real commit airagent writes in the repository it deploys from,
on `refs/airagent/releases/`, never on a branch: the head's tree with every held path as
the first environment has it (deleted where it has none). Its trailers name the head it
stands for and the commits it leaves out, so the next train compares with that head and
carries the held commits again: when their fix has landed, the hold lifts by itself. They
count only because the commit is kept under that ref: a user's commit with the same
trailers is an ordinary commit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import git
from git.index.typ import BaseIndexEntry
from temporalio import activity

from activities.heartbeat import keep_alive
from activities.release import present, repository_with
from activities.validation import cache as validation_cache
from activities.validation import reports
from airagent.config import PipelineSettings
from airagent.models import HeldCommit, HoldInput, HoldResult, SoakFailed
from airagent.models.held import soak_reason
from airagent.repo import HELD, RELEASE_OF, files_of, keep_release


def touched(commit: git.Commit) -> set[str]:
    """Paths a commit changed against its first parent; a rename touches both places."""
    if not commit.parents:
        return set(files_of(commit))
    return {path for d in commit.parents[0].diff(commit) for path in (d.a_path, d.b_path) if path}


def culprits(changes: list[tuple[str, set[str]]], failing: dict[str, set[str]]) -> dict[str, str]:
    """sha -> the failing path it changed (or a module that path imports).

    `changes` is (sha, paths) oldest first; `failing` maps a failing path to the paths it depends on."""
    found: dict[str, str] = {}
    for sha, paths in changes:
        for path, depends_on in failing.items():
            if paths & ({path} | depends_on):
                found.setdefault(sha, path)
    return found


def held_set(changes: list[tuple[str, set[str]]], culprit: set[str]) -> dict[str, str]:
    """The culprits, plus every commit touching a path a held commit touched, to a fixpoint:
    sha -> the held commit whose paths it shares (itself, for a culprit).

    Held paths go back to what the environment runs, so a commit sharing one, earlier or
    later, would be half deployed: it is held whole instead."""
    held = {sha: sha for sha in culprit}
    grew = True
    while grew:
        grew = False
        for sha, paths in changes:
            holder = next((h for h, hp in changes if h in held and h != sha and hp & paths), None)
            if sha not in held and holder:
                held[sha], grew = holder, True
    return held


def still_held(changes: list[tuple[str, set[str]]], held: list[HeldCommit], kind_of) -> dict[str, HeldCommit]:
    """The earlier holds to presume again: those of the train's commits no later commit of it could have fixed.

    A regression lifts only when a later commit changes its paths, as validation cannot tell
    it is fixed. A validation failure lifts also when a later commit changes what it depends
    on, or anything beyond DAG files (requirements, plugins, config can fix an import); then
    the train carries it and validation decides. Commits held only for sharing a path follow
    their holder through `held_set`."""
    order = {sha: i for i, (sha, _) in enumerate(changes)}

    def could_fix(h: HeldCommit, paths: set[str]) -> bool:
        return bool(paths & {*changes[order[h.sha]][1], *h.depends}) or (
            not h.regression and any(kind_of(p) not in ("dags", "ignored") for p in paths)
        )

    return {
        h.sha: h
        for h in held
        if h.sha in order
        and (h.regression or h.depends)
        and not any(could_fix(h, paths) for _, paths in changes[order[h.sha] + 1 :])
    }


def release_commit(
    repo: git.Repo, pipeline: PipelineSettings, target: str, live: str | None, held: list[HeldCommit]
) -> str:
    """The head's tree with every held path as `live` has it, committed on top of the head under refs/airagent/."""
    # In memory: from_tree's read-tree leaves an empty `index` in a bare clone, which breaks every later git diff.
    index = git.IndexFile.new(repo, repo.commit(target).tree)
    base = repo.commit(live).tree if live else None
    for path in sorted({p for h in held for p in h.paths}):
        index.entries.pop((path, 0), None)
        try:
            blob = base / path if base is not None else None
        except KeyError:
            blob = None
        if blob is not None and blob.type == "blob":
            index.entries[(path, 0)] = git.IndexEntry.from_base(BaseIndexEntry((blob.mode, blob.binsha, 0, path)))
    tree = index.write_tree()
    summary = ", ".join(h.sha[:12] for h in held)
    message = (
        f"airagent release of {target[:12]} without {summary}\n\n"
        + "".join(f"{h.sha[:12]} {h.summary}: {h.reason.splitlines()[0][:200]}\n" for h in held)
        + f"\n{RELEASE_OF}: {target}\n"
        + "".join(f"{HELD}: {h.sha}\n" for h in held)
    )
    commit = git.Commit.create_from_tree(repo, tree, message, parent_commits=[repo.commit(target)], head=False)
    keep_release(repo, pipeline, commit.hexsha)
    return commit.hexsha


def _failing(input: HoldInput, pipeline: PipelineSettings) -> dict[str, set[str]]:
    """Each failing path and the DAG folder's files it imports (from the repository's root)."""
    folder = pipeline.dag_folder.rstrip("/")
    prefix = "" if folder in ("", ".") else folder + "/"
    failing = {}
    for path in input.failures:
        inside = path.removeprefix(prefix) if path.startswith(prefix) and path.endswith(".py") else None
        modules = (
            validation_cache.imported_modules(Path(input.bundle), pipeline.dag_folder, inside) if inside else set()
        )
        failing[path] = {prefix + m for m in modules}
    return failing


def _depends(paths: set[str], failing: dict[str, set[str]]) -> list[str]:
    """The failing files a commit's paths lead to, and the modules they import."""
    return sorted({p for path, imports in failing.items() if paths & ({path} | imports) for p in {path} | imports})


@activity.defn(name="hold_back")
def hold_back(input: HoldInput) -> HoldResult:
    with keep_alive("hold_back"):
        if input.soak_failed is not None:
            failures = _soak_failures(input.soak_failed, input.pipeline)
            input = input.model_copy(update={"failures": input.failures | failures})
        return hold(repository_with(input.pipeline, input.target), input)  # diff may have run on another worker


def _soak_failures(soak: SoakFailed, pipeline: PipelineSettings) -> dict[str, str]:
    """The files that define the DAGs whose tasks failed during a soak, from the release's full report (made
    again from the release, which may be made here first, when this worker does not have it)."""
    report = reports.recall(soak.report, present(soak.release, pipeline), None)
    failed = set(soak.dag_ids)
    return {
        f.path: soak_reason(sorted(failed & set(f.dag_ids)), soak.environment, soak.why)
        for f in report.files
        if failed & set(f.dag_ids)
    }


def hold(repo: git.Repo, input: HoldInput) -> HoldResult:
    """Who is held (traced now, or presumed from earlier trains) and, unless tracing a soak or holding every commit,
    the release commit."""
    pipeline = input.pipeline
    commits = [repo.commit(sha) for sha in reversed(input.commits)]
    changes = [(c.hexsha, touched(c)) for c in commits]
    failing = _failing(input, pipeline)
    caused = culprits(changes, failing)
    presumed = still_held(changes, input.held, pipeline.classification.kind_of)
    holders = held_set(changes, set(caused) | set(presumed))
    if not holders:
        return HoldResult()
    by_sha, now = {c.hexsha: c for c in commits}, datetime.now(UTC)
    held = [
        presumed[sha].model_copy(update={"paths": sorted(paths), "teams": pipeline.teams_of(sorted(paths))})
        if sha in presumed
        else HeldCommit(
            sha=sha,
            author=by_sha[sha].author.name or "",
            summary=cast(str, by_sha[sha].summary),  # str: GitPython decodes a message, replacing what it cannot
            teams=pipeline.teams_of(sorted(paths)),
            paths=sorted(paths),
            since=now,
            regression=input.soak,
            depends=_depends(paths, failing),
            reason=f"{caused[sha]}: {input.failures[caused[sha]]}"
            if sha in caused
            else f"changes a path of held commit {holders[sha][:12]}",
        )
        for sha, paths in changes
        if sha in holders
    ]
    if input.soak or holders.keys() >= {sha for sha, _ in changes}:
        return HoldResult(held=held)  # a soak's rollback is done; with every commit held there is nothing to release
    return HoldResult(commit=release_commit(repo, pipeline, input.target, input.live_commit, held), held=held)
