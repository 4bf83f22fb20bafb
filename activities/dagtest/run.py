"""One DAG run in its own sandboxed process, with its own throwaway metadata database: the host's side of
`runner.py`.

The process sees the runtime, the runner, the staged release folder (read-only, its
cwd) and a scratch folder of its own, where its database, its Airflow home and the
tasks' logs are; its environment is Airflow's settings for that and nothing of the
deployer's; it has no network unless `validation.tests_network` says so. A run past
its timeout is killed with everything it started, and reported from what it wrote so
far: the task it was in is named.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from activities import sandbox
from activities.dagtest.report import LOG_LINES, DagResult, TaskResult
from airagent.config import home

RUNNER = Path(__file__).with_name("runner.py")
# A task's log holds what the task said, not the in-process execution API's notes about it.
QUIET = "airflow.api_fastapi=WARNING py.warnings=ERROR"
MIGRATE_SECONDS = 300.0
TAIL_BYTES = 64 * 1024


class BenchUnavailable(RuntimeError):
    """This host cannot run DAGs in this runtime at all; the message says why."""


@dataclass(frozen=True)
class Bench:
    """Where and how the DAGs of one release run."""

    runtime: Path
    tree: Path  # the release folder, where the sandbox may read it
    dag_folder: str = "dags"
    plugins_folder: str = "plugins"
    config: str | None = None  # the release's airflow.cfg, from its root
    connections: str | None = None  # the repository's test connections file, from its root
    variables: str | None = None
    placeholders: Mapping = field(default_factory=dict)  # validation.placeholders, as JSON
    sandboxed: bool = True
    network: bool = False
    timeout: float = 120.0


class Runner:
    """One DAG run's process, started before it is told which DAG: it warms up (Airflow's imports, its in-process
    execution API: seconds, most of a small DAG's run) while the caller still parses the tree to find the DAG's
    file, then waits for its request. Closing it kills whatever is left and removes its folder."""

    def __init__(self, bench: Bench):
        self.bench = bench
        scratch_root = home() / "dagtest" / "runs"
        scratch_root.mkdir(parents=True, exist_ok=True)
        database = template(bench.runtime, bench.sandboxed)
        self._folder = tempfile.TemporaryDirectory(prefix="run-", dir=scratch_root)
        self.scratch = Path(self._folder.name)
        shutil.copyfile(database, self.scratch / "airflow.db")
        (self.scratch / "logs").mkdir()
        self.request = self.scratch / "request.json"
        self.process = _start(bench, self.scratch, ["run", str(self.request)])

    def run(self, file: str, dag_id: str) -> DagResult:
        """Run `dag_id` (defined in `file`, from the release's root) once, as `DAG.test()` does: give the process
        its DAG and wait for it, up to the bench's timeout from now."""
        request = {
            "file": str(self.bench.tree / file),
            "dag_id": dag_id,
            "events": str(self.scratch / "events"),
            "logs": str(self.scratch / "logs"),
            "placeholders": {k: self.bench.placeholders.get(k, {}) for k in ("connections", "variables")},
        }
        partial = self.request.with_name(".request.json")
        partial.write_text(json.dumps(request))
        os.chmod(partial, 0o644)
        partial.replace(self.request)  # whole, as the process looks for it
        started = time.monotonic()
        code = _wait(self.process, self.bench.timeout)
        seconds = time.monotonic() - started
        events = read_events(self.scratch / "events")
        logs = {e["log"]: tail(Path(e["log"])) for e in events if e["event"] == "task_started"}
        output = tail(self.scratch / "output.log")
        return result_of(dag_id, file, events, logs, output, code, seconds)

    def close(self) -> None:
        if self.process.poll() is None:
            _kill(self.process)
        self._folder.cleanup()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def result_of(
    dag_id: str,
    file: str,
    events: list[dict],
    logs: Mapping[str, list[str]],
    output: list[str],
    code: int | None,
    seconds: float,
) -> DagResult:
    """The DAG's result from what its run wrote (`events`, see runner.py), the tails of its tasks' logs by path, and
    how its process ended (`code` None: killed past its timeout)."""
    by_kind = {e["event"]: e for e in events}
    line = (by_kind.get("parsed") or by_kind.get("unloaded") or {}).get("line")
    result = DagResult(dag_id=dag_id, file=file, line=line, state="error", seconds=round(seconds, 2))
    if "unloaded" in by_kind:
        return result.model_copy(update={"error": by_kind["unloaded"]["error"]})
    log_of = {(e["task_id"], e["map_index"]): e["log"] for e in events if e["event"] == "task_started"}
    ended = {(e["task_id"], e["map_index"]): e for e in events if e["event"] == "task_ended"}

    def task(task_id: str, map_index: int, state: str, seconds: float | None, try_number: int) -> TaskResult:
        failed = state not in ("success", "skipped", "upstream_failed", "removed")
        return TaskResult(
            task_id=task_id if map_index < 0 else f"{task_id}[{map_index}]",
            state=state,
            seconds=None if seconds is None else round(seconds, 2),
            try_number=try_number,
            log_tail=logs.get(log_of.get((task_id, map_index), ""), []) if failed else [],
        )

    if "finished" in by_kind:
        finished = by_kind["finished"]
        tasks = [
            task(t["task_id"], t["map_index"], t["state"] or "none", t["seconds"], t["try_number"])
            for t in finished["tasks"]
        ]
        return result.model_copy(update={"state": finished["state"], "tasks": tasks})
    # Stopped before the run ended: what each task that ended said, and the one it was in.
    tasks = [task(e["task_id"], e["map_index"], e["state"], e["seconds"], e["try_number"]) for e in ended.values()]
    running = [key for key in log_of if key not in ended]
    if code is None:
        tasks += [task(t, i, "timeout", None, 0) for t, i in running]
        return result.model_copy(update={"state": "timeout", "tasks": tasks})
    tasks += [task(t, i, "failed", None, 0) for t, i in running]
    if "crashed" in by_kind:
        why = by_kind["crashed"]["error"]
    elif running:
        why = f"the run's process ended with exit code {code} in task {running[0][0]}"
    else:
        why = f"the run's process ended with exit code {code}:\n" + "\n".join(output)
    return result.model_copy(update={"tasks": tasks, "error": why})


def template(runtime: Path, sandboxed: bool) -> Path:
    """A migrated metadata database for `runtime`, made once and copied for each run: a copy costs nothing, a
    migration a second or two."""
    folder = home() / "dagtest" / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    made = folder / f"{runtime.name}.db"
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one migration per runtime, across processes
        if made.exists():
            return made
        with tempfile.TemporaryDirectory(prefix="migrate-", dir=folder) as scratch:
            database = Path(scratch) / "airflow.db"
            bench = Bench(runtime=runtime, tree=Path(scratch), sandboxed=sandboxed)
            code = _run(bench, Path(scratch), ["migrate", str(database)], MIGRATE_SECONDS)
            if code != 0 or not database.exists():
                output = "\n".join(tail(Path(scratch) / "output.log"))
                raise BenchUnavailable(f"making a metadata database with the runtime {runtime} failed: {output}")
            partial = made.with_name(f".{made.name}.{uuid.uuid4().hex[:8]}")
            shutil.copyfile(database, partial)
            os.replace(partial, made)
    return made


def _run(bench: Bench, scratch: Path, args: list[str], timeout: float) -> int | None:
    """The runner with `args`, its output in `scratch`/output.log; its exit code, or None when it ran past
    `timeout` and was killed with all it started."""
    return _wait(_start(bench, scratch, args), timeout)


def _start(bench: Bench, scratch: Path, args: list[str]) -> subprocess.Popen:
    python = bench.runtime / "bin" / "python"
    runner = runner_path()
    env = environment(bench, scratch)
    argv = [str(python), str(runner), *args]
    sandbox.hand_over(scratch)  # the sandbox's user writes it
    if bench.sandboxed:
        sandbox.require()
        seen = [bench.runtime.resolve(), sandbox.interpreter_prefix(python), runner, bench.tree]
        argv = sandbox.command(argv, read_only=seen, writable=[scratch], env=env, network=bench.network, cwd=bench.tree)
    with open(scratch / "output.log", "ab") as output:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=bench.tree,
            start_new_session=True,  # its own group, so a kill takes what it started along
        )


