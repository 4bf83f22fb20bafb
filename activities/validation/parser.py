"""Parse Python files of a DAG folder with Airflow's own DagBag; write a JSON report.

Runs as a script by a release runtime's interpreter: it may import only the standard
library and Airflow. (The deployer imports it only for `relative_python_files` and a few
names, which are plain standard library, so both sides agree on what a DAG file is.)

    python parser.py DAG_FOLDER REPORT_JSON [WORKERS] [TIMEOUT_SECONDS] [--settings SETTINGS_JSON]
    (REPORT_JSON `-`: one line `airagent-report: {...}` on stdout)
    python parser.py --serve DIRECTORY [--idle SECONDS]

SETTINGS_JSON (written by the deployer, never pasted into a command line) may hold
`files`: the paths, relative to DAG_FOLDER, to parse (default: every file), and
`placeholders`: {"enabled", "variables", "connections", "env"} for what DAG files look
up at parse time.

Safe mode is off and every `.py` file is parsed, so a broken file cannot hide by
lacking the words "airflow" and "dag". Each file is parsed in a process of its own,
by WORKERS processes forked from this one once Airflow is imported and warmed up (so no
file pays for that again): a file that hangs past TIMEOUT (Airflow's dagbag_import_timeout
by default), exits, segfaults or runs out of memory fails alone, with the reason, and a
fresh worker takes its place. Network and database access at parse time fails the file
with the reason instead of hanging it.

With --serve, one warmed-up process per runtime stays up and forks a child per request
(see `serve`), so a validation of one changed file does not pay for starting Airflow.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import select
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

MAX_TRACEBACK_LINES = 30
# A DAG file's error text is its author's to choose: only this much of it travels.
MAX_ERROR_CHARS = 4000
REPORT_MARKER = "airagent-report: "
PLACEHOLDER = "airagent-placeholder"
# Asked for like a file: the plugins folder, loaded as Airflow's plugin manager loads it,
# in a worker of its own so a plugin that hangs or exits fails alone too.
PLUGINS = "<plugins>"
# What nearly every DAG file imports: loaded once here, inherited by every fork.
WARM_MODULES = (
    "airflow.sdk",
    "airflow.providers.standard.operators.empty",
    "airflow.providers.standard.operators.python",
    "airflow.providers.standard.operators.bash",
)
# Parsed and serialized once before forking, so what Airflow sets up lazily on a first DAG (policies,
# plugins, providers, the schema, cron timetables) is set up once, not in every child.
WARM_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG("airagent_warm_up", start_date=datetime(2024, 1, 1), schedule="@daily"):
    EmptyOperator(task_id="warm")
"""
# Files a worker holds at once: the one it parses and the next.
DEPTH = 2
MOVE_IT = "read it inside a task, where it runs per run instead of on every parse"


class NetworkAtParseTime(RuntimeError):
    """A DAG file reached for the network while being parsed."""


class DatabaseAtParseTime(RuntimeError):
    """A DAG file opened a database connection while being parsed."""


class MissingPlaceholder(LookupError):
    """A lookup at parse time with placeholders off and no value configured for it."""


def python_files(folder: Path) -> list[Path]:
    return [folder / rel for rel in relative_python_files(folder)]


def relative_python_files(folder: Path) -> list[str]:
    """Every `.py` file under `folder`, as a sorted posix path relative to it, outside hidden and cache folders."""
    found = []
    for here, subdirs, names in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and d != "__pycache__"]
        prefix = os.path.relpath(here, folder).replace(os.sep, "/") + "/"
        prefix = "" if prefix == "./" else prefix
        found += [prefix + name for name in names if name.endswith(".py") and not name.startswith(".")]
    return sorted(found, key=lambda rel: rel.split("/"))  # the order of sorted Paths


def trim(text: str) -> str:
    """The end of a traceback, where the error is, capped in size."""
    lines = text.rstrip().splitlines()
    return cap("\n".join(lines[-MAX_TRACEBACK_LINES:]))


