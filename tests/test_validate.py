"""The DAG parser in a real Airflow runtime: every file on its own, a bad one fails only itself."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from activities import process
from activities.build import ensure_runtime
from activities.validate import PARSER
from airagent import example
from airagent.config import Runtime

GOOD = example.dag_file("fine").replace("from common.naming import task_name\n", "").replace(
    'task_name("step", i)', 'f"step_{i}"')


def parse(folder: Path, tmp_path: Path, timeout: float = 3) -> dict[str, dict]:
    _, runtime = ensure_runtime(Runtime(), None)
    out = tmp_path / "report.json"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "home")}
    process.run([runtime / "bin" / "python", PARSER, folder, out, "2", str(timeout)], env=env)
    return {f["path"]: f for f in json.loads(out.read_text())["files"]}


def test_a_file_that_hangs_exits_or_dies_fails_alone(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "fine.py").write_text(GOOD)
    (dags / "hangs.py").write_text("import time\ntime.sleep(600)\n")
    (dags / "exits.py").write_text("import os\nos._exit(7)\n")
    (dags / "killed.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    (dags / "no_words.py").write_text("raise RuntimeError('safe mode would have skipped me')\n")

    files = parse(dags, tmp_path)

    assert files["fine.py"]["dag_ids"] == ["fine"] and files["fine.py"]["error"] is None
    assert "longer than 3s" in files["hangs.py"]["error"]
    assert "exit code 7" in files["exits.py"]["error"]
    assert "killed by SIGKILL" in files["killed.py"]["error"]
    assert "safe mode would have skipped me" in files["no_words.py"]["error"]


def test_cli_validate_checks_a_working_tree_before_merge(tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    airagent = [str(Path(os.sys.executable).with_name("airagent")), "validate", str(tmp_path / "repo")]

    ok = subprocess.run([*airagent, "--json"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert sum(len(f["dag_ids"]) for f in json.loads(ok.stdout)["files"]) == 4

    (Path(repo.working_tree_dir) / example.BROKEN_PATH).write_text(example.BROKEN_DAG)  # not even committed
    broken = subprocess.run(airagent, capture_output=True, text=True, timeout=300)
    assert broken.returncode == 3
    assert f"{example.BROKEN_PATH}: ModuleNotFoundError: No module named 'pandas_but_misspelled'" in broken.stdout
