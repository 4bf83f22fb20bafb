"""Checks of this machine: the config, the sandbox, the api-server swap, free disk and built runtimes in the state
directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from activities import sandbox
from activities.runtime import runtime_hash
from airagent import config as config_module
from airagent.config import ConfigError, LocalTarget, PipelineSettings, home
from interface.checks import Check, command, failed

# Linux 5.14+: a closed SO_REUSEPORT listener hands its queued connections to another listener on the port.
MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")
GIB = 1024**3
# A runtime is a few hundred MiB and each train adds a release: below these a build or a roll may not fit.
WARN_FREE = 5 * GIB
FAIL_FREE = 1 * GIB


def configured(path: Path) -> tuple[Check, list[PipelineSettings]]:
    """The config as `config check` reads it, and its pipelines for the checks that need them."""
    try:
        cfg, base, warnings = config_module.check(path)
        pipelines = [cfg.pipeline(name, base) for name in cfg.pipelines]
    except ConfigError as err:
        fix = (
            f"fix it; {command('config', 'check', config=path)} names each mistake"
            if path.exists()
            else "`airagent init` writes one for your repository, or pass -c PATH"
        )
        return Check("config", "fail", str(err), fix), []
    except Exception as err:
        return failed("config", err), []
    envs = sum(len(p.environments) for p in pipelines)
    detail = f"{path}: pipelines {', '.join(p.name for p in pipelines)}; {envs} environments"
    if warnings:
        return Check("config", "warn", f"{detail}; {'; '.join(warnings)}", "see `airagent config check`"), pipelines
    return Check("config", "ok", detail), pipelines


def sandbox_check(pipelines: list[PipelineSettings]) -> Check:
    off = [p.name for p in pipelines if not p.sandbox]
    reason = sandbox.unavailable()
    if reason is None:
        if off:
            return Check(
                "sandbox",
                "warn",
                f"bubblewrap works, but {', '.join(off)} run repository code with the worker's rights (sandbox: off)",
                "remove `sandbox: off` from those pipelines",
            )
        return Check("sandbox", "ok", "bubblewrap makes a sandbox here")
    detail = reason.removesuffix(f"; {sandbox.FIX}")
    if pipelines and len(off) == len(pipelines):
        return Check("sandbox", "warn", f"{detail}; every pipeline has `sandbox: off`", sandbox.FIX)
    return Check("sandbox", "fail", detail, sandbox.FIX)


def api_swap(pipelines: list[PipelineSettings], setting: Path = MIGRATE_REQ) -> Check:
    """A local environment's restart roll starts the new api-server beside the old one on a shared port
    (SO_REUSEPORT) and then stops the old one: connections still queued at the old one when it closes are
    reset, unless the kernel hands them to the new one."""
    local = [
        f"{p.name}/{e.name}"
        for p in pipelines
        for e in p.environments
        if isinstance(e.target, LocalTarget) and e.target.airflow
    ]
    if not local:
        return Check("api swap", "ok", "no local environment swaps api-servers on this host")
    try:
        on = setting.read_text().strip() == "1"
    except OSError:
        return Check(
            "api swap",
            "warn",
            f"{setting} is not here (Linux before 5.14): a connection queued at the old api-server of "
            f"{', '.join(local)} as a restart roll stops it is reset",
            "run the workers of local environments on Linux 5.14 or later",
        )
    if on:
        return Check("api swap", "ok", "connections queued at an old api-server move to the new one as it stops")
    return Check(
        "api swap",
        "warn",
        f"net.ipv4.tcp_migrate_req is 0: a connection queued at the old api-server of {', '.join(local)} "
        "as a restart roll stops it is reset, not handed to the new one",
        "`sysctl -w net.ipv4.tcp_migrate_req=1` as root, and the same line in /etc/sysctl.d/ to keep it",
    )


def disk() -> Check:
    state = home()
    existing = next(p for p in (state, *state.parents) if p.exists())  # the root always exists
    free = shutil.disk_usage(existing).free
    detail = f"{free / GIB:.1f} GiB free for {state}"
    fix = "`airagent gc` removes releases and runtimes nothing needs; or free space on that disk"
    if free < FAIL_FREE:
        return Check("disk", "fail", detail, fix)
    if free < WARN_FREE:
        return Check("disk", "warn", f"{detail} (under {WARN_FREE // GIB} GiB)", fix)
    return Check("disk", "ok", detail)


def runtimes(pipelines: list[PipelineSettings], config: Path) -> Check:
    """Whether each pipeline's runtime (from its working tree's requirements) is built: else its first train
    builds it, which takes minutes."""
    folder = home() / "runtimes"
    built = {d.name for d in folder.iterdir() if (d / "runtime.json").is_file()} if folder.is_dir() else set()
    detail = f"{len(built)} built in {folder}"
    missing: list[PipelineSettings] = []
    for p in pipelines:
        if p.repo_is_url:
            continue  # its requirements are in a clone this check does not make
        requirements = Path(p.repo) / p.runtime.requirements
        wanted = runtime_hash(p.runtime, requirements.read_bytes() if requirements.is_file() else b"")
        if wanted not in built:
            missing.append(p)
    if missing:
        names = ", ".join(f"{p.name}'s (Airflow {p.runtime.airflow}, Python {p.runtime.python})" for p in missing)
        # validate reads PATH/airagent.yaml unless told: name the file doctor read
        builds = " or ".join(command("validate", p.repo, "-p", p.name, "-c", str(config)) for p in missing)
        return Check(
            "runtimes",
            "warn",
            f"{detail}; not built yet: {names}",
            f"{builds} builds it now; else the first train does (minutes)",
        )
    if not built:
        return Check("runtimes", "warn", f"none built in {folder}", "the first train or `airagent validate` builds one")
    return Check("runtimes", "ok", detail)
