"""What `airagent doctor` checks, one verdict per check with the fix; a check never raises.

`temporal` needs the server (reachable, search attributes, workers, conductors);
`environments` reads each environment's own record and asks its Airflow; `host` looks at
this machine (the config, the sandbox, the api-server swap, disk, runtimes).
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from airagent.config import DEFAULT_FILE

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    check: str
    level: Level
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        """A warning is worth reading but does not fail the doctor."""
        return self.level != "fail"

    def as_json(self) -> dict:
        return {"check": self.check, "ok": self.ok, "level": self.level, "detail": self.detail, "fix": self.fix}


def failed(name: str, err: BaseException) -> Check:
    """What a check that raised reports: the error, never a traceback."""
    return Check(name, "fail", f"{type(err).__name__}: {err}"[:1000])


def safely(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as err:
        return failed(name, err)


async def safely_async(name: str, check: Callable[[], Awaitable[Check]]) -> Check:
    try:
        return await check()
    except Exception as err:
        return failed(name, err)


def command(*words: str, config: Path | None = None) -> str:
    """An airagent command line to copy into a shell: quoted, with `-c` when the config is not the default."""
    if config is not None and config != Path(DEFAULT_FILE):
        words = (*words, "-c", str(config))
    return f"`{shlex.join(['airagent', *words])}`"
