"""The sandbox that code from the repository runs in: bubblewrap, so parsing a DAG file or building a runtime
never gets the deployer's rights.

Inside, a process sees the system folders and what the caller names, read-only unless
named writable; nothing of the deployer's home, state directory or secrets; an
environment of exactly what the caller passes; no other process (a pid namespace); no
network unless asked for (a network namespace with only loopback). A worker running as
root gives the sandbox another user (nobody), so a process limit holds and no file of
the deployer's is writable by ownership; any other worker gets a user namespace.

bubblewrap over a hand-made `unshare` + `setpriv` chain: one well-kept, setuid-free tool
(Flatpak's) that builds the whole mount namespace from an allow-list, and dies with its
caller (`--die-with-parent`), taking every process in it along.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

# Read-only system folders a Python interpreter, uv and their libraries need.
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")
NOBODY = 65534
FIX = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; `make setup` does it when run as root) "
    "and allow user namespaces, or set `sandbox: off` in the pipeline to parse and build repository code "
    "with the worker's own rights"
)


class SandboxUnavailable(RuntimeError):
    """No sandbox can be made on this host; the message names the fix."""


def bwrap() -> str | None:
    return shutil.which("bwrap")


def unavailable() -> str | None:
    """Why no sandbox can be made here, or None when one can: tried each time, so installing it heals."""
    tool = bwrap()
    if tool is None:
        return f"bubblewrap (`bwrap`) is not installed; {FIX}"
    probe = subprocess.run(command(["true"], read_only=[], writable=[], env={}), capture_output=True, text=True)
    if probe.returncode != 0:
        return f"bubblewrap cannot make a sandbox here ({probe.stderr.strip()[-300:]}); {FIX}"
    return None


def require() -> None:
    if reason := unavailable():
        raise SandboxUnavailable(reason)


def command(
    argv: Iterable[str | Path],
    *,
    read_only: Iterable[Path],
    writable: Iterable[Path],
    env: Mapping[str, str],
    network: bool = False,
    cwd: Path | None = None,
) -> list[str]:
    """`argv` wrapped to run in the sandbox. Paths keep their names inside, so arguments need no translating."""
    as_root = os.geteuid() == 0
    line = [bwrap() or "bwrap", "--die-with-parent", "--new-session", "--clearenv"]
    # Root keeps its own user namespace and hands the process to nobody below; anyone else needs one.
    line += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    line += [] if as_root else ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    line += [] if network else ["--unshare-net"]
    for folder in SYSTEM:
        if os.path.isdir(folder):
            line += ["--ro-bind", folder, folder]
    line += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    read_only, writable = list(read_only), list(writable)
    for folder in _ancestors([*read_only, *writable]):
        line += ["--perms", "0755", "--dir", folder]  # made 0700 otherwise, which nobody cannot pass
    for path in read_only:
        if as_root:
            _let_nobody_in(path)
        line += ["--ro-bind", str(path), str(path)]
    for path in writable:
        if as_root:
            _give_to_nobody(path)
        line += ["--bind", str(path), str(path)]
    for key, value in env.items():
        line += ["--setenv", key, value]
    if cwd is not None:
        line += ["--chdir", str(cwd)]
    if as_root:
        drop = ["--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
        line += ["--", "setpriv", *drop, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    else:
        line += ["--"]
    return line + [str(a) for a in argv]


def interpreter_prefix(python: Path) -> Path:
    """The installation a (venv's) interpreter comes from, to be made visible beside the venv."""
    real = python.resolve()
    return real.parent.parent


def _ancestors(paths: list[Path]) -> list[str]:
    """The folders above `paths` that the sandbox's own root must get, parents first."""
    above = {str(parent) for path in paths for parent in Path(path).parents if str(parent) != "/"}
    system = tuple(f"{folder}/" for folder in SYSTEM)
    return sorted((f for f in above if f not in SYSTEM and not f.startswith(system)), key=lambda f: f.count("/"))


def hand_over(folder: Path) -> None:
    """Make what the caller put in `folder` the sandbox's to write, as a writable path's own top already is."""
    if os.geteuid() != 0:
        return  # the sandbox runs as this user
    for parent, _, files in os.walk(folder):
        for name in ["", *files]:
            os.chown(Path(parent) / name, NOBODY, NOBODY, follow_symlinks=False)


def _let_nobody_in(path: Path) -> None:
    """A folder made private (a temporary directory is 0700) is opened to others, so nobody can read what it
    holds; what is inside was made readable by the umask."""
    mode = os.stat(path).st_mode
    if os.path.isdir(path) and mode & 0o005 != 0o005:
        os.chmod(path, mode | 0o005)


def _give_to_nobody(path: Path) -> None:
    os.chown(path, NOBODY, NOBODY)
