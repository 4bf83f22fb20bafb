"""Components: the Airflow processes of a local environment, each detached, each with a record.

    <env>/run/<name>.json   pid, the kernel's start time of that pid, the release it started on
    <env>/logs/<name>.log   its output

A component is started through launch.py, so it is no child of the worker: the worker
can die and restart and find every component as it was, by its record. The kernel's
start time tells a live component from a recycled pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

LAUNCHER = Path(__file__).with_name("launch.py")
SAY_EVERY = 30.0  # how often a long wait for a component to exit says it still waits
ASK_EVERY = 5.0  # how often that wait asks whether there is still something to wait for


class Process(BaseModel):
    name: str
    pid: int
    ticks: int = 0
    started: datetime
    release: str | None = None
    port: int | None = None

    @property
    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.ticks


def _start_ticks(pid: int) -> int | None:
    """The pid's start time in clock ticks since boot, None when no live process has it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # a zombie or a corpse is not running
        return None
    return int(fields[19])


class Components:
    def __init__(self, root: Path):
        self.run = root / "run"
        self.logs = root / "logs"

    def record(self, name: str) -> Process | None:
        path = self.run / f"{name}.json"
        if not path.exists():
            return None
        return Process.model_validate_json(path.read_text())

    def records(self) -> list[Process]:
        if not self.run.exists():
            return []
        return sorted(
            (Process.model_validate_json(p.read_text()) for p in self.run.glob("*.json")), key=lambda p: p.name
        )

    def start(
        self,
        name: str,
        argv: Sequence[str | Path],
        env: Mapping[str, str],
        cwd: Path,
        release: str | None = None,
        port: int | None = None,
    ) -> Process:
        self.run.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        launched = subprocess.run(
            [sys.executable, LAUNCHER, self.logs / f"{name}.log", cwd, "--", *map(str, argv)],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if launched.returncode != 0:
            raise RuntimeError(f"could not start {name}: {launched.stderr.strip()}")
        pid = int(launched.stdout)
        process = Process(
            name=name, pid=pid, ticks=_start_ticks(pid) or 0, started=datetime.now(UTC), release=release, port=port
        )
        self._write(process)
        return process

    def stop(
        self,
        process: Process,
        grace: float,
        say: Callable[[str], None] | None = None,
        keep_waiting: Callable[[], bool] | None = None,
    ) -> str:
        """SIGTERM, wait up to `grace` for it to exit, then kill what is left; returns how it ended.

        The caller picks `grace` from what the component may still be finishing, and `keep_waiting`, asked every
        few seconds, can end the wait sooner once it has nothing left to finish. `say` hears every SAY_EVERY
        seconds that a long wait goes on, so whoever waits is never left without a word.
        """
        started = time.monotonic()
        was_alive = process.alive
        if was_alive:
            os.kill(process.pid, signal.SIGTERM)
            next_word, next_ask = started + SAY_EVERY, started + ASK_EVERY
            while process.alive and time.monotonic() - started < grace:
                if say and time.monotonic() >= next_word:
                    say(f"still waiting for {process.name} to exit: {next_word - started:.0f}s of {grace:.0f}s")
                    next_word += SAY_EVERY
                if keep_waiting and time.monotonic() >= next_ask:
                    if not keep_waiting():
                        break
                    next_ask = time.monotonic() + ASK_EVERY
                time.sleep(0.2)
        stuck, waited = process.alive, time.monotonic() - started
        # The component leads its own process group: its helpers (log servers, workers) go with it.
        for kill in (os.killpg, os.kill) if stuck else (os.killpg,):
            try:
                kill(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 10
        while process.alive and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.alive:
            raise RuntimeError(f"{process.name} (pid {process.pid}) survived SIGKILL; stop it by hand")
        (self.run / f"{process.name}.json").unlink(missing_ok=True)
        if not was_alive:
            return "was not running"
        if stuck:
            return f"killed: still running {waited:.0f}s after SIGTERM"
        return f"exited in {waited:.0f}s"

    def _write(self, process: Process) -> None:
        tmp = self.run / f".{process.name}.{os.getpid()}"
        tmp.write_text(process.model_dump_json(indent=2))
        os.replace(tmp, self.run / f"{process.name}.json")
