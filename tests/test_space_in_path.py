"""A local environment whose path holds a space: every path reaches its real api-server as one argument."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from activities.runtime import ensure_runtime
from activities.targets.local_airflow import API_SLOTS, LocalAirflow
from activities.targets.local_settings import ensure_secrets
from airagent import example
from airagent.config import LocalTarget, Runtime
from tests.conftest import airflow_ports

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def test_an_api_server_under_a_path_with_a_space_starts_and_answers_health(tmp_path):
    # Short, under /tmp: the control socket's path must fit a socket address (107 bytes), which pytest's own
    # folders under pytest-xdist do not leave room for.
    root = Path(tempfile.mkdtemp(prefix="airagent-"))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(example.FILES["requirements.txt"])
    _, runtime = ensure_runtime(Runtime(), requirements)  # the example's runtime, as its releases are built on
    python = runtime / "bin" / "python"
    target = LocalTarget(path=root / "airflow environments" / "staging", port=airflow_ports(), live_timeout="120s")
    env = LocalAirflow("staging", target)
    ensure_secrets(target)
    env._migrate(python, None)
    # Split at the space, the control socket's path would be `<tmp>/airflow`, and the rest a stray argument.
    control_socket = env.components.run / f"{API_SLOTS[0]}.ctl"
    try:
        # Only the api-server: it is the component whose arguments gunicorn splits like a shell line.
        env._wait_answers(env._start_api(API_SLOTS[0], python, None))
        with env.api() as api:
            health = api.health()
        deadline = time.monotonic() + 30  # gunicorn opens it just after it starts serving
        while not control_socket.is_socket() and time.monotonic() < deadline:
            time.sleep(0.2)
        socket_made = control_socket.is_socket()
    finally:
        env.down()
        shutil.rmtree(root)
    assert health["metadatabase"]["status"] == "healthy"
    assert socket_made and not (root / "airflow").exists()
