"""The rules of airagent.yaml's `validation:` section, applied to what the parser saw.

Plain functions over the parser's facts, without Airflow, so every rule is tested on its
own; the validate activity calls them for every file, parsed or from the cache.
"""

from __future__ import annotations

from airagent.config import ValidationSettings
from airagent.models import FileReport, Problem

DEFAULT_OWNER = "airflow"  # what Airflow gives a task nobody named an owner for
REMOVAL_TRAILER = "Airagent-Allow-Dag-Removal"


def check(file: FileReport, settings: ValidationSettings) -> FileReport:
    """The file with its problems and warnings set afresh (a cached file meets today's rules)."""
    problems = [
        Problem(
            rule="duplicate_dag_id",
            dag_id=d,
            message=f"the file creates DAG {d!r} more than once and Airflow keeps only the last; "
            "give each DAG its own dag_id",
        )
        for d in file.same_file_duplicates
    ]
    problems += _policies(file, settings)
    warnings = []
    budget, took = settings.parse_time, file.parse_seconds
    if not file.error and budget.fail is not None and took > budget.fail.total_seconds():
        problems.append(
            Problem(
                rule="parse_time",
                message=(
                    f"parsing took {took:.1f}s, over validation.parse_time.fail ({budget.fail.total_seconds():g}s); "
                    "move slow work out of the file's top level into tasks"
                ),
            )
        )
    elif not file.error and budget.warn is not None and took > budget.warn.total_seconds():
        warnings.append(f"parsing took {took:.1f}s, over validation.parse_time.warn ({budget.warn.total_seconds():g}s)")
    return file.model_copy(update={"problems": problems, "warnings": warnings})


def _policies(file: FileReport, settings: ValidationSettings) -> list[Problem]:
    rules = settings.policies
    found: list[Problem] = []

    def fail(rule: str, dag_id: str | None, message: str) -> None:
        found.append(Problem(rule=rule, dag_id=dag_id, message=f"{message} (validation.policies.{rule})"))

    banned = sorted({b for b in rules.forbidden_imports for m in file.imports if m == b or m.startswith(b + ".")})
    for name in banned:
        fail("forbidden_imports", None, f"the file imports {name!r}, which is forbidden; remove the import")
    for dag in file.dags:
        if rules.require_owner and DEFAULT_OWNER in dag.owners:
            fail(
                "require_owner",
                dag.dag_id,
                f"DAG {dag.dag_id!r} has tasks without an owner; set default_args={{'owner': ...}} on the DAG",
            )
        if rules.allowed_owners is not None:
            for owner in dag.owners:
                if owner not in rules.allowed_owners:
                    fail(
                        "allowed_owners",
                        dag.dag_id,
                        f"DAG {dag.dag_id!r} has owner {owner!r}, not one of {rules.allowed_owners}; use one of those",
                    )
        if rules.require_tags and not dag.tags:
            fail("require_tags", dag.dag_id, f"DAG {dag.dag_id!r} has no tags; add tags=[...]")
        missing = [t for t in rules.required_tags if t not in dag.tags]
        if missing:
            fail("required_tags", dag.dag_id, f"DAG {dag.dag_id!r} lacks the tags {missing}; add them to tags=[...]")
        if rules.min_retries is not None:
            for task, retries in sorted(dag.retries.items()):
                if retries < rules.min_retries:
                    fail(
                        "min_retries",
                        dag.dag_id,
                        f"task {task!r} of DAG {dag.dag_id!r} retries {retries} times, "
                        f"fewer than {rules.min_retries}; set retries in default_args",
                    )
        if rules.allowed_schedules is not None and dag.schedule not in rules.allowed_schedules:
            fail(
                "allowed_schedules",
                dag.dag_id,
                f"DAG {dag.dag_id!r} has schedule {dag.schedule!r}, not one of "
                f"{rules.allowed_schedules}; use one of those",
            )
    return found


def removed_dags(live: dict[str, str], current: set[str], consent: set[str]) -> dict[str, str]:
    """dag_id -> its file in the live release, for DAGs gone from the new one that nobody agreed to remove."""
    return {dag_id: path for dag_id, path in sorted(live.items()) if dag_id not in current and dag_id not in consent}


def consented(trailers: list[tuple[str, str]], allowed: list[str]) -> set[str]:
    """dag_ids whose removal was agreed: by commit trailers of the train, or in the config."""
    given = {value.strip() for key, value in trailers if key.strip().lower() == REMOVAL_TRAILER.lower()}
    return given | set(allowed)
