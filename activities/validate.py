"""The `validate` stage: real Airflow parses the release's DAG folder inside the release's runtime.

Only files whose inputs changed are parsed (see validation_cache); then the pipeline's
rules apply to every file, DAGs that would vanish from the environments need consent,
and each failure is put in front of the team that owns the file, with the commit that
last touched it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import git
from codeowners import CodeOwners
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import parser_service, policies, validation_cache
from activities.parse_dags import PLUGINS
from airagent.config import Classification, PipelineSettings, ValidationSettings, home
from airagent.models import Commit, FileReport, Release, RemovedDag, ValidateInput, ValidationReport
from airagent.repo import RepoError, open_repository

PARSER = validation_cache.PARSER
PARSE_TIMEOUT = 900.0
CODEOWNERS_FILES = ("CODEOWNERS", ".github/CODEOWNERS", "docs/CODEOWNERS", ".gitlab/CODEOWNERS")
_SHA = re.compile(r"^[0-9a-f]{40}$")


def parse_release(release: Release, pipeline: PipelineSettings | None = None) -> ValidationReport:
    return parse_tree(Path(release.runtime), Path(release.bundle), release.dag_folder, release.plugins_folder,
                      pipeline)


def parse_tree(runtime: Path, bundle: Path, dag_folder: str, plugins_folder: str,
               pipeline: PipelineSettings | None = None, timeout: float | None = None) -> ValidationReport:
    """Parse what changed with the runtime's warm parser (see parser_service); the rest from the cache."""
    settings = pipeline.validation if pipeline else ValidationSettings()
    return parse_changed(
        {"runtime": runtime.name, "runtime_json": _read(runtime / "runtime.json")}, bundle, dag_folder,
        plugins_folder, pipeline, timeout,
        lambda todo: _run_parser(runtime, bundle, dag_folder, plugins_folder, todo, settings, timeout))


def parse_changed(runtime: dict, bundle: Path, dag_folder: str, plugins_folder: str,
                  pipeline: PipelineSettings | None, timeout: float | None,
                  parse: Callable[[list[str]], list[dict]]) -> ValidationReport:
    """Files not in the cache go to `parse` (paths relative to the DAG folder); `runtime` names what parses them.

    Then apply the pipeline's rules and name owners, so a report means the same
    whether a file was parsed now or came from the cache, here or in a pod.
    """
    settings = pipeline.validation if pipeline else ValidationSettings()
    ignored = (pipeline.classification if pipeline else Classification()).ignored
    context = {**runtime, "timeout": timeout, "placeholders": settings.placeholders.model_dump(mode="json"),
               "dag_folder": dag_folder, "plugins_folder": plugins_folder}
    keys = validation_cache.file_keys(bundle, dag_folder, context, ignored)
    found = validation_cache.load(keys.values())
    results = {rel: found.get(key) for rel, key in keys.items()}
    todo = sorted(rel for rel, result in results.items() if result is None)
    if todo:
        for result in parse(todo):
            rel = result["path"]
            results[rel] = result
            if not result.get("transient"):
                validation_cache.store(keys[rel], result)
    files = plugin_reports(results.pop(PLUGINS), plugins_folder, cached=PLUGINS not in todo)
    for rel in sorted(results):
        report = FileReport.model_validate({**results[rel], "path": _from_root(dag_folder, rel),
                                            "cached": rel not in todo})
        files.append(policies.check(report, settings))
    owners: dict[str, list[str]] = {}
    for f in files:
        for dag_id in f.dag_ids:
            owners.setdefault(dag_id, []).append(f.path)
    duplicates = {dag_id: paths for dag_id, paths in sorted(owners.items()) if len(paths) > 1}
    return ValidationReport(files=files, duplicates=duplicates, parsed=len([t for t in todo if t != PLUGINS]))


