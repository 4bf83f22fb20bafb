"""The `validate` stage: what real Airflow found in each file, and the report over them."""

from __future__ import annotations

from pydantic import BaseModel, Field

from airagent.config import PipelineSettings
from airagent.models.build import Release
from airagent.models.common import Commit


class DagFacts(BaseModel):
    """What the parser saw of one DAG, for the policies; kept out of workflow history (see FileReport)."""

    dag_id: str
    owners: list[str] = []
    tags: list[str] = []
    schedule: str | None = None
    retries: dict[str, int] = Field({}, description="task_id -> retries")


class Problem(BaseModel):
    """One reason a file fails validation beyond not importing: a policy, the parse-time budget, a duplicate."""

    rule: str = Field(description="e.g. min_retries, parse_time, duplicate_dag_id; the setting to look at")
    message: str
    dag_id: str | None = None


class FileReport(BaseModel):
    path: str
    dag_ids: list[str] = []
    error: str | None = None
    parse_seconds: float = 0.0
    problems: list[Problem] = []
    warnings: list[str] = []
    placeholders: list[str] = Field([], description="lookups that got made-up values while parsing")
    teams: list[str] = []
    last_commit: Commit | None = Field(None, description="the commit that last touched the file, for a broken one")
    cached: bool = Field(False, description="taken from the validation cache, not parsed this time")
    # Facts for the policies: many per file, needed only inside the activity.
    dags: list[DagFacts] = Field([], exclude=True)
    imports: list[str] = Field([], exclude=True)
    same_file_duplicates: list[str] = Field([], exclude=True)
    transient: bool = Field(False, exclude=True, description="hung or died: not cached, the next try may differ")

    @property
    def failed(self) -> bool:
        return bool(self.error or self.problems)

    def reasons(self) -> list[str]:
        found = [last_line(self.error)] if self.error else []
        if self.error and self.placeholders:
            found[0] += (
                f" (parsed with placeholders for {', '.join(self.placeholders)}; give real values "
                "under validation.placeholders if the error comes from one)"
            )
        return found + [f"{p.rule}: {p.message}" for p in self.problems]


class RemovedDag(BaseModel):
    dag_id: str
    path: str = Field(description="the file that defined it in the live release")
    teams: list[str] = []


# Files a bounded report names (broken or warned first); the rest are counted.
LISTED = 50


class Counts(BaseModel):
    """What a bounded report counts of the full one."""

    files: int
    dags: int
    broken: int
    duplicates: int
    removed: int


class ValidationReport(BaseModel):
    files: list[FileReport] = Field(description="every file; in a bounded report, only the first broken or warned")
    duplicates: dict[str, list[str]] = Field({}, description="dag_id -> files defining it")
    removed: list[RemovedDag] = Field([], description="DAGs live now, gone in this release, without consent")
    parsed: int | None = Field(None, description="files parsed this time; the others came from the cache")
    counts: Counts | None = Field(None, description="a bounded report's totals; None when `files` has them all")
    digest: str | None = Field(None, description="a bounded report's full one, kept by content where it was made")

    def bounded(self, digest: str) -> ValidationReport:
        """What travels in workflow history: the first LISTED failures and warnings, with the totals."""
        noted = [f for f in self.files if f.failed] + [f for f in self.files if f.warnings and not f.failed]
        return ValidationReport(
            files=noted[:LISTED],
            duplicates=dict(list(self.duplicates.items())[:LISTED]),
            removed=self.removed[:LISTED],
            parsed=self.parsed,
            counts=Counts(
                files=len(self.files),
                dags=sum(len(f.dag_ids) for f in self.files),
                broken=len(self.broken),
                duplicates=len(self.duplicates),
                removed=len(self.removed),
            ),
            digest=digest,
        )

    def _totals(self) -> Counts:
        return self.counts or Counts(
            files=len(self.files),
            dags=sum(len(f.dag_ids) for f in self.files),
            broken=len(self.broken),
            duplicates=len(self.duplicates),
            removed=len(self.removed),
        )

    @property
    def broken(self) -> list[FileReport]:
        return [f for f in self.files if f.failed]

    @property
    def ok(self) -> bool:
        return not self.broken and not self.duplicates and not self.removed

    def failures(self) -> dict[str, str]:
        """Each failing path (from the repository's root) and why, to trace the failure to commits."""
        found = {f.path: "; ".join(f.reasons()) for f in self.broken}
        for dag_id, paths in self.duplicates.items():
            for path in paths:
                found.setdefault(path, f"dag_id {dag_id!r} is defined in {', '.join(paths)}")
        for r in self.removed:
            found.setdefault(r.path, f"DAG {r.dag_id!r} is live but gone from this release")
        return found

    def by_team(self) -> dict[str, list[str]]:
        """Failure lines per owning team ('(no team)' for unowned paths), for the people who must act."""
        teams: dict[str, list[str]] = {}

        def add(owners: list[str], line: str) -> None:
            for team in owners or ["(no team)"]:
                teams.setdefault(team, []).append(line)

        for f in self.broken:
            blame = ""
            if f.last_commit:
                c = f.last_commit
                blame = f" — last changed in {c.sha[:8]} by {c.author}: {c.summary}"
            for reason in f.reasons():
                add(f.teams, f"{f.path}: {reason}{blame}")
        for r in self.removed:
            add(
                r.teams,
                f"{r.path}: DAG {r.dag_id!r} is live but gone from this release; if that is meant, add "
                f"the trailer 'Airagent-Allow-Dag-Removal: {r.dag_id}' to a commit, or list it under "
                "validation.allow_dag_removal",
            )
        return dict(sorted(teams.items(), key=lambda kv: (kv[0] == "(no team)", kv[0])))

    def summary(self) -> str:
        total = self._totals()
        head = f"{total.files} files, {total.dags} DAGs"
        if self.parsed is not None:
            head += f" ({self.parsed} parsed, {total.files - self.parsed} from cache)"
        warnings = [f"warning: {f.path}: {w}" for f in self.files for w in f.warnings]
        if self.ok:
            return "\n".join([f"{head}: all parse", *warnings])
        lines = [f"{head}: {total.broken} broken, {total.duplicates} duplicate dag_ids, {total.removed} removed DAGs"]
        for team, failures in self.by_team().items():
            lines.append(f"team {team}:" if team != "(no team)" else "no owning team:")
            lines += [f"  {line}" for line in failures]
        for dag_id, paths in self.duplicates.items():
            lines.append(f"dag_id {dag_id!r} defined in {', '.join(paths)}")
        unlisted = total.broken - len(self.broken) + total.duplicates - len(self.duplicates)
        if unlisted > 0:
            lines.append(f"… and {unlisted} more (`airagent validate` lists them all)")
        return "\n".join(lines + warnings)


def last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


class ValidateInput(BaseModel):
    release: Release
    # Optional so a train started before these existed still validates (parse only).
    pipeline: PipelineSettings | None = Field(
        None, description="for policies, placeholders, teams, blame and the removal check"
    )
    live_commits: list[str] = Field(
        [],
        description="commits live in the environments now: their DAGs must not vanish without consent, and "
        "the commits from each to the release carry the consent trailers",
    )
