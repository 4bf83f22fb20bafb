"""`airagent test PATH`: the DAGs of a working tree, or of one commit of it, each run once in the release runtime.

The tree becomes a release as `airagent validate` makes one (the runtime its
requirements name, built or reused by hash); the validation parser, through its cache,
says which file holds which DAG, so a run parses only its own file before `DAG.test()`
syncs the bundle. Runs go side by side, one per core, each in its own process.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import git
from temporalio.exceptions import ApplicationError

from activities import sandbox
from activities.bundle import export_commit
from activities.dagtest.report import DagResult, DagTestReport, last_line
from activities.dagtest.run import Bench, Runner
from activities.targets.base import CONFIG_FILES
from activities.validation import changed
from activities.validation.parse import parse_tree, readable
from activities.validation.tree import refuse_links_out, runtime_for
from airagent.config import ConfigError, PipelineSettings, ValidationSettings
from airagent.models import ValidationReport
from airagent.repo import RepoError, resolve

DEFAULT_TIMEOUT = 120.0


def run_tree(
    pipeline: PipelineSettings,
    root: Path,
    sha: str | None = None,
    dag_ids: Collection[str] = (),
    changed_only: bool = False,
    base: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    done: Callable[[DagResult], None] = lambda result: None,
) -> DagTestReport:
    """Run each selected DAG of the tree at `root` (or of commit `sha`) once; `done` hears of each as it ends.

    Selected: those named in `dag_ids`, else with `changed_only` those whose files, or the
    DAG-folder modules they import, the working tree changes against `base` (see
    `changed.scope`), else all. A file that does not import fails the report when its
    DAGs were selected or every DAG was.
    """
    try:
        repo: git.Repo | None = git.Repo(root)
    except (git.NoSuchPathError, git.InvalidGitRepositoryError):
        repo = None
    if sha is not None and repo is None:
        raise RepoError(f"{root} is not a git repository, so --sha cannot be looked up; drop --sha")
    if changed_only and (repo is None or sha is not None):
        raise RepoError("--changed compares a git working tree's files on disk; drop --changed or --sha")
    if pipeline.sandbox and (reason := sandbox.unavailable()):
        raise ApplicationError(reason, type="SandboxUnavailable", non_retryable=True)
    if repo is not None:
        pipeline = pipeline.model_copy(update={"repo": str(root)})
    scope = changed.scope(repo, pipeline, root, base) if changed_only and repo is not None else None
    only = scope.files if scope is not None else None
    with tempfile.TemporaryDirectory(prefix="airagent-test-") as scratch:
        tree = root
        if sha is not None:
            assert repo is not None  # refused above
            tree = Path(scratch)
            export_commit(pipeline, resolve(repo, pipeline, sha), tree)
        else:
            refuse_links_out(root)
        runtime = runtime_for(pipeline, tree)
        settings = pipeline.validation
        bench = Bench(
            runtime=runtime,
            tree=tree,
            dag_folder=pipeline.dag_folder,
            plugins_folder=pipeline.plugins_folder,
            config=next((c for c in CONFIG_FILES if (tree / c).is_file()), None),
            connections=_test_file(tree, settings, "test_connections"),
            variables=_test_file(tree, settings, "test_variables"),
            placeholders=settings.placeholders.model_dump(mode="json"),
            sandboxed=pipeline.sandbox,
            network=settings.tests_network,
            timeout=timeout,
        )
        with readable(tree) as staged, Runner(replace(bench, tree=staged)) as first:
            # The first run warms up while the tree is parsed to find which file holds which DAG.
            parsed = parse_tree(runtime, tree, pipeline.dag_folder, pipeline.plugins_folder, pipeline, only=only)
            chosen, broken = select(parsed, dag_ids)
            report = DagTestReport(
                broken=broken, scope=scope.describe(len(parsed.files)) if scope is not None else None
            )
            runners = iter([first])

            def one(file_and_dag: tuple[str, str]) -> DagResult:
                with next(runners, None) or Runner(first.bench) as runner:
                    result = named_back(runner.run(*file_and_dag), staged, root)
                done(result)
                return result

            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                report.dags = list(pool.map(one, chosen))
        return report


def select(parsed: ValidationReport, dag_ids: Collection[str]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(file, dag_id) to run, by file, and the files that do not import (path: the error's last line) that matter:
    all of them when every DAG is run, else none, unless a named DAG is nowhere to be found."""
    owner = {dag_id: f.path for f in parsed.files for dag_id in f.dag_ids}
    broken = {f.path: last_line(f.error) for f in parsed.files if f.error}
    if not dag_ids:
        return sorted((path, dag_id) for dag_id, path in owner.items()), broken
    missing = [d for d in dag_ids if d not in owner]
    if missing:
        known = ", ".join(sorted(owner)[:20]) or "none"
        hint = f"; {len(broken)} files do not import (`airagent validate` names them)" if broken else ""
        raise RepoError(f"no DAG {', '.join(map(repr, missing))} in this tree (its DAGs: {known}){hint}")
    return sorted({(owner[d], d) for d in dag_ids}), {}


def named_back(result: DagResult, staged: Path, root: Path) -> DagResult:
    """Logs and errors name the files where the caller has them, not where they were staged for the sandbox."""

    def back(text: str) -> str:
        return text.replace(str(staged), str(root))

    tasks = [t.model_copy(update={"log_tail": [back(line) for line in t.log_tail]}) for t in result.tasks]
    return result.model_copy(update={"tasks": tasks, "error": back(result.error) if result.error else None})


def _test_file(tree: Path, settings: ValidationSettings, name: str) -> str | None:
    """A test connections or variables file the repository names, from its root, when present."""
    given = posixpath.normpath(getattr(settings, name))
    path = (tree / given).resolve()
    if not path.is_relative_to(tree.resolve()):
        raise ConfigError(f"validation.{name}: {given} is outside the repository; name a file inside it")
    if path.is_file():
        return given
    if name in settings.model_fields_set:
        raise ConfigError(f"validation.{name}: {given} is not a file in {tree}; add it or remove the setting")
    return None
