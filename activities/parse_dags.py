"""Parse every Python file of a DAG folder with Airflow's own DagBag; write a JSON report.

Runs as a script by a release runtime's interpreter, never imported by the deployer:
it may import only the standard library and Airflow.

    python parse_dags.py DAG_FOLDER REPORT_JSON [WORKERS] [TIMEOUT_SECONDS]

Safe mode is off and every `.py` file is parsed, so a broken file cannot hide by
lacking the words "airflow" and "dag". Each file is parsed in a process of its own,
forked from this one once Airflow is imported (so no file pays for that import again),
WORKERS at a time: a file that hangs past TIMEOUT (Airflow's dagbag_import_timeout by
default), exits, segfaults or runs out of memory fails alone, with the reason.
"""

import json
import os
import select
import signal
import sys
import time
import traceback
from pathlib import Path

MAX_TRACEBACK_LINES = 30
# What nearly every DAG file imports: loaded once here, inherited by every fork.
WARM_MODULES = ("airflow.sdk", "airflow.providers.standard.operators.empty",
                "airflow.providers.standard.operators.python", "airflow.providers.standard.operators.bash")


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


def fork_parser(folder: Path, path: Path) -> tuple[int, int]:
    """Start a child that parses `path` and writes its JSON result to a pipe; returns (pid, read end)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            result = parse_file(folder, path)
        except BaseException:
            result = failed(folder, path, trim(traceback.format_exc()), 0.0)
        with os.fdopen(write, "wb") as out:
            out.write(json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    return pid, read


def parse_all(folder: Path, files: list[Path], workers: int, timeout: float) -> list[dict]:
    pending, running, results = list(files), {}, {}
    while pending or running:
        while pending and len(running) < workers:
            path = pending.pop(0)
            pid, fd = fork_parser(folder, path)
            running[fd] = {"pid": pid, "path": path, "started": time.monotonic(), "data": b""}
        ready, _, _ = select.select(list(running), [], [], 0.05)
        for fd in ready:
            chunk = os.read(fd, 1 << 16)
            if chunk:
                running[fd]["data"] += chunk
                continue
            job = running.pop(fd)
            os.close(fd)
            _, status = os.waitpid(job["pid"], 0)
            took = time.monotonic() - job["started"]
            if job["data"] and os.waitstatus_to_exitcode(status) == 0:
                results[job["path"]] = json.loads(job["data"])
            else:
                results[job["path"]] = failed(folder, job["path"], died(status), took)
        now = time.monotonic()
        for fd, job in list(running.items()):
            if now - job["started"] > timeout:
                os.kill(job["pid"], signal.SIGKILL)
                os.waitpid(job["pid"], 0)
                os.close(fd)
                del running[fd]
                results[job["path"]] = failed(
                    folder, job["path"],
                    f"parsing took longer than {timeout:g}s (dagbag_import_timeout); a DAG file must not block "
                    "at import: move network, database and long work into tasks", now - job["started"])
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
