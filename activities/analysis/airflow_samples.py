"""What the changed-DAG judge reads from Airflow: a DAG's finished task instances on its new version and on its
previous ones, and the smoke runs that give soak something to read.

Airflow 3 records the DAG version each task instance ran on, so the new version's tasks are told from the old
ones' by what Airflow recorded, not by when they ran. Both samples are bounded, as they land in workflow history.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Any

import httpx

from activities.airflow_api import AirflowApi
from airagent.models.analysis import DagSamples, TaskSample

SMOKE_TRIES = 4


def samples(api: AirflowApi, dag_id: str, since: datetime, history: timedelta, limit: int = 200) -> DagSamples:
    """The DAG's task instances on its latest version that ended after `since` (the roll), and those on its lower
    versions that ended within `history` before it; at most `limit` of each, the newest.

    The latest version is taken to be the roll's: the caller asks once the roll's parse is confirmed. A DAG
    Airflow has no version of (never parsed) has no samples and no `new_version`."""
    versions = api.dag_versions(dag_id)
    if not versions:
        return DagSamples(dag_id=dag_id)
    *older, latest = versions
    new = api.finished_tasks(dag_id, versions=[latest], ended_after=since, limit=limit)
    previous = api.finished_tasks(dag_id, versions=older, ended_after=since - history, ended_before=since, limit=limit)
    return DagSamples(dag_id=dag_id, new_version=latest, new=_tasks(new), previous=_tasks(previous))


def smoke(api: AirflowApi, dag_ids: list[str], train: str, release: str, pause: float = 1.0) -> dict[str, str]:
    """Trigger one run of each DAG now, marked in its conf and note as airagent's for this train; returns each
    DAG's run id, or the error Airflow answered for it (an unknown DAG, one with import errors): one DAG that
    cannot run never keeps the others from running. An Airflow that cannot be reached, or that refuses
    airagent's login, raises: no DAG could run, and a retry may fare better.

    Each run's id is the train's, so a smoke asked again (a retried activity) finds the run it started rather
    than starting another; an answer of 5xx (SQLite busy under load) is asked again, a few times, `pause` apart:
    a smoke run lost to it left a regression with nothing to judge."""
    conf = {"airagent": {"train": train, "release": release}}
    note = f"triggered by airagent for train {train} (release {release})"
    run_id = "airagent__" + re.sub(r"[^A-Za-z0-9_.~:+-]", "_", train)
    runs = {}
    for dag_id in dag_ids:
        for attempt in range(SMOKE_TRIES):
            try:
                runs[dag_id] = api.trigger(dag_id, conf, note, run_id)
                break
            except httpx.HTTPStatusError as err:
                if err.response.status_code == 409:  # this train's run is there already
                    runs[dag_id] = run_id
                    break
                runs[dag_id] = f"error: {err.response.status_code} {_detail(err.response)}"
                if err.response.status_code < 500:
                    break
                time.sleep(pause * 2**attempt)
    return runs


def _tasks(instances: list[dict[str, Any]]) -> list[TaskSample]:
    return [TaskSample(task_id=t["task_id"], state=t["state"], duration=t.get("duration")) for t in instances]


def _detail(response: httpx.Response) -> str:
    """Airflow's own words for a refusal, short."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or response.text or response.reason_phrase)[:300]
