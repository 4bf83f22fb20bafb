"""Work a worker does beside polling (the janitor's sweeps, the DORA gauges), for as long as it runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def beside(work: Coroutine[Any, Any, None] | None) -> AsyncIterator[None]:
    """`work` runs as a task while the block does, and is cancelled when it ends; None runs nothing."""
    task = asyncio.create_task(work) if work else None
    try:
        yield
    finally:
        if task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
