"""Connecting to Temporal the standard way, so one worker runs against a dev server, a cluster or Cloud.

Address, namespace, TLS and API key come from `temporalio.envconfig`: the TEMPORAL_*
environment variables and the profiles of `temporal config`. airagent reads no secret itself.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

DEFAULT_TASK_QUEUE = "airagent"


def task_queue() -> str:
    return os.environ.get("AIRAGENT_TASK_QUEUE", DEFAULT_TASK_QUEUE)


def host_name() -> str:
    """The name a worker's host goes by in `host:` of a local target."""
    return os.environ.get("AIRAGENT_HOST") or socket.gethostname()


class TemporalUnreachable(RuntimeError):
    """No Temporal server answered at the configured address."""


async def connect(
    profile: str | None = None, interceptors: Sequence[Interceptor] = (), runtime: Runtime | None = None
) -> Client:
    config = ClientConfig.load_client_connect_config(profile=profile)
    config.setdefault("target_host", "localhost:7233")
    try:
        return await Client.connect(
            **config, data_converter=pydantic_data_converter, interceptors=interceptors, runtime=runtime
        )
    except RuntimeError as err:  # the SDK's only word for a failed connect
        raise TemporalUnreachable(f"{config['target_host']}: {err}") from None
