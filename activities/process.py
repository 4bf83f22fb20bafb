"""Running a program from an activity: arguments as a list, never a shell, heartbeating while it runs."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from activities.heartbeat import keep_alive


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

    Output goes to a temporary file rather than a pipe, so a chatty program never blocks.
    """
    argv = [str(a) for a in args]
    name = Path(argv[0]).name
    with tempfile.TemporaryFile(mode="w+") as out, keep_alive(name):
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{name} did not finish within {timeout:.0f}s") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        output = out.read()
    if code != 0:
        raise ProcessFailed(argv, code, output)
    return output
