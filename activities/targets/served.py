"""A dags-only roll's last step on a local Airflow: confirm that what Airflow serves is the new code.

Airflow is asked to parse each changed file it has DAGs from now (`PUT parseDagFile` with the
file's token), rather than when its DAG processor's round over every file comes to it; a file
new to it waits for the processor's next listing of the folder (local_settings). Done when
every DAG of the release is served, each changed file was parsed after the swap, and no
import error is new since the baseline.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath

import httpx

from activities.airflow_api import AirflowApi
from activities.targets.base import NotLive
from activities.targets.local import differing
from airagent.models import Baseline, Release

# The pause between looks at what Airflow serves: well under the time a parse takes. A look waits for its answer,
# so a slow api-server slows the looks rather than queueing them.
CONFIRM_POLL = 0.2


def confirm(
    api: AirflowApi,
    release: Release,
    dags: dict[str, list[str]],
    before: Release | None,
    swapped: datetime,
    baseline: Baseline | None,
    live_timeout: timedelta,
) -> str:
    """What was confirmed, once it was; NotLive naming what is still missing once `live_timeout` passed."""
    fresh = differing(Path(before.bundle), Path(release.bundle)) if before else None
    expected = {dag_id: path for path, ids in dags.items() for dag_id in ids}
    must_reparse = {d for d, path in expected.items() if fresh is None or path in fresh}
    deadline = time.monotonic() + live_timeout.total_seconds()
    asked: int | None = None  # files Airflow took a parse request for, once it answered
    missing: list[str] = []
    while True:
        try:
            served = {d["dag_id"]: d for d in api.dags()}
            if asked is None:
                asked = _ask_parse(api, release, fresh or set(), list(served.values()))
            errors = {str(e.get("filename")) for e in api.import_errors()}
        except httpx.HTTPError as err:
            missing = [f"an answer from the API ({type(err).__name__})"]
        else:
            new_errors = errors - set(baseline.import_errors if baseline else [])
            missing = [f"import error in {f}" for f in sorted(new_errors)]
            missing += [f"{d} (not served)" for d in expected if d not in served]
            missing += [
                f"{d} (not parsed since the swap)"
                for d in sorted(must_reparse)
                if d in served and not _parsed_after(served[d], swapped)
            ]
            if not missing:
                return (
                    f"dags-only: {len(expected)} DAGs served, {len(must_reparse)} re-parsed after the swap "
                    f"(parse asked for {asked} file{'' if asked == 1 else 's'}), no new import errors; "
                    "nothing restarted"
                )
        if time.monotonic() > deadline:
            raise NotLive(
                f"new DAG code not live within {live_timeout}: still waiting for "
                f"{', '.join(missing[:10])}{' …' if len(missing) > 10 else ''}"
            )
        time.sleep(CONFIRM_POLL)


def _ask_parse(api: AirflowApi, release: Release, changed: set[str], served: list[dict]) -> int:
    """Ask Airflow to parse each changed file of the DAG folder that it has DAGs from (their file token names the
    file); returns how many it took."""
    folder = PurePosixPath(release.dag_folder.strip("/") or ".")
    tokens = {d["relative_fileloc"]: d["file_token"] for d in served if d.get("relative_fileloc")}
    asked = 0
    for path in map(PurePosixPath, sorted(changed)):
        if path.is_relative_to(folder) and (token := tokens.get(path.relative_to(folder).as_posix())):
            asked += api.reparse(token)
    return asked


def _parsed_after(dag: dict, moment: datetime) -> bool:
    parsed = dag.get("last_parsed_time")
    if not parsed:
        return False
    return datetime.fromisoformat(parsed.replace("Z", "+00:00")) >= moment
