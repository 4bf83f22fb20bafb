"""Parse every Python file of a DAG folder with Airflow's own DagBag; write a JSON report.

Runs as a script by a release runtime's interpreter, never imported by the deployer:
it may import only the standard library and Airflow.

    python parse_dags.py DAG_FOLDER REPORT_JSON [WORKERS] [TIMEOUT_SECONDS]

Safe mode is off and every `.py` file is parsed, so a broken file cannot hide by
lacking the words "airflow" and "dag". Each file is parsed in a process of its own,
by WORKERS processes forked from this one once Airflow is imported and warmed up (so no
file pays for that again): a file that hangs past TIMEOUT (Airflow's dagbag_import_timeout
by default), exits, segfaults or runs out of memory fails alone, with the reason, and a
fresh worker takes its place.
"""

import json
import os
import select
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

MAX_TRACEBACK_LINES = 30
# What nearly every DAG file imports: loaded once here, inherited by every fork.
WARM_MODULES = ("airflow.sdk", "airflow.providers.standard.operators.empty",
                "airflow.providers.standard.operators.python", "airflow.providers.standard.operators.bash")
# Parsed once before forking, so what Airflow sets up lazily on a first DAG (policies,
# plugins, providers) is set up once, not in every child.
WARM_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG("airagent_warm_up", start_date=datetime(2024, 1, 1), schedule=None):
    EmptyOperator(task_id="warm")
"""


def python_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*.py")
        if "__pycache__" not in p.parts and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def trim(text: str) -> str:
    lines = text.rstrip().splitlines()
    return "\n".join(lines[-MAX_TRACEBACK_LINES:])


def parse_file(folder: Path, path: Path) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    rel = path.relative_to(folder).as_posix()
    started = time.perf_counter()
    # A bag per file, as Airflow's DAG processor does, so duplicates are ours to report.
    bag = DagBag(dag_folder=str(folder), collect_dags=False, bundle_path=folder, safe_mode=False)
    try:
        dags = bag.process_file(str(path), only_if_updated=False, safe_mode=False)
        error = bag.import_errors.get(rel) or bag.import_errors.get(str(path))
    except Exception:
        dags, error = [], traceback.format_exc()
    return {
        "path": rel,
        "dag_ids": sorted(d.dag_id for d in dags),
        "error": trim(error) if error else None,
        "parse_seconds": round(time.perf_counter() - started, 4),
    }


def failed(folder: Path, path: Path, error: str, seconds: float) -> dict:
    return {"path": path.relative_to(folder).as_posix(), "dag_ids": [], "error": error,
            "parse_seconds": round(seconds, 4)}


class Worker:
    """A forked parser that takes file paths one at a time (JSON lines in) and answers with reports (JSON lines out).

    Files share its interpreter, as they share a DagBag's, so common modules load once;
    when a file hangs or kills it, only that file fails and a fresh worker takes over.
    """

    parent_ends: set[int] = set()  # every worker's pipe ends held here, which no other worker may keep open

    def __init__(self, folder: Path):
        jobs_read, jobs_write = os.pipe()
        results_read, results_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            # Holding a sibling's pipe ends would hide that sibling's end-of-file from the parent.
            for fd in (jobs_write, results_read, *Worker.parent_ends):
                os.close(fd)
            self._serve(folder, jobs_read, results_write)
        os.close(jobs_read)
        os.close(results_write)
        Worker.parent_ends |= {jobs_write, results_read}
        self.jobs = os.fdopen(jobs_write, "w")
        self.results = results_read
        self.path: Path | None = None
        self.started = 0.0
        self.buffer = b""

    @staticmethod
    def _serve(folder: Path, jobs_fd: int, results_fd: int) -> None:
        with os.fdopen(jobs_fd) as jobs, os.fdopen(results_fd, "w") as results:
            for line in jobs:
                path = Path(json.loads(line))
                try:
                    report = parse_file(folder, path)
                except BaseException:
                    report = failed(folder, path, trim(traceback.format_exc()), 0.0)
                results.write(json.dumps(report) + "\n")
                results.flush()
        os._exit(0)

    def give(self, path: Path) -> None:
        self.path, self.started, self.buffer = path, time.monotonic(), b""
        self.jobs.write(json.dumps(str(path)) + "\n")
        self.jobs.flush()

    def read(self) -> dict | None:
        """The finished report, if one is complete; raises EOFError when the worker died."""
        chunk = os.read(self.results, 1 << 16)
        if not chunk:
            raise EOFError
        self.buffer += chunk
        if not self.buffer.endswith(b"\n"):
            return None
        self.path = None
        return json.loads(self.buffer)

    def kill(self) -> int:
        if self.path is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        Worker.parent_ends -= {self.jobs.fileno(), self.results}
        for closing in (self.jobs.close, lambda: os.close(self.results)):
            try:
                closing()
            except OSError:
                pass
        return os.waitpid(self.pid, 0)[1]


def parse_all(folder: Path, files: list[Path], workers: int, timeout: float) -> list[dict]:
    pending, results = list(files), {}
    pool = [Worker(folder) for _ in range(min(workers, len(files)) or 1)]
    try:
        while pending or any(w.path for w in pool):
            for w in pool:
                if w.path is None and pending:
                    w.give(pending.pop(0))
            busy = {w.results: w for w in pool if w.path is not None}
            ready, _, _ = select.select(list(busy), [], [], 0.05)
            for fd in ready:
                w = busy[fd]
                path = w.path
                try:
                    report = w.read()
                except EOFError:
                    results[path] = failed(folder, path, died(w.kill()), time.monotonic() - w.started)
                    pool[pool.index(w)] = Worker(folder)
                    continue
                if report is not None:
                    results[path] = report
            now = time.monotonic()
            for i, w in enumerate(pool):
                if w.path is not None and now - w.started > timeout:
                    path = w.path
                    w.kill()
                    results[path] = failed(
                        folder, path,
                        f"parsing took longer than {timeout:g}s (dagbag_import_timeout); a DAG file must not block "
                        "at import: move network, database and long work into tasks", now - w.started)
                    pool[i] = Worker(folder)
    finally:
        for w in pool:
            w.path = None
            w.kill()
    return [results[p] for p in files]


def died(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the parser process for this file was killed by {name}{hint} while importing it"
    return f"importing this file ended the process with exit code {code}; a DAG file must not call exit()"


def main(folder: Path, out: Path, workers: int, timeout: float | None) -> None:
    from airflow.configuration import conf

    for module in WARM_MODULES:
        __import__(module)
    with tempfile.TemporaryDirectory() as scratch:
        warm = Path(scratch) / "warm_up.py"
        warm.write_text(WARM_DAG)
        parse_file(Path(scratch), warm)
    # As Airflow's DAG processor does for a bundle: modules beside the DAGs are importable.
    sys.path.append(str(folder))
    timeout = timeout or conf.getfloat("core", "dagbag_import_timeout")
    files = parse_all(folder, python_files(folder), workers, timeout)
    owners = {}
    for f in files:
        for dag_id in f["dag_ids"]:
            owners.setdefault(dag_id, []).append(f["path"])
    duplicates = {dag_id: paths for dag_id, paths in owners.items() if len(paths) > 1}
    out.write_text(json.dumps({"files": files, "duplicates": duplicates}))


if __name__ == "__main__":
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]),
         workers=int(sys.argv[3]) if len(sys.argv) > 3 else os.cpu_count() or 1,
         timeout=float(sys.argv[4]) if len(sys.argv) > 4 else None)
