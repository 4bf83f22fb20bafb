"""The runtime a release runs in: a venv built with uv, keyed by the hash of its inputs.

Reused whenever the inputs are unchanged. A host builds each runtime once: an activity
asking for one that is building waits for that build (half a minute of two cores) rather
than making its own; workers sharing a folder across hosts may still race, and the loser
discards its copy. Each reuse touches the runtime's `last-used` marker under the lock gc
(activities/gc.py) takes to remove one, so a runtime handed out is never removed under
its user. The install, which reads the repository's requirements and may build their
sdists, runs in the sandbox (see `activities.sandbox`) with the network it needs for the
package index and nothing else of the deployer's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from temporalio.exceptions import ApplicationError

from activities import process, sandbox
from activities.heartbeat import keep_alive
from airagent.config import Runtime, home

UV = Path(sys.executable).with_name("uv")
# gunicorn lets a new api-server share the port with the old one during a restart (SO_REUSEPORT); statsd is the
# client Airflow sends its metrics with (a local target's `metrics`; without it Airflow drops them with a log line).
RUNTIME_EXTRAS = ["gunicorn", "statsd"]
# What the sandboxed install may know of the worker's environment: where the package index is and how to reach it.
INDEX_SETTINGS = ("UV_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_")
LAST_USED = "last-used"


def runtime_hash(runtime: Runtime, requirements: bytes) -> str:
    spec = {
        "python": runtime.python,
        "airflow": runtime.airflow,
        "extras": RUNTIME_EXTRAS,
        "requirements": hashlib.sha256(requirements).hexdigest(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def ensure_runtime(runtime: Runtime, requirements: Path | None, sandboxed: bool = True) -> tuple[str, Path]:
    """The runtime venv for these inputs, built with uv unless it already exists."""
    reqs = requirements.read_bytes() if requirements and requirements.is_file() else b""
    digest = runtime_hash(runtime, reqs)
    final = home() / "runtimes" / digest
    if _handed_out(final):
        return digest, final
    with _building(final):
        if _handed_out(final):  # built while this waited
            return digest, final
        _build(runtime, requirements if reqs else None, sandboxed, final)
    return digest, final


def _handed_out(final: Path) -> bool:
    """Whether the runtime is built; if so its use is marked under the lock gc takes to remove one."""
    with runtimes_locked():
        if not (final / "runtime.json").exists():
            return False
        with contextlib.suppress(OSError):  # a marker never fails a build; without it gc goes by the folder's age
            (final / LAST_USED).touch()
        return True


@contextlib.contextmanager
def _building(final: Path) -> Iterator[None]:
    """Held while this runtime builds, so another build of it on this host waits instead of building it again."""
    with open(final.with_name(f".{final.name}.building"), "a") as lock:
        with keep_alive(f"waiting for runtime {final.name} to build"):
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(runtime: Runtime, requirements: Path | None, sandboxed: bool, final: Path) -> None:
    digest = final.name
    tmp = final.with_name(f".{digest}.{uuid.uuid4().hex[:8]}")
    try:
        process.run([_uv(), "venv", "--quiet", "--relocatable", "--python", runtime.python, tmp])
        # Bytecode now: the sandboxed parser reads the runtime as nobody and cannot write it, so every start
        # would compile Airflow again.
        install = [_uv(), "pip", "install", "--quiet", "--compile-bytecode", "--python", str(tmp / "bin" / "python")]
        install += [f"apache-airflow=={runtime.airflow}", *RUNTIME_EXTRAS]
        if sandboxed:
            _install_sandboxed(install, tmp, requirements)
        else:
            process.run(install + (["-r", str(requirements)] if requirements else []), timeout=1800)
        (tmp / "runtime.json").write_text(json.dumps({"hash": digest, **runtime.model_dump()}, indent=2))
        try:
            tmp.rename(final)
        except OSError:
            if not (final / "runtime.json").exists():
                raise
    except process.ProcessFailed as err:
        raise ApplicationError(
            f"building the runtime (Airflow {runtime.airflow}, Python {runtime.python}"
            f"{', ' + str(requirements.name) if requirements else ''}) failed: {err.output[-3000:]}",
            type="RuntimeBuildFailed",
            non_retryable=True,
        ) from None
    except sandbox.SandboxUnavailable as err:
        raise ApplicationError(str(err), type="SandboxUnavailable", non_retryable=True) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def runtimes_locked(exclusive: bool = False) -> Iterator[None]:
    """Shared while a runtime is handed out, exclusive while gc takes one away: neither sees half of the other."""
    folder = home() / "runtimes"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def _install_sandboxed(install: list[str], venv: Path, requirements: Path | None) -> None:
    """Run `install` in the sandbox: it writes only the new venv, its own cache and a copy of the requirements'
    folder (a local package builds in place); the network it gets is for the package index."""
    sandbox.require()
    sandbox.hand_over(venv)  # made outside by `uv venv`; the sandbox's user fills it
    cache = home() / "uv-cache"  # the sandbox's own: the worker's cache is not its to write
    cache.mkdir(parents=True, exist_ok=True)
    index = {k: v for k, v in os.environ.items() if k.startswith(INDEX_SETTINGS) and k != "UV_CACHE_DIR"}
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "UV_CACHE_DIR": str(cache), **index}
    uv = Path(install[0]).resolve()
    seen = [uv, sandbox.interpreter_prefix(venv / "bin" / "python")]
    with tempfile.TemporaryDirectory(prefix=".sources-", dir=venv.parent) as scratch:
        sources = Path(scratch)
        if requirements is not None:
            shutil.copytree(requirements.parent, sources, symlinks=True, dirs_exist_ok=True)
            install = [*install, "-r", str(sources / requirements.name)]
        sandbox.hand_over(sources)
        argv = sandbox.command(
            [str(uv), *install[1:]], read_only=seen, writable=[venv, cache, sources], env=env, network=True, cwd=sources
        )
        process.run(argv, timeout=1800)


def _uv() -> str:
    return str(UV) if UV.exists() else shutil.which("uv") or "uv"
