"""What a working tree changes against a base commit, and which DAG files that reaches: the files
`airagent validate --changed` checks (the Parse profile: seconds, on every save).

A DAG file's verdict depends on its own content, the DAG folder's modules it imports (transitively,
as the validation cache's keys see them) and every other file the classification does not ignore.
So a change to a DAG-folder module reaches the files that import it, and a change to anything else
(plugins, config, requirements, a data file a DAG might read) reaches every file.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

import git

from activities.validation import cache
from activities.validation.parser.paths import relative_python_files
from airagent.config import PipelineSettings
from airagent.repo import RepoError


@dataclass(frozen=True)
class Scope:
    """What to check, relative to a base commit."""

    base: str = ""  # the ref as people name it: main, origin/main, HEAD, or the --base given
    sha: str = ""
    changed: tuple[str, ...] = ()  # DAG-folder files (relative to it) the tree changes or removes
    files: tuple[str, ...] | None = None  # those and the files they reach, relative to it; None: every file
    reason: str = ""  # why every file, when `files` is None

    def describe(self, checked: int) -> str:
        """How many files were checked (`checked`, the removed ones left out) and why."""
        against = f"against {self.base} at {self.sha[:7]}" if self.sha else "with no commit to compare with"
        if self.files is None:
            return f"checked all {checked} files: {self.reason}; {against}"
        importers = len(self.files) - len(self.changed)
        changed = checked - importers
        removed = f" ({len(self.changed) - changed} removed)" if len(self.changed) > changed else ""
        return f"checked {changed} changed files{removed} and {importers} that import them, {against}"


def base_commit(repo: git.Repo, pipeline: PipelineSettings, ref: str | None) -> tuple[str, str]:
    """(name, sha) of what the tree is compared with: `ref` as given, else where HEAD left the pipeline's
    branch (the merge base); on the branch itself, its upstream's merge base (the commits not pushed yet
    count as changes), or HEAD when it tracks none."""
    if ref is not None:
        try:
            return ref, repo.commit(ref).hexsha
        except (git.BadName, git.BadObject, ValueError):
            raise RepoError(
                f"--base {ref!r} is not a commit in {repo.working_tree_dir}; name a branch or a sha"
            ) from None
    head = repo.head.commit
    branch = pipeline.branch
    if not repo.head.is_detached and repo.active_branch.name == branch:
        upstream = repo.active_branch.tracking_branch()
        if upstream is None or not upstream.is_valid():
            return "HEAD", head.hexsha
        branch = upstream.name
    try:
        bases = repo.merge_base(branch, head)
    except git.GitCommandError:
        bases = []
    if not bases:
        raise RepoError(
            f"HEAD shares no commit with {branch!r} (the pipeline's branch) here; fetch it, or pass --base REF"
        )
    return branch, bases[0].hexsha


def changed_paths(repo: git.Repo, sha: str) -> list[str]:
    """Paths (from the repository's root) that differ between commit `sha` and the files on disk: committed
    since, staged, unstaged, removed, and untracked ones git does not ignore."""
    diffed = repo.git.diff("--name-only", "--no-renames", "-z", sha, "--").split("\0")
    untracked = repo.git.ls_files("--others", "--exclude-standard", "-z").split("\0")
    return sorted({p for p in [*diffed, *untracked] if p})


def importers(dags: Path, changed: set[str]) -> set[str]:
    """The DAG folder's Python files whose cache key `changed` (paths relative to the folder, removed ones
    too) reaches: those importing one, transitively, and those importing a module that imports by a computed
    name, which depends on every Python file of the folder."""
    present = relative_python_files(dags)
    nodes = set(present) | changed
    imported_by: dict[str, set[str]] = {}
    dynamic = set()
    for rel in present:
        data = (dags / rel).read_bytes()
        imports, is_dynamic = cache._module_info(cache.digest(data), data)
        if is_dynamic:
            dynamic.add(rel)
        for level, module, members in imports:
            for dep in cache._candidates(rel, level, module, tuple(members)) & nodes:
                imported_by.setdefault(dep, set()).add(rel)
    reached = set(changed) | dynamic
    stack = list(reached)
    while stack:
        for rel in imported_by.get(stack.pop(), set()) - reached:
            reached.add(rel)
            stack.append(rel)
    return reached & set(present)


def scope(repo: git.Repo, pipeline: PipelineSettings, root: Path, ref: str | None) -> Scope:
    """The files `validate --changed` checks in the working tree at `root`, and why."""
    if not repo.head.is_valid():
        return Scope(reason="the repository has no commit yet")
    name, sha = base_commit(repo, pipeline, ref)
    dag_folder = posixpath.normpath(pipeline.dag_folder.strip("/")) if pipeline.dag_folder else "."
    prefix = "" if dag_folder == "." else dag_folder + "/"
    modules, others = set(), []
    for path in changed_paths(repo, sha):
        *folders, filename = path.split("/")
        if filename.endswith(".pyc") or any(f.startswith(".") or f == "__pycache__" for f in folders):
            continue  # what the cache keys leave out, and the parser too
        if path.startswith(prefix) and filename.endswith(".py"):
            if not filename.startswith("."):
                modules.add(path[len(prefix) :])
        elif pipeline.classification.kind_of(path) != "ignored":
            others.append(path)
    if others:
        kinds = sorted({pipeline.classification.kind_of(p) for p in others})
        named = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        return Scope(name, sha, reason=f"{named} changed ({', '.join(kinds)}), which every DAG file may read")
    reached = importers(root / dag_folder, modules) if modules else set()
    return Scope(name, sha, changed=tuple(sorted(modules)), files=tuple(sorted(reached | modules)))
