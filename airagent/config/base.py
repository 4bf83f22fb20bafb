"""The ground every part of `airagent.yaml` stands on: strict models, durations, names, paths, and where state lives."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

# The unit words a duration may use, in seconds; a number alone is seconds.
_UNITS = {
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 0.001),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 7 * 86400),
}
_NUMBER = r"\d+(?:\.\d+)?"
_PART = re.compile(rf"({_NUMBER})\s*([a-z]+)")
_PARTS = re.compile(rf"(?:{_NUMBER}\s*[a-z]+\s*)+")
_FORMS = "30s, 5m, 1h30m or 2d (a number alone is seconds)"
_TIMEDELTA = TypeAdapter(timedelta)


def _duration(value: Any) -> Any:
    """Read `90`, `90s`, `1h30m`, `10 minutes`, and what pydantic reads from a string (ISO 8601 such as
    `PT1H30M`, which is how durations are written into workflow history); refuse the rest, and negatives,
    naming the forms that work."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # seconds
    if isinstance(value, str):
        value = _parse(value.strip())
    if isinstance(value, timedelta) and value < timedelta(0):
        raise ValueError(_negative(str(value)))
    return value  # a timedelta, or a type pydantic names as wrong


def _parse(text: str) -> timedelta:
    if text.startswith("-"):
        raise ValueError(_negative(text))
    lowered = text.lower()
    parts = _PART.findall(lowered) if _PARTS.fullmatch(lowered) else []
    try:
        if re.fullmatch(_NUMBER, text):
            return timedelta(seconds=float(text))
        if parts and all(unit in _UNITS for _, unit in parts):
            return timedelta(seconds=sum(float(n) * _UNITS[unit] for n, unit in parts))
    except OverflowError:
        raise ValueError(f"{text!r} is longer than any duration can be") from None
    if text.startswith("P") or ":" in text:
        try:
            return _TIMEDELTA.validate_python(text)
        except ValidationError:
            pass
    raise ValueError(f"{text!r} is not a duration; give one like {_FORMS}")


def _negative(text: str) -> str:
    return f"{text!r} is negative: a duration must be positive, like {_FORMS}"


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
NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
Name = Annotated[str, Field(pattern=f"^{NAME.pattern}$")]


Ref = Annotated[str, BeforeValidator(_no_option)]


RepoPath = Annotated[str, BeforeValidator(_relative)]


def is_url(repo: str) -> bool:
    return "://" in repo or repo.startswith("git@")


# What tells a project's `.airagent/` (where `make` keeps state) from an empty folder of that name.
_STATE_MARKS = ("runtimes", "releases", "temporal.db")


def home() -> Path:
    """Where this host keeps airagent's state: runtimes, built releases, clones, the dev server's database.

    AIRAGENT_HOME; else, inside a project that has one, its `.airagent/`, so the CLI shares `make`'s state
    instead of building a second runtime; else ~/.airagent."""
    if os.environ.get("AIRAGENT_HOME"):
        return Path(os.environ["AIRAGENT_HOME"]).resolve()
    return (_project_state() or Path.home() / ".airagent").resolve()


def _project_state() -> Path | None:
    """The `.airagent/` holding state in the working directory or the nearest parent that has one."""
    try:
        here = Path.cwd()
    except FileNotFoundError:  # a working directory removed under the process
        return None
    for folder in (here, *here.parents):
        state = folder / ".airagent"
        if any((state / mark).exists() for mark in _STATE_MARKS):
            return state
    return None
