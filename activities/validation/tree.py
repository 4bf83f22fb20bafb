"""The `validate` stage on a working tree, or on one commit of it, before a merge: `airagent validate PATH`."""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Collection
from pathlib import Path

import git

from activities.bundle import export_commit
from activities.runtime import ensure_runtime
from activities.validation import changed
from activities.validation.parse import parse_tree
from activities.validation.review import review
from airagent.config import PipelineSettings
from airagent.models import ValidationReport
from airagent.repo import RepoError, resolve


def check_changed(
    pipeline: PipelineSettings, root: Path, base: str | None = None
) -> tuple[ValidationReport, changed.Scope]:
    """`check_tree` over only what the working tree changes against `base` (see `changed.scope`), and that."""
    repo = _repository(root)
    if repo is None:
        raise RepoError(f"{root} is not the root of a git repository, so nothing can be compared; drop --changed")
    scope = changed.scope(repo, pipeline, root, base)
    return check_tree(pipeline, root, only=scope.files), scope


def check_tree(
    pipeline: PipelineSettings, root: Path, sha: str | None = None, only: Collection[str] | None = None
) -> ValidationReport:
    """The validate stage on a working tree, or on one commit of it, before a merge.

    DAGs present where the branch left the pipeline's branch (the merge base) and gone
    here need consent, from the commits since then or the config. With `only` (paths
    relative to the DAG folder), just those files are checked, and the DAGs they held.
    """
    repo = _repository(root)
    if repo is not None:
        pipeline = pipeline.model_copy(update={"repo": str(root)})
    if sha is not None and repo is None:
        raise RepoError(f"{root} is not a git repository, so --sha cannot be looked up; drop --sha")
    if sha is None:
        refuse_links_out(root)
    with tempfile.TemporaryDirectory(prefix="airagent-check-") as scratch:
        if sha:
            assert repo is not None  # a --sha outside a repository was refused above
            commit: str | None = resolve(repo, pipeline, sha)
        else:
            commit = repo.head.commit.hexsha if repo and repo.head.is_valid() else None
        tree = root
        if sha is not None:
            tree = Path(scratch)
            assert commit is not None  # resolved above; an empty --sha takes the head
            export_commit(pipeline, commit, tree)
        runtime = runtime_for(pipeline, tree)
        report = parse_tree(runtime, tree, pipeline.dag_folder, pipeline.plugins_folder, pipeline, only=only)
        live = []
        if repo is not None and commit:
            try:
                live = [b.hexsha for b in repo.merge_base(resolve(repo, pipeline), commit)]
            except RepoError:
                live = []  # no such branch here: nothing is live to compare with
        report = review(report, pipeline, repo, tree, commit, live, runtime)
        if only is not None:
            # The other files' DAGs are not in the report, and not gone.
            checked = {posixpath.normpath(posixpath.join(pipeline.dag_folder, rel)) for rel in only}
            report.removed = [r for r in report.removed if r.path in checked]
        return report


def _repository(root: Path) -> git.Repo | None:
    try:
        return git.Repo(root)
    except (git.NoSuchPathError, git.InvalidGitRepositoryError):
        return None


def refuse_links_out(root: Path) -> None:
    """A working tree's symlink that leaves it would have its target parsed, and reported: refuse it, as `build`
    refuses one in a commit."""
    inside = root.resolve()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in [*dirs, *files]:
            link = Path(folder) / name
            if link.is_symlink() and not link.resolve().is_relative_to(inside):
                raise RepoError(
                    f"{link} links outside the repository (to {link.resolve()}); "
                    "replace the link with the files themselves"
                )


def runtime_for(pipeline: PipelineSettings, tree: Path) -> Path:
    """The runtime of a tree about to be parsed or run, once its folders are checked to be inside it (no link or
    `..` leads out) and its DAG folder to exist."""
    for field in ("dag_folder", "plugins_folder"):
        folder = (tree / getattr(pipeline, field)).resolve()
        if not folder.is_relative_to(tree.resolve()) or (field == "dag_folder" and not folder.is_dir()):
            raise RepoError(f"{tree / getattr(pipeline, field)} is not a folder inside {tree}; check {field}")
    return ensure_runtime(pipeline.runtime, tree / pipeline.runtime.requirements, pipeline.sandbox)[1]