def _wait(process: subprocess.Popen, timeout: float) -> int | None:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        return None


def _kill(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def environment(bench: Bench, scratch: Path) -> dict[str, str]:
    """Exactly what a run needs: Airflow's settings for this release and this scratch folder, and the environment
    variables the repository's DAGs expect (validation.placeholders.env); nothing of the deployer's."""
    env = {
        **bench.placeholders.get("env", {}),
        "PATH": f"{bench.runtime / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(scratch),
        "TMPDIR": str(scratch),  # the sandbox's own /tmp is not its user's to write
        "AIRFLOW_HOME": str(scratch / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{scratch / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(bench.tree / bench.dag_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(bench.tree / bench.plugins_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS": QUIET,
        # The repository's test files, or nothing: never a secrets backend its airflow.cfg names for production.
        "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
        "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(
            {
                "connections_file_path": str(bench.tree / bench.connections) if bench.connections else None,
                "variables_file_path": str(bench.tree / bench.variables) if bench.variables else None,
            }
        ),
    }
    if bench.config:
        env["AIRFLOW_CONFIG"] = str(bench.tree / bench.config)
    return env


def runner_path() -> Path:
    """runner.py where a sandbox's user may read it, named by its content: written once, read by every run."""
    data = RUNNER.read_bytes()
    target = home() / "dagtest" / f"runner-{hashlib.sha256(data).hexdigest()[:16]}.py"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        partial.write_bytes(data)
        os.chmod(partial, 0o644)
        partial.replace(target)
    return target


def read_events(path: Path) -> list[dict]:
    """The events a run wrote; a line cut short by a kill is left out."""
    found = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
    return found


def tail(path: Path, lines: int = LOG_LINES) -> list[str]:
    """The last lines of a log, however long it grew."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, os.fstat(log.fileno()).st_size - TAIL_BYTES))
            text = log.read().decode(errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines()[-lines:]]
