"""Checks of this machine: the config, the sandbox, free disk and built runtimes in the state directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from activities import sandbox
from activities.runtime import runtime_hash
from airagent import config as config_module
from airagent.config import ConfigError, PipelineSettings, home
from interface.checks import Check, command, failed

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
