"""The runtime a release runs in: a venv built with uv, keyed by the hash of its inputs.

Reused whenever the inputs are unchanged; two builds of one runtime may race, the second
simply discards its copy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import uuid
from pathlib import Path

from temporalio.exceptions import ApplicationError

from activities import process
from airagent.config import Runtime, home

UV = Path(sys.executable).with_name("uv")
# gunicorn lets a new api-server share the port with the old one during a restart (SO_REUSEPORT).
RUNTIME_EXTRAS = ["gunicorn"]


def runtime_hash(runtime: Runtime, requirements: bytes) -> str:
    spec = {
        "python": runtime.python,
        "airflow": runtime.airflow,
        "extras": RUNTIME_EXTRAS,
        "requirements": hashlib.sha256(requirements).hexdigest(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def ensure_runtime(runtime: Runtime, requirements: Path | None) -> tuple[str, Path]:
    """The runtime venv for these inputs, built with uv unless it already exists."""
    reqs = requirements.read_bytes() if requirements and requirements.is_file() else b""
    digest = runtime_hash(runtime, reqs)
    final = home() / "runtimes" / digest
    if (final / "runtime.json").exists():
        return digest, final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{digest}.{uuid.uuid4().hex[:8]}")
    try:
        process.run([_uv(), "venv", "--quiet", "--relocatable", "--python", runtime.python, tmp])
        install: list[str | Path] = [
            _uv(),
            "pip",
            "install",
            "--quiet",
            "--python",
            tmp / "bin" / "python",
            f"apache-airflow=={runtime.airflow}",
            *RUNTIME_EXTRAS,
        ]
        if reqs:
            assert requirements is not None  # `reqs` was read from it
            install += ["-r", requirements]
        process.run(install, timeout=1800)
        (tmp / "runtime.json").write_text(json.dumps({"hash": digest, **runtime.model_dump()}, indent=2))
        try:
            tmp.rename(final)
        except OSError:
            if not (final / "runtime.json").exists():
                raise
    except process.ProcessFailed as err:
        raise ApplicationError(
            f"building the runtime (Airflow {runtime.airflow}, Python {runtime.python}"
            f"{', ' + str(requirements.name) if reqs and requirements else ''}) failed: {err.output[-3000:]}",
            type="RuntimeBuildFailed",
            non_retryable=True,
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return digest, final


def _uv() -> str:
    return str(UV) if UV.exists() else shutil.which("uv") or "uv"