def plugin_reports(result: dict, plugins_folder: str, cached: bool) -> list[FileReport]:
    """A plugin that does not import, as Airflow would find it, fails like a DAG file; one that loads is not listed."""
    if result.get("error"):  # the load itself hung or died
        return [FileReport(path=plugins_folder, error=result["error"], cached=cached)]
    return [FileReport(path=_from_root(plugins_folder, rel), error=error, cached=cached)
            for rel, error in sorted(result.get("plugins", {}).items())]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _run_parser(runtime: Path, bundle: Path, dag_folder: str, plugins_folder: str, files: list[str],
                settings: ValidationSettings, timeout: float | None) -> list[dict]:
    request = {"folder": str(bundle / dag_folder), "plugins_folder": str(bundle / plugins_folder), "cwd": str(bundle),
               "files": files, "placeholders": settings.placeholders.model_dump(mode="json"),
               "workers": os.cpu_count() or 1, "timeout": timeout}
    try:
        return parser_service.parse(runtime, request, PARSE_TIMEOUT)
    except parser_service.ParserFailed as err:
        raise ApplicationError(f"the DAG parser itself failed: {str(err)[-3000:]}", type="ParserFailed") from None


def _from_root(dag_folder: str, path: str) -> str:
    """The parser sees paths inside the DAG folder; people know them from the repository's root."""
    return f"{dag_folder.rstrip('/')}/{path}" if dag_folder not in ("", ".") else path


# --- who owns what, who touched it ----------------------------------------------------


def assign_teams(report: ValidationReport, pipeline: PipelineSettings, tree: Path) -> None:
    """Teams from airagent.yaml's `teams:` globs, and owners from a CODEOWNERS file in the tree."""
    codeowners = next((CodeOwners(text) for name in CODEOWNERS_FILES if (text := _read(tree / name))), None)

    def teams(path: str) -> list[str]:
        found = set(pipeline.teams_of([path]))
        if codeowners is not None:
            found |= {owner for _, owner in codeowners.of(path)}
        return sorted(found)

    for f in report.files:
        f.teams = teams(f.path)
    for r in report.removed:
        r.teams = teams(r.path)


def blame(report: ValidationReport, repo: git.Repo, sha: str) -> None:
    """The commit, at or before `sha`, that last touched each broken file."""
    for f in report.broken:
        last = next(repo.iter_commits(sha, paths=f.path, max_count=1), None)
        if last is not None:
            f.last_commit = Commit(sha=last.hexsha, author=last.author.name or "", email=last.author.email or "",
                                   summary=str(last.summary), at=last.authored_datetime)


# --- DAGs that must not vanish --------------------------------------------------------


def _dags_record(commit: str, dag_folder: str) -> Path:
    return home() / "validation-cache" / "commits" / f"{commit}-{validation_cache.digest(dag_folder.encode())[:8]}.json"


def remember_dags(commit: str, dag_folder: str, report: ValidationReport) -> None:
    """The dag_id -> file map of a validated commit, so a later train knows what it would remove."""
    path = _dags_record(commit, dag_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({d: f.path for f in report.files for d in f.dag_ids}))


def dags_of_commit(pipeline: PipelineSettings, repo: git.Repo, commit: str, runtime: Path) -> dict[str, str]:
    """dag_id -> file of a commit: remembered when it was validated here, else parsed (mostly from the cache)."""
    record = _dags_record(commit, pipeline.dag_folder)
    if record.exists():
        return json.loads(record.read_text())
    from activities.build import export_commit

    with tempfile.TemporaryDirectory(prefix="airagent-live-") as scratch:
        export_commit(pipeline, commit, Path(scratch))
        if not (Path(scratch) / pipeline.dag_folder).is_dir():
            return {}
        report = parse_tree(runtime, Path(scratch), pipeline.dag_folder, pipeline.plugins_folder, pipeline)
    remember_dags(commit, pipeline.dag_folder, report)
    return {d: f.path for f in report.files for d in f.dag_ids}


