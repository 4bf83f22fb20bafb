"""What the deployer's policies need of each DAG, and how many DAG objects a file made."""

from __future__ import annotations

from typing import ClassVar


class DagCounter:
    """Counts the DAG objects a file creates: DagBag keeps only the last of two with one dag_id, silently."""

    created: ClassVar[list[str]] = []

    @classmethod
    def install(cls) -> None:
        from airflow.sdk.definitions.dag import DAG

        original = DAG.__init__

        def counting(self, *args, **kwargs):
            original(self, *args, **kwargs)
            cls.created.append(self.dag_id)

        DAG.__init__ = counting


def facts(dag) -> dict:
    """What the deployer's policies look at, so they can be checked without Airflow."""
    return {
        "dag_id": dag.dag_id,
        "owners": sorted({str(t.owner) for t in dag.tasks}),
        "tags": sorted(str(t) for t in dag.tags),
        "schedule": schedule_of(dag.schedule),
        "retries": {t.task_id: int(t.retries or 0) for t in dag.tasks},
    }


def schedule_of(schedule) -> str | None:
    """A schedule as people write it: '@daily', a cron line, None; 'assets' or a class name otherwise."""
    if schedule is None or isinstance(schedule, str):
        return schedule
    if hasattr(schedule, "total_seconds"):
        return f"every {schedule}"
    if isinstance(schedule, (list, tuple)) or type(schedule).__module__.startswith("airflow.sdk.definitions.asset"):
        return "assets"
    return type(schedule).__name__