def cap(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"{text[: limit // 4]}\n… {cut} characters cut …\n{text[-(limit - limit // 4) :]}"


# --- what a DAG file sees at parse time ------------------------------------------------


class Lookups:
    """Placeholders for Variables, Connections and environment variables, and the guards on network and database.

    Installed in the parent after the warm-up, so every forked worker inherits them and
    Airflow's own start-up is not affected.
    """

    def __init__(self, folder: Path, settings: dict):
        self.folder = str(folder) + os.sep
        self.enabled = settings.get("enabled", True)
        self.variables = settings.get("variables", {})
        self.connections = settings.get("connections", {})
        self.env = settings.get("env", {})
        self.used: set[str] = set()

    def variable(self, key: str, default, deserialize_json: bool, no_default):
        if key in self.variables:
            value = self.variables[key]
            return json.loads(value) if deserialize_json and isinstance(value, str) else value
        if default is not no_default:
            return default
        if not self.enabled:
            raise MissingPlaceholder(
                f"Variable.get({key!r}) at parse time, and validation.placeholders.variables has no {key!r} "
                f"(placeholders are off); give it a value there, or {MOVE_IT}"
            )
        self.used.add(f"variable {key}")
        return {} if deserialize_json else f"{PLACEHOLDER}-{key}"

    def connection(self, conn_id: str, cls):
        if conn_id in self.connections:
            given = self.connections[conn_id]
            if isinstance(given, str):
                return (
                    cls.from_uri(given, conn_id=conn_id)
                    if hasattr(cls, "from_uri")
                    else cls(conn_id=conn_id, uri=given)
                )
            return cls(conn_id=conn_id, **given)
        if not self.enabled:
            raise MissingPlaceholder(
                f"connection {conn_id!r} looked up at parse time, and validation.placeholders.connections has no "
                f"{conn_id!r} (placeholders are off); give it a value there, or {MOVE_IT}"
            )
        self.used.add(f"connection {conn_id}")
        return cls(
            conn_id=conn_id,
            conn_type="generic",
            host=f"{PLACEHOLDER}.invalid",
            login=PLACEHOLDER,
            password=PLACEHOLDER,
            schema=PLACEHOLDER,
            port=1,
        )

    def getenv(self, real, key, default=None):
        if not sys._getframe(2).f_code.co_filename.startswith(self.folder):
            return real(key, default)  # Airflow's own reads see the real environment
        if key in self.env:
            return self.env[key]
        value = real(key, None)
        if value is not None or default is not None or not self.enabled:
            return value if value is not None else default
        self.used.add(f"env {key}")
        return f"{PLACEHOLDER}-{key}"

    def install(self) -> None:
        from airflow.models.connection import Connection as ModelConnection
        from airflow.models.variable import Variable as ModelVariable
        from airflow.sdk.definitions.connection import Connection
        from airflow.sdk.definitions.variable import Variable

        lookups, unset = self, object()

        def sdk_variable(cls, key, default=unset, deserialize_json=False):
            return lookups.variable(key, default, deserialize_json, unset)

        def model_variable(cls, key, default_var=unset, deserialize_json=False, team_name=None):
            return lookups.variable(key, default_var, deserialize_json, unset)

        Variable.get = classmethod(sdk_variable)
        ModelVariable.get = classmethod(model_variable)
        Connection.get = classmethod(lambda cls, conn_id: lookups.connection(conn_id, Connection))
        ModelConnection.get_connection_from_secrets = classmethod(
            lambda cls, conn_id, team_name=None: lookups.connection(conn_id, ModelConnection)
        )

        environ_type: Any = type(os.environ)  # its `get` is replaced below, which mypy refuses on a typed class
        real_getenv, real_get = os.getenv, environ_type.get
        os.getenv = lambda key, default=None: lookups.getenv(real_getenv, key, default)
        environ_type.get = lambda env, key, default=None: lookups.getenv(lambda k, d: real_get(env, k, d), key, default)
        self._guard_network_and_database()

    @staticmethod
    def _guard_network_and_database() -> None:
        def network(*args, **kwargs):
            where = next((a for a in args if isinstance(a, tuple)), args[0] if args else "")
            raise NetworkAtParseTime(
                f"this DAG file reached for the network ({where!r}) while being parsed; the validator blocks it "
                f"because the DAG processor parses every file every few seconds: {MOVE_IT}"
            )

        def database(*args, **kwargs):
            raise DatabaseAtParseTime(
                "this DAG file opened a database connection while being parsed; the validator blocks it because "
                f"the DAG processor parses every file every few seconds and has no database in Airflow 3: {MOVE_IT}"
            )

        for name in ("connect", "connect_ex"):
            setattr(socket.socket, name, lambda self, address, _n=network: _n(address))
        socket.create_connection = network
        socket.getaddrinfo = network
        import sqlite3

        sqlite3.connect = database
        try:
            from sqlalchemy.engine import Engine
        except ImportError:
            return
        Engine.connect = database
        Engine.raw_connection = database


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


# --- parsing ---------------------------------------------------------------------------


class Parser:
    """One DagBag per worker process, emptied between files, so a file is parsed exactly as DagBag would."""

    def __init__(self, folder: Path, lookups: Lookups | None, max_file_bytes: int | None = None):
        from airflow.dag_processing.dagbag import DagBag

        self.folder, self.lookups, self.max_file_bytes = folder, lookups, max_file_bytes
        self.bag = DagBag(dag_folder=str(folder), collect_dags=False, bundle_path=folder, safe_mode=False)

    def parse(self, path: Path) -> dict:
        if path.name == PLUGINS:
            return self.load_plugins()
        rel = path.relative_to(self.folder).as_posix()
        if self.max_file_bytes and (size := path.stat().st_size) > self.max_file_bytes:
            mib = 1 << 20
            return failed(
                self.folder,
                path,
                f"this file is {size / mib:.1f} MiB; Python files in the DAG folder over "
                f"{self.max_file_bytes / mib:.0f} MiB are not parsed: keep data out of the DAG folder "
                "(or raise validation.limits.max_file_mib)",
                0.0,
                transient=False,
            )
        self.bag.dags.clear()
        self.bag.import_errors.clear()
        DagCounter.created.clear()
        if self.lookups:
            self.lookups.used.clear()
        started = time.perf_counter()
        try:
            self.bag.process_file(str(path), only_if_updated=False, safe_mode=False)
            error = self.bag.import_errors.get(rel) or self.bag.import_errors.get(str(path)) or self.serialize()
        except Exception:
            self.bag.dags.clear()
            error = traceback.format_exc()
        seconds = time.perf_counter() - started
        created = DagCounter.created
        return {
            "path": rel,
            "dag_ids": sorted(self.bag.dags),
            "error": trim(error) if error else None,
            "parse_seconds": round(seconds, 4),
            "dags": [facts(self.bag.dags[d]) for d in sorted(self.bag.dags)],
            "same_file_duplicates": sorted({d for d in created if created.count(d) > 1}),
            "placeholders": sorted(self.lookups.used) if self.lookups else [],
            "transient": False,
        }

    def serialize(self) -> str | None:
        """Serialize each DAG as the DAG processor does before storing it: one that cannot be (a timetable no
        plugin registers, a param that is not JSON) is an import error there, so it is one here; the file's
        other DAGs stay, as they do there."""
        try:
            from airflow.serialization.serialized_objects import DagSerialization as serialization
        except ImportError:  # before Airflow 3.1
            from airflow.serialization.serialized_objects import SerializedDAG as serialization
        errors = []
        for dag_id, dag in list(self.bag.dags.items()):
            try:
                serialization.to_dict(dag)
            except Exception:
                del self.bag.dags[dag_id]
                errors.append(traceback.format_exc())
        return "\n".join(errors) or None

    @staticmethod
    def load_plugins() -> dict:
        """The import errors of the plugins folder's files, by path inside it; an installed package's are not
        the repository's."""
        from airflow import plugins_manager, settings

        started = time.perf_counter()
        folder = Path(settings.PLUGINS_FOLDER).resolve()
        errors = {}
        for where, error in plugins_manager.get_import_errors().items():
            try:
                errors[Path(where).resolve().relative_to(folder).as_posix()] = trim(error)
            except ValueError:
                continue
        return {
            "path": PLUGINS,
            "dag_ids": [],
            "error": None,
            "plugins": errors,
            "parse_seconds": round(time.perf_counter() - started, 4),
            "transient": False,
        }


def failed(folder: Path, path: Path, error: str, seconds: float, transient: bool = True) -> dict:
    """A file that failed without a report of Airflow's: when its worker hung or died, not cached, as the
    next try may go otherwise."""
    return {
        "path": path.relative_to(folder).as_posix(),
        "dag_ids": [],
        "error": error,
        "parse_seconds": round(seconds, 4),
        "transient": transient,
    }


class Worker:
    """A forked parser that takes file paths (JSON lines in) and answers with reports (JSON lines out), in order.

    Files share its interpreter, as they share a DagBag's, so common modules load once;
    when a file hangs or kills it, only that file fails and a fresh worker takes over. It
    holds the file it parses and the next (DEPTH), so it never waits for this process to
    wake up between files.
    """

    # Descriptors no worker may keep open: every worker's pipe ends, and a warm request's
    # connection, whose end-of-file the client waits for.
    held: ClassVar[set[int]] = set()

    def __init__(self, folder: Path, lookups: Lookups | None, limits: dict):
        jobs_read, jobs_write = os.pipe()
        results_read, results_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            # Holding a sibling's pipe ends would hide that sibling's end-of-file from the parent.
            for fd in (jobs_write, results_read, *Worker.held):
                os.close(fd)
            os.setpgid(0, 0)  # what a file starts goes with it when it is killed
            limit(limits)
            self._serve(folder, lookups, jobs_read, results_write, limits.get("max_file_bytes"))
        os.close(jobs_read)
        os.close(results_write)
        Worker.held |= {jobs_write, results_read}
        self.jobs = os.fdopen(jobs_write, "w")
        self.results = results_read
        self.queue: deque[Path] = deque()  # given, not answered yet; it parses the first
        self.started = 0.0  # when it began the first
        self.buffer = b""

    @staticmethod
    def _serve(
        folder: Path, lookups: Lookups | None, jobs_fd: int, results_fd: int, max_file_bytes: int | None
    ) -> None:
        parser, me = Parser(folder, lookups, max_file_bytes), os.getpid()
        with os.fdopen(jobs_fd) as jobs, os.fdopen(results_fd, "w") as results:
            for line in jobs:
                path = Path(json.loads(line))
                try:
                    report = parser.parse(path)
                except BaseException:
                    report = failed(folder, path, trim(traceback.format_exc()), 0.0)
                if os.getpid() != me:
                    os._exit(0)  # a process the file forked came back here: only the worker answers
                results.write(json.dumps(report) + "\n")
                results.flush()
        os._exit(0)

    def give(self, path: Path) -> None:
        if not self.queue:
            self.started = time.monotonic()
        self.queue.append(path)
        self.jobs.write(json.dumps(str(path)) + "\n")
        self.jobs.flush()

    def read(self) -> list[tuple[Path, dict]]:
        """The files answered since the last read, with their reports; raises EOFError when the worker died."""
        chunk = os.read(self.results, 1 << 16)
        if not chunk:
            raise EOFError
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        answered = []
        for line in lines:
            answered.append((self.queue.popleft(), json.loads(line)))
            self.started = time.monotonic()
        return answered

    def kill(self) -> int:
        """End the worker: at once when it holds a file, else by closing its jobs, which it ends on."""
        if self.queue:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it died before it made its group, or the group is gone
        Worker.held -= {self.jobs.fileno(), self.results}
        for closing in (self.jobs.close, lambda: os.close(self.results)):
            try:
                closing()
            except OSError:
                pass
        return os.waitpid(self.pid, 0)[1]


def limit(limits: dict) -> None:
    """Bound what one worker and whatever it starts may take: memory, processes, CPU, the size of a file written."""
    for name, key in (
        (resource.RLIMIT_AS, "memory_bytes"),
        (resource.RLIMIT_NPROC, "processes"),
        (resource.RLIMIT_CPU, "cpu_seconds"),
        (resource.RLIMIT_FSIZE, "written_file_bytes"),
    ):
        if limits.get(key):
            resource.setrlimit(name, (int(limits[key]), int(limits[key])))


def parse_all(
    folder: Path,
    files: list[Path],
    workers: int,
    timeout: float,
    lookups: Lookups | None = None,
    limits: dict | None = None,
) -> Iterator[dict]:
    """Each file's report, as soon as it is done (in no set order)."""
    pending, limits = deque(files), limits or {}
    done: set[Path] = set()
    pool = [Worker(folder, lookups, limits) for _ in range(min(workers, len(files)) or 1)]
    try:
        while len(done) < len(files):
            for w in pool:
                while len(w.queue) < DEPTH and (path := _next(w, pending, pool, done)):
                    w.give(path)
            busy = {w.results: w for w in pool if w.queue}
            ready, _, _ = select.select(list(busy), [], [], 0.05)
            for fd in ready:
                w = busy[fd]
                try:
                    answered = w.read()
                except EOFError:
                    answered = [(w.queue[0], failed(folder, w.queue[0], died(w.kill()), time.monotonic() - w.started))]
                    pool[pool.index(w)] = _replace(w, folder, lookups, limits, pending, done)
                for path, report in answered:
                    if path not in done:
                        done.add(path)
                        yield report
            now = time.monotonic()
            for i, w in enumerate(pool):
                if w.queue and now - w.started > timeout:
                    path = w.queue[0]
                    w.kill()
                    pool[i] = _replace(w, folder, lookups, limits, pending, done)
                    if path not in done:
                        done.add(path)
                        yield failed(
                            folder,
                            path,
                            f"parsing took longer than {timeout:g}s (dagbag_import_timeout); a DAG file must not "
                            "block at import: move network, database and long work into tasks",
                            now - w.started,
                        )
    finally:
        for w in pool:
            w.kill()


def _next(worker: Worker, pending: deque[Path], pool: list[Worker], done: set[Path]) -> Path | None:
    """The next file for `worker`: a pending one; when none is left and it is idle, one that waits behind another
    worker's file, which may be slow (the first answer counts)."""
    if pending:
        return pending.popleft()
    if worker.queue:
        return None
    parsing = {w.queue[0] for w in pool if w.queue}
    return next((p for w in pool for p in list(w.queue)[1:] if p not in done and p not in parsing), None)


def _replace(
    worker: Worker, folder: Path, lookups: Lookups | None, limits: dict, pending: deque[Path], done: set[Path]
) -> Worker:
    """A fresh worker for one that died or was killed; the files it had not begun go back to the others."""
    pending.extendleft(reversed([p for p in list(worker.queue)[1:] if p not in done]))
    worker.queue.clear()
    return Worker(folder, lookups, limits)


def died(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        name = signal.Signals(-code).name
        hint = {
            "SIGKILL": " (out of memory?)",
            "SIGXCPU": " (past validation.limits.cpu)",
            "SIGXFSZ": " (it wrote a file past validation.limits.written_file_mib)",
        }.get(name, "")
        return f"the parser process for this file was killed by {name}{hint} while importing it"
    return f"importing this file ended the process with exit code {code}; a DAG file must not call exit()"


def warm_up() -> None:
    """Load and set up what every DAG file needs once, so no forked worker pays for it."""
    for module in WARM_MODULES:
        __import__(module)
    with tempfile.TemporaryDirectory() as scratch:
        warm = Path(scratch) / "warm_up.py"
        warm.write_text(WARM_DAG)
        Parser(Path(scratch), None).parse(warm)
    gc.freeze()  # forks then share these objects' pages instead of copying them when the collector runs


def parse_folder(folder: Path, workers: int, timeout: float | None, settings: dict) -> Iterator[dict]:
    """Parse in a warmed-up process, which this call changes for good: fork before calling it again."""
    from airflow.configuration import conf

    lookups = Lookups(folder, settings.get("placeholders", {}))
    lookups.install()
    DagCounter.install()
    # As Airflow's DAG processor does for a bundle: modules beside the DAGs are importable.
    sys.path.append(str(folder))
    timeout = timeout or conf.getfloat("core", "dagbag_import_timeout")
    chosen = settings.get("files")
    files = [*python_files(folder), folder / PLUGINS] if chosen is None else [folder / f for f in chosen]
    return parse_all(folder, files, workers, timeout, lookups, settings.get("limits"))


def main(folder: Path, out: Path, workers: int, timeout: float | None, settings: dict) -> None:
    warm_up()
    files = sorted(parse_folder(folder, workers, timeout, settings), key=lambda f: f["path"])
    report = json.dumps({"files": files})
    if str(out) == "-":
        # A pod's log is all that comes back from a validator Job, mixed with what DAG files printed:
        # one marked line of its own.
        sys.stdout.write(f"\n{REPORT_MARKER}{report}\n")
        sys.stdout.flush()
    else:
        out.write_text(report)


# --- warm: one process per runtime, forked per request ---------------------------------


def serve(directory: Path, idle: float) -> None:
    """Answer parse requests on DIRECTORY/socket, each in a child forked from this warmed-up process.

    So a validation skips starting the interpreter and importing Airflow. The server ends
    when its socket is removed or replaced (a newer server took over), when the process
    that started it ends, or after IDLE seconds without a request; clients that connected
    before that are still answered.
    """
    warm_up()
    launcher, path = os.getppid(), directory / "socket"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = directory / f"socket.{os.getpid()}"
    staging.unlink(missing_ok=True)
    os.chdir(directory)
    listener.bind(staging.name)  # by a relative name: an address holds 107 bytes at most, the folder's path may not
    listener.listen(64)
    os.replace(staging, path)  # clients see the old socket or this one, never none
    mine = path.stat().st_ino
    print("ready", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the launcher stops reading; each request keeps its own output
    os.close(devnull)
    children: set[int] = set()
    last = time.monotonic()
    while True:
        if select.select([listener], [], [], 1.0)[0]:
            children.add(_answer_in_child(listener))
        while children and (pid := os.waitpid(-1, os.WNOHANG)[0]):
            children.discard(pid)
        now = time.monotonic()
        if children:
            last = now
        try:
            replaced = path.stat().st_ino != mine
        except FileNotFoundError:
            replaced = True
        if replaced or os.getppid() != launcher or now - last > idle:
            break
    if not replaced:
        path.unlink(missing_ok=True)
    listener.setblocking(False)
    while True:
        try:
            _answer_in_child(listener)
        except BlockingIOError:
            break


def _answer_in_child(listener: socket.socket) -> int:
    connection, _ = listener.accept()
    pid = os.fork()
    if pid:
        connection.close()
        return pid
    listener.close()
    code = 0
    try:
        connection.setblocking(True)
        _answer(connection)
    except BaseException:
        code = 1
        traceback.print_exc()
    finally:
        os._exit(code)


def _answer(connection: socket.socket) -> None:
    """One request: JSON in until end-of-file ({folder, plugins_folder, cwd, files, placeholders, workers,
    timeout}); back, one JSON line per file as soon as it is parsed, or one {"error": ...} line.

    So the client stores each report while the others are parsed, not all after the last."""
    with connection, tempfile.TemporaryFile() as output:
        # The DAG files' prints and warnings, as a cold run's output file holds them.
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        chunks = []
        while chunk := connection.recv(1 << 16):
            chunks.append(chunk)
        if not chunks:
            return  # the client connected, then found nothing to parse
        Worker.held.add(connection.fileno())
        try:
            request = json.loads(b"".join(chunks))
            folder = Path(request["folder"]).resolve()
            _enter(request["cwd"], folder, request["plugins_folder"])
            for report in parse_folder(folder, request["workers"], request["timeout"], request):
                connection.sendall(json.dumps(report).encode() + b"\n")
        except Exception:
            sys.stderr.flush()
            output.seek(0)
            tail = output.read()[-3000:].decode(errors="replace")
            connection.sendall(json.dumps({"error": tail + traceback.format_exc()}).encode() + b"\n")


def _enter(cwd: str, folder: Path, plugins_folder: str) -> None:
    """What a cold run gets from its working directory and environment: this bundle's DAG and plugins folders."""
    from airflow import plugins_manager, settings

    os.chdir(cwd)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(folder)
    os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = plugins_folder
    sys.path[:] = [p for p in sys.path if p != settings.PLUGINS_FOLDER] + [plugins_folder]
    settings.DAGS_FOLDER, settings.PLUGINS_FOLDER = str(folder), plugins_folder
    plugins_manager._get_plugins.cache_clear()  # the warm-up loaded the launch folder's, once per process


if __name__ == "__main__":
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    cli = argparse.ArgumentParser(description="Parse DAG files with Airflow's DagBag; write a JSON report.")
    cli.add_argument("folder", type=Path, nargs="?")
    cli.add_argument("out", type=Path, nargs="?")
    cli.add_argument("workers", type=int, nargs="?", default=os.cpu_count() or 1)
    cli.add_argument("timeout", type=float, nargs="?", default=None)
    cli.add_argument("--settings", type=Path, help="JSON file: files to parse, placeholders")
    cli.add_argument("--serve", type=Path, metavar="DIRECTORY", help="answer requests on DIRECTORY/socket instead")
    cli.add_argument("--idle", type=float, default=600.0, help="seconds without a request before --serve ends")
    args = cli.parse_args()
    if args.serve:
        serve(args.serve, args.idle)
    elif args.folder and args.out:
        main(
            args.folder.resolve(),
            args.out,
            args.workers,
            args.timeout,
            json.loads(args.settings.read_text()) if args.settings else {},
        )
    else:
        cli.error("give FOLDER and OUT, or --serve DIRECTORY")
