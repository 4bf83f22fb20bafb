"""Workers forked from a warmed-up process, parsing files side by side; a file that hangs or dies fails alone.

Forked once Airflow is imported and warmed up, so no file pays for that again. A file that
hangs past the timeout (Airflow's dagbag_import_timeout by default), exits, segfaults or
runs out of memory fails alone, with the reason, and a fresh worker takes its place.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import time
import traceback
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from .dagbag import Parser
from .lookups import Lookups
from .report import died, failed, trim

# Files a worker holds at once: the one it parses and the next.
DEPTH = 2


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
        try:
            self.jobs.write(json.dumps(str(path)) + "\n")
            self.jobs.flush()
        except BrokenPipeError:
            pass  # it died on the file before: its end is read next, and this file goes back to the others

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
