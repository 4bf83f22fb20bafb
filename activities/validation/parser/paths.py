"""Which files of a DAG folder are parsed, as the deployer's cache keys see them too."""

from __future__ import annotations

import os
from pathlib import Path

# Asked for like a file: the plugins folder, loaded as Airflow's plugin manager loads it,
# in a worker of its own so a plugin that hangs or exits fails alone too.
PLUGINS = "<plugins>"


def python_files(folder: Path) -> list[Path]:
    return [folder / rel for rel in relative_python_files(folder)]


def relative_python_files(folder: Path) -> list[str]:
    """Every `.py` file under `folder`, as a sorted posix path relative to it, outside hidden and cache folders."""
    found = []
    for here, subdirs, names in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and d != "__pycache__"]
        prefix = os.path.relpath(here, folder).replace(os.sep, "/") + "/"
        prefix = "" if prefix == "./" else prefix
        found += [prefix + name for name in names if name.endswith(".py") and not name.startswith(".")]
    return sorted(found, key=lambda rel: rel.split("/"))  # the order of sorted Paths