def check_removals(report: ValidationReport, pipeline: PipelineSettings, repo: git.Repo, target: str,
                   live_commits: list[str], runtime: Path) -> None:
    """DAGs live in an environment and gone from this release fail it, unless a commit of the train or the
    config agrees to their removal."""
    live: dict[str, str] = {}
    trailers: list[tuple[str, str]] = []
    for commit in dict.fromkeys(live_commits):
        if not _SHA.match(commit) or commit == target:
            continue
        live.update(dags_of_commit(pipeline, repo, commit, runtime))
        for c in repo.iter_commits(f"{commit}..{target}"):
            trailers += c.trailers_list
    current = {d for f in report.files for d in f.dag_ids}
    # A file that fails to import shows no DAGs; that failure is reported already, not as a removal.
    failing = {f.path for f in report.files if f.error}
    consent = policies.consented(trailers, pipeline.validation.allow_dag_removal)
    report.removed = [RemovedDag(dag_id=d, path=p) for d, p in policies.removed_dags(live, current, consent).items()
                      if p not in failing]


def review(report: ValidationReport, pipeline: PipelineSettings, repo: git.Repo | None, tree: Path,
           commit: str | None, live_commits: list[str], runtime: Path) -> ValidationReport:
    """What the pipeline adds to a parse: removals needing consent, owning teams, blame."""
    if repo is not None and commit:
        check_removals(report, pipeline, repo, commit, live_commits, runtime)
    assign_teams(report, pipeline, tree)
    if repo is not None and commit:
        blame(report, repo, commit)
    return report


@activity.defn(name="validate")
def validate(input: ValidateInput) -> ValidationReport:
    """Returns the report either way; the train decides, so the report reaches its status."""
    release, pipeline = input.release, input.pipeline
    if release.image and pipeline is not None:
        from activities import validate_job  # the kubernetes client loads only when used

        report = validate_job.parse_in_image(release, pipeline)
    else:
        report = parse_release(release, pipeline)
    if pipeline is None:
        return report
    if report.ok:
        remember_dags(release.commit, release.dag_folder, report)
    try:
        repo = open_repository(pipeline, fetch=False)
    except RepoError as err:
        raise ApplicationError(str(err), type="BadInput", non_retryable=True) from None
    return review(report, pipeline, repo, Path(release.bundle), release.commit, input.live_commits,
                  Path(release.runtime))


def check_tree(pipeline: PipelineSettings, root: Path, sha: str | None = None) -> ValidationReport:
    """The validate stage on a working tree, or on one commit of it, before a merge.

    DAGs present where the branch left the pipeline's branch (the merge base) and gone
    here need consent, from the commits since then or the config.
    """
    from activities.build import ensure_runtime, export_commit
    from airagent.repo import resolve

    try:
        repo = git.Repo(root)
    except (git.NoSuchPathError, git.InvalidGitRepositoryError):
        repo = None
    if repo is not None:
        pipeline = pipeline.model_copy(update={"repo": str(root)})
    if sha is not None and repo is None:
        raise RepoError(f"{root} is not a git repository, so --sha cannot be looked up; drop --sha")
    with tempfile.TemporaryDirectory(prefix="airagent-check-") as scratch:
        commit = resolve(repo, pipeline, sha) if sha else (repo.head.commit.hexsha if repo and repo.head.is_valid()
                                                              else None)
        tree = root
        if sha is not None:
            tree = Path(scratch)
            export_commit(pipeline, commit, tree)
        for field in ("dag_folder", "plugins_folder"):
            folder = (tree / getattr(pipeline, field)).resolve()
            if not folder.is_relative_to(tree.resolve()) or (field == "dag_folder" and not folder.is_dir()):
                raise RepoError(f"{tree / getattr(pipeline, field)} is not a folder inside {tree}; check {field}")
        _, runtime = ensure_runtime(pipeline.runtime, tree / pipeline.runtime.requirements)
        report = parse_tree(runtime, tree, pipeline.dag_folder, pipeline.plugins_folder, pipeline)
        live = []
        if repo is not None and commit:
            try:
                live = [b.hexsha for b in repo.merge_base(resolve(repo, pipeline), commit)]
            except RepoError:
                live = []  # no such branch here: nothing is live to compare with
        return review(report, pipeline, repo, tree, commit, live, runtime)
