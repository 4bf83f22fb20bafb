"""One DAG run, as `DAG.test()` makes it, inside a release runtime: `python runner.py run REQUEST.json`.

Run by the runtime's interpreter in the sandbox, so it imports only the standard library
and Airflow. The metadata database is a throwaway SQLite file the caller made from a
migrated template (`python runner.py migrate DB`): a migration costs a second a DAG,
a copy nothing. What happens is written as JSON lines to the request's `events` file as
it happens, so a caller that kills a run past its timeout still knows which task it was
in and where that task's log is. Each task's output (its prints, its subprocesses, the
task logger) goes to a file of its own, whose tail the caller shows for a failed task.

The caller starts a run before it knows which DAG it is for: the run warms up (Airflow's
imports, its in-process execution API: most of a small DAG's time) and then waits for
its request file to appear.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

WAIT_SECONDS = 3600.0


def migrate(database: Path) -> None:
    """A fresh metadata database at `database` (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN names it), for copying."""
    import sqlite3

    from airflow import settings
    from airflow.utils import db

    db.initdb()
    settings.engine.dispose()
    # Airflow writes SQLite ahead in a log beside the file; a copy of the file alone must hold everything.
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")


def warm() -> None:
    """What the first task would otherwise pay for: the in-process execution API starts on its first request."""
    import httpx
    from airflow.dag_processing.dagbag import BundleDagBag  # noqa: F401  (imported for `load`)
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    httpx.Client(transport=in_process_api_server().transport, base_url="http://in-process.invalid/").get(
        "/execution/health/ping"
    )


def requested(path: Path) -> dict:
    """The request, once the caller wrote it (whole: it renames it into place); a caller gone for an hour ends
    the wait."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no request at {path} within {WAIT_SECONDS:.0f}s")
        time.sleep(0.02)
    return json.loads(path.read_text())


def run(request: dict) -> None:
    events = open(request["events"], "a", buffering=1)  # open for the whole run

    def emit(event: str, **fields) -> None:
        events.write(json.dumps({"event": event, **fields}, default=str) + "\n")

    # Before the file is parsed, which may look some up at top level.
    placeholders(request.get("placeholders", {}))
    dag, line = load(Path(request["file"]), request["dag_id"], emit)
    if dag is None:
        return
    emit("parsed", line=line)
    for task in dag.tasks:
        # A retry runs at once: nothing is gained by waiting out its delay (five minutes by default) in a test.
        task.retry_delay = timedelta(0)
    log_each_task(Path(request["logs"]), emit)
    started = time.monotonic()
    try:
        # The repository's test files are the secrets backend from the start (the caller's environment says so),
        # not only while `test()` runs, as its conn_file_path and variable_file_path would make them.
        dagrun = dag.test()
    except Exception:
        emit("crashed", error=traceback.format_exc(), seconds=time.monotonic() - started)
        return
    instances = sorted(dagrun.get_task_instances(), key=lambda t: (t.start_date is None, t.start_date or "", t.task_id))
    tasks = [
        {
            "task_id": ti.task_id,
            "map_index": ti.map_index,
            "state": state_of(ti.state),
            "seconds": ti.duration,
            "try_number": ti.try_number,
        }
        for ti in instances
    ]
    emit("finished", state=state_of(dagrun.state), tasks=tasks, seconds=time.monotonic() - started)


def state_of(state) -> str | None:
    """Airflow's states are string enums; a task that never ran has none."""
    return None if state is None else str(getattr(state, "value", state))


def load(path: Path, dag_id: str, emit):
    """The DAG from its file, parsed as Airflow's DAG processor parses a bundle's file, and the line that made it."""
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.sdk.definitions.dag import DAG

    lines: dict[str, int] = {}
    original = DAG.__init__

    def noting_the_line(self, *args, **kwargs):
        original(self, *args, **kwargs)
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename != str(path):
            frame = frame.f_back
        if frame is not None:
            lines.setdefault(self.dag_id, frame.f_lineno)

    DAG.__init__ = noting_the_line
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder, bundle_name="dags-folder", collect_dags=False)
    bag.process_file(str(path), only_if_updated=False, safe_mode=False)
    DAG.__init__ = original
    if dag_id in bag.dags:
        return bag.dags[dag_id], lines.get(dag_id)
    errors = "\n".join(bag.import_errors.values())
    emit("unloaded", error=errors or f"{path} defines no DAG {dag_id!r}", line=lines.get(dag_id))
    return None, None


def placeholders(settings: dict) -> None:
    """validation.placeholders' connections and variables, in the metadata database: Airflow looks there after the
    repository's test files (its secrets backend) and the environment, so they answer only what those do not."""
    from airflow.models.connection import Connection
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        for conn_id, given in settings.get("connections", {}).items():
            if isinstance(given, str):
                session.add(Connection(conn_id=conn_id, uri=given))
            else:
                fields = dict(given)
                if isinstance(fields.get("extra"), dict):
                    fields["extra"] = json.dumps(fields["extra"])
                session.add(Connection(conn_id=conn_id, **fields))
        for key, value in settings.get("variables", {}).items():
            session.add(Variable(key=key, val=value if isinstance(value, str) else json.dumps(value)))


def log_each_task(logs: Path, emit) -> None:
    """Send each task's output to a file of its own: `DAG.test()` runs its tasks one at a time in this process."""
    from airflow.sdk.definitions import dag as dag_module

    run_task = dag_module._run_task

    def logged(*, ti, task, **kwargs):
        name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        log = logs / f"{name}.log"
        emit("task_started", task_id=ti.task_id, map_index=ti.map_index, log=str(log))
        started = time.monotonic()
        with output_to(log):
            result = run_task(ti=ti, task=task, **kwargs)
        emit(
            "task_ended",
            task_id=ti.task_id,
            map_index=ti.map_index,
            state=state_of(ti.state),
            seconds=time.monotonic() - started,
            try_number=ti.try_number,
        )
        return result

    dag_module._run_task = logged


@contextlib.contextmanager
def output_to(path: Path):
    """Descriptors 1 and 2 to `path` for a while: what the task's subprocesses write goes there too."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def main() -> None:
    command, argument = sys.argv[1], Path(sys.argv[2])
    if command == "migrate":
        migrate(argument)
    else:
        warm()
        run(requested(argument))
    sys.stdout.flush()
    sys.stderr.flush()
    # Airflow's threads (the in-process execution API's event loop) take seconds to wind down; all is written.
    os._exit(0)


if __name__ == "__main__":
    main()
