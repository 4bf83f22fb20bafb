"""Running a program from an activity: arguments as a list, never a shell, heartbeating while it runs."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from temporalio import activity

HEARTBEAT_EVERY = 5.0


class ProcessFailed(Exception):
    def __init__(self, args: Sequence[str], code: int, output: str):
        super().__init__(f"{Path(args[0]).name} exited with {code}: {output[-2000:]}")
        self.code = code
        self.output = output


def run(
    args: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> str:
    """Run to completion and return its combined output; raise ProcessFailed on a non-zero exit.

    Output goes to a temporary file rather than a pipe so a chatty program never blocks
    while we are busy heartbeating.
    """
    argv = [str(a) for a in args]
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        waited = 0.0
        try:
            while True:
                try:
                    code = proc.wait(timeout=HEARTBEAT_EVERY)
                    break
                except subprocess.TimeoutExpired:
                    waited += HEARTBEAT_EVERY
                    if activity.in_activity():
                        activity.heartbeat(f"{Path(argv[0]).name} running for {waited:.0f}s")
                    if timeout is not None and waited >= timeout:
                        raise TimeoutError(f"{Path(argv[0]).name} did not finish within {timeout:.0f}s")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        output = out.read()
    if code != 0:
        raise ProcessFailed(argv, code, output)
    return output
