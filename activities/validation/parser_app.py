"""The parser package as one file a runtime's interpreter runs, `python parser.pyz ...`: a stdlib zipapp.

The parser runs in runtimes that are not the deployer's (the warm parser's sandbox, a
validator pod's image) and may not be installed there; zipped, its modules travel as
one file, run by any interpreter with Airflow, and read only themselves. Everything that
depends on which parser ran (the warm parser's folder, the validation cache's keys, a
validator Job's name) goes by `digest()`, the digest of the package's sources, so every
worker agrees on it however its archive's bytes came out.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import tempfile
import uuid
import zipapp
from pathlib import Path

from airagent.config import home

SOURCE = Path(__file__).with_name("parser")
NAME = "airagent_parser"  # the package's name inside the archive, clear of any module a DAG folder holds
MAIN = f"{NAME}.cli:main"


def sources() -> list[Path]:
    return sorted(SOURCE.glob("*.py"))


@functools.cache
def digest() -> str:
    """Of the package's sources, by name and content."""
    h = hashlib.sha256()
    for path in sources():
        data = path.read_bytes()
        h.update(f"{path.name}\0{len(data)}\0".encode() + data)
    return h.hexdigest()


@functools.cache
def archive() -> bytes:
    """The zipapp's bytes: the package's sources and a `__main__` that runs its command line."""
    with tempfile.TemporaryDirectory() as scratch:
        package = Path(scratch) / NAME
        package.mkdir()
        for path in sources():
            shutil.copyfile(path, package / path.name)
        out = io.BytesIO()
        zipapp.create_archive(scratch, out, main=MAIN, compressed=True)
    return out.getvalue()


def path() -> Path:
    """The zipapp as a file under home(), named by `digest()`: written once, read by every parser started after."""
    target = home() / "parsers" / f"parser-{digest()[:16]}.pyz"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        partial.write_bytes(archive())
        os.chmod(partial, 0o644)  # a sandbox's nobody reads it
        partial.replace(target)
    return target
