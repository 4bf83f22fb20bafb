"""The ground every part of `airagent.yaml` stands on: strict models, durations, names, paths, and where state lives."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def _duration(value: Any) -> Any:
    """Accept `90`, `90s`, `5m`, `1h` as well as what pydantic itself reads."""
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_option(value: Any) -> Any:
    # Names and refs end up as git arguments; one starting with '-' would read as an option.
    if isinstance(value, str) and value.startswith("-"):
        raise ValueError(f"{value!r} must not start with '-'")
    return value


def _relative(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # pydantic names the wrong type
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{value!r} must be a path inside the repository, like 'dags'")
    return path.as_posix()


# Names end up in workflow ids and visibility queries: keep them plain.
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]


Ref = Annotated[str, BeforeValidator(_no_option)]


RepoPath = Annotated[str, BeforeValidator(_relative)]


def is_url(repo: str) -> bool:
    return "://" in repo or repo.startswith("git@")


def home() -> Path:
    """Where this host keeps airagent's state: runtimes, built releases, clones, the dev server's database."""
    return Path(os.environ.get("AIRAGENT_HOME") or Path.home() / ".airagent").resolve()
