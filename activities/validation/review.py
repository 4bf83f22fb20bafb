"""What the pipeline adds to a parse: owning teams, the commit that broke each file, and DAGs that
would vanish from the environments without consent."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import git
from codeowners import CodeOwners

from activities.bundle import export_commit
from activities.validation import cache, policies
from activities.validation.parse import parse_tree, read
from airagent.config import PipelineSettings, home
from airagent.models import Commit, RemovedDag, ValidationReport

CODEOWNERS_FILES = ("CODEOWNERS", ".github/CODEOWNERS", "docs/CODEOWNERS", ".gitlab/CODEOWNERS")
_SHA = re.compile(r"^[0-9a-f]{40}$")


def assign_teams(report: ValidationReport, pipeline: PipelineSettings, tree: Path) -> None:
    """Teams from airagent.yaml's `teams:` globs, and owners from a CODEOWNERS file in the tree."""
    codeowners = next((CodeOwners(text) for name in CODEOWNERS_FILES if (text := read(tree / name))), None)

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
            f.last_commit = Commit(
                sha=last.hexsha,
                author=last.author.name or "",
                email=last.author.email or "",
                summary=str(last.summary),
                at=last.authored_datetime,
            )


# --- DAGs that must not vanish --------------------------------------------------------


def dag_maps() -> Path:
    """Where each validated commit's dag_id -> file map is kept (gc keeps the newest, as it does reports)."""
    return home() / "validation-cache" / "commits"


def _dags_record(commit: str, dag_folder: str) -> Path:
    return dag_maps() / f"{commit}-{cache.digest(dag_folder.encode())[:8]}.json"


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
    with tempfile.TemporaryDirectory(prefix="airagent-live-") as scratch:
        export_commit(pipeline, commit, Path(scratch))
        if not (Path(scratch) / pipeline.dag_folder).is_dir():
            return {}
        report = parse_tree(runtime, Path(scratch), pipeline.dag_folder, pipeline.plugins_folder, pipeline)
    remember_dags(commit, pipeline.dag_folder, report)
    return {d: f.path for f in report.files for d in f.dag_ids}


def check_removals(
    report: ValidationReport,
    pipeline: PipelineSettings,
    repo: git.Repo,
    target: str,
    live_commits: list[str],
    runtime: Path,
) -> None:
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
    report.removed = [
        RemovedDag(dag_id=d, path=p)
        for d, p in policies.removed_dags(live, current, consent).items()
        if p not in failing
    ]


def review(
    report: ValidationReport,
    pipeline: PipelineSettings,
    repo: git.Repo | None,
    tree: Path,
    commit: str | None,
    live_commits: list[str],
    runtime: Path,
) -> ValidationReport:
    """What the pipeline adds to a parse: removals needing consent, owning teams, blame."""
    if repo is not None and commit:
        check_removals(report, pipeline, repo, commit, live_commits, runtime)
    assign_teams(report, pipeline, tree)
    if repo is not None and commit:
        blame(report, repo, commit)
    return report
