"""Each worker collects garbage on its own disk, on a timer.

In a fleet, a train's stages land on any replica and each makes again the releases it
needs (`activities.release`); the conductor's collection after a train runs on one of
them only. So every worker also sweeps, every few minutes, each pipeline whose releases
it holds, with the settings they were last made with (`release.remember`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import timedelta

from activities import gc
from airagent.config import PipelineSettings, home
from worker.background import beside

EVERY = timedelta(minutes=10)
log = logging.getLogger("airagent")


def known_pipelines() -> list[PipelineSettings]:
    """Every pipeline with releases on this worker's disk, as they were last made here."""
    found = []
    for described in sorted((home() / "releases").glob("*/pipeline.json")):
        try:
            found.append(PipelineSettings.model_validate_json(described.read_text()))
        except (OSError, ValueError) as err:
            log.warning("gc: %s left out: %s", described, str(err)[:200])
    return found


def sweep(keep: gc.Retention | None = None) -> gc.GcResult:
    """One collection of this host's disk, every known pipeline at once."""
    return gc.apply(gc.plan(known_pipelines(), keep))


def interval() -> timedelta | None:
    """`AIRAGENT_GC_EVERY_SECONDS` (0 turns the sweep off), default ten minutes."""
    seconds = os.environ.get("AIRAGENT_GC_EVERY_SECONDS")
    if seconds is None:
        return EVERY
    return timedelta(seconds=float(seconds)) if float(seconds) > 0 else None


async def janitor(every: timedelta) -> None:
    """Sweep every `every` until cancelled; a sweep that fails is logged and the next one tries again."""
    while True:
        await asyncio.sleep(every.total_seconds())
        try:
            result = await asyncio.to_thread(sweep)
        except Exception:
            log.exception("gc: the sweep of this worker's disk failed")
            continue
        if result.removed or result.failed:
            log.info("gc: removed %s, freed %d bytes; could not remove %s", result.removed, result.freed, result.failed)


def sweeping() -> contextlib.AbstractAsyncContextManager[None]:
    """The janitor, running while the worker does."""
    every = interval()
    return beside(janitor(every) if every else None)
