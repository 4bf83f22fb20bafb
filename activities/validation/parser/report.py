"""What a file's report says when parsing it failed, capped so a DAG file's error text cannot flood a report."""

from __future__ import annotations

import os
import signal
from pathlib import Path

MAX_TRACEBACK_LINES = 30
# A DAG file's error text is its author's to choose: only this much of it travels.
MAX_ERROR_CHARS = 4000
REPORT_MARKER = "airagent-report: "


def trim(text: str) -> str:
    """The end of a traceback, where the error is, capped in size."""
    lines = text.rstrip().splitlines()
    return cap("\n".join(lines[-MAX_TRACEBACK_LINES:]))


def cap(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"{text[: limit // 4]}\n… {cut} characters cut …\n{text[-(limit - limit // 4) :]}"


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
