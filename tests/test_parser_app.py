"""The parser ships as one zipapp: it runs on an interpreter that has nothing but the standard library (and, to
parse, Airflow), and what depends on the parser changes exactly when its sources do."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys

from activities.validation import parser_app

# What the runtime gives besides the standard library: Airflow, SQLAlchemy that it runs on, and jsonschema that
# it checks serialized DAGs with.
RUNTIME = {"airflow", "sqlalchemy", "jsonschema"}


def test_the_archive_runs_on_a_bare_interpreter(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRAGENT_HOME", str(tmp_path))

    archive = parser_app.path()
    bare = subprocess.run(
        [sys.executable, "-I", "-S", archive, "--help"], capture_output=True, text=True, timeout=60, check=False
    )

    assert bare.returncode == 0, bare.stderr
    assert "--serve DIRECTORY" in bare.stdout
    assert archive.read_bytes() == parser_app.archive() and archive.stat().st_mode & 0o777 == 0o644


def test_the_parser_imports_only_the_standard_library_and_airflow():
    for source in parser_app.sources():
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in RUNTIME, f"{source.name} imports {name}"


def test_the_digest_follows_the_sources(tmp_path, monkeypatch):
    copy = tmp_path / "parser"
    shutil.copytree(parser_app.SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(parser_app, "SOURCE", copy)
    parser_app.digest.cache_clear()
    try:
        before = parser_app.digest()
        (copy / "report.py").write_text((copy / "report.py").read_text() + "\n# changed\n")
        parser_app.digest.cache_clear()
        after = parser_app.digest()
    finally:
        monkeypatch.undo()
        parser_app.digest.cache_clear()

    assert before != after
    assert before == parser_app.digest()  # the copy was the package itself, byte for byte
