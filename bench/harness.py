"""What the benches share: a dev server of their own, and a worker in the bench's own process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.validation import service as parser_service
from airagent.devserver import DevServer, free_ports, register_search_attributes
from interface.client import AirAgent
from worker.main import ACTIVITIES, ACTIVITY_THREADS, WORKFLOWS


@asynccontextmanager
async def dev_server(root: Path) -> AsyncIterator[Client]:
    """A dev server keeping its state under `root`, with airagent's search attributes; stopped at the end, with
    the warm parsers this process started."""
    server = DevServer(root / "temporal", port=free_ports(), ui_port=free_ports(first=21000))
    server.start()
    try:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        await register_search_attributes(client)
        yield client
    finally:
        parser_service.stop()
        server.stop()


@asynccontextmanager
async def in_process_worker(client: Client, name: str) -> AsyncIterator[AirAgent]:
    """Every workflow and activity of the worker, on a task queue of its own, and a client of it."""
    queue = f"{name}-{uuid.uuid4()}"
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as executor:
        async with Worker(
            client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=ACTIVITIES,
            activity_executor=executor,
            max_concurrent_activities=ACTIVITY_THREADS,
        ):
            yield AirAgent(client, queue)
