"""The warm DAG parser: it isolates bad files as a cold run does, comes back when it dies, serves several
validations at once, and ends by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from activities.runtime import ensure_runtime
from activities.validation import cache, parser_app
from activities.validation import service as parser_service
from activities.validation.parse import parse_tree
from airagent.config import Runtime, home
from tests.test_validate import GOOD, dag, settings, tree

# The Airflow runtime or the Kubernetes emulator: the full suite, not the fast layer.
pytestmark = pytest.mark.slow


@pytest.fixture
def runtime(monkeypatch) -> Path:
    """The shared runtime, with a home of its own (short, as a socket path must be), so this test's parsers are
    the only ones it talks to and counts (earlier tests' in this process are stopped first); stopped after."""
    _, built = ensure_runtime(Runtime(), None)
    parser_service.stop()
    with tempfile.TemporaryDirectory(prefix="aa-") as home:
        monkeypatch.setenv("AIRAGENT_HOME", home)
        try:
            yield built
        finally:
            parser_service.stop()


def server_of(runtime: Path) -> parser_service.Server:
    """The server of trees outside a pipeline's releases: they are all staged under one folder."""
    return parser_service.Server(runtime, home() / "trees")


def socket_of(runtime: Path) -> int:
    """Which server listens now: a new one binds a new socket file."""
    return (server_of(runtime).path / "socket").stat().st_ino


def test_the_warm_parser_fails_a_file_that_hangs_exits_or_dies_alone_and_keeps_serving(runtime, tmp_path):
    root = tree(
        tmp_path / "repo",
        {
            "dags/fine.py": GOOD,
            "dags/hangs.py": "import time\ntime.sleep(600)\n",
            "dags/exits.py": "import os\nos._exit(7)\n",
            "dags/killed.py": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
        },
    )

    report = parse_tree(runtime, root, "dags", "plugins", timeout=3)
    server = socket_of(runtime)

    files = {f.path: f for f in report.files}
    assert files["dags/fine.py"].dag_ids == ["fine"] and files["dags/fine.py"].error is None
    assert "longer than 3s" in files["dags/hangs.py"].error
    assert "exit code 7" in files["dags/exits.py"].error
    assert "killed by SIGKILL" in files["dags/killed.py"].error

    (root / "dags" / "fine.py").write_text(GOOD.replace('"fine"', '"fine_again"'))
    again = parse_tree(runtime, root, "dags", "plugins", timeout=3)
    assert {f.path: f.dag_ids for f in again.files}["dags/fine.py"] == ["fine_again"]
    assert socket_of(runtime) == server


def test_a_parser_that_died_is_started_again(runtime, tmp_path):
    root = tree(tmp_path / "repo", {"dags/one.py": dag("one")})
    parse_tree(runtime, root, "dags", "plugins")
    server = socket_of(runtime)
    os.kill(parser_service._started[server_of(runtime).path].pid, signal.SIGKILL)

    (root / "dags" / "two.py").write_text(dag("two"))
    report = parse_tree(runtime, root, "dags", "plugins")

    assert sorted(d for f in report.files for d in f.dag_ids) == ["one", "two"]
    assert socket_of(runtime) != server


def test_a_first_validation_starts_its_parser_while_it_computes_the_cache_keys(runtime, tmp_path, monkeypatch):
    """The parser's start (Airflow's import, seconds) overlaps what comes before the request, not after it."""
    root = tree(tmp_path / "repo", {"dags/one.py": dag("one")})
    file_keys = cache.file_keys

    def keys_once_the_parser_listens(*args, **kwargs):
        deadline = time.monotonic() + 120
        while (connection := parser_service.listening(server_of(runtime).path)) is None:
            assert time.monotonic() < deadline, f"no parser started beside the keys: {server_of(runtime).log_tail()}"
            time.sleep(0.05)
        connection.close()
        return file_keys(*args, **kwargs)

    monkeypatch.setattr(cache, "file_keys", keys_once_the_parser_listens)
    report = parse_tree(runtime, root, "dags", "plugins")

    assert [f.dag_ids for f in report.files] == [["one"]]
    assert len(parser_service._started) == 1


def test_validations_at_once_share_one_parser_and_keep_their_own_folders_and_settings(runtime, tmp_path):
    """Releases of one pipeline, as trains build them: one sandboxed parser reads them all."""
    roots = [
        tree(
            home() / "releases" / "main" / f"release{i}" / "bundle",
            {
                f"dags/d{i}.py": dag(
                    f"d{i}", body="from airflow.sdk import Variable\nv = Variable.get('name')\n"
                ).replace(f"DAG('d{i}'", f"DAG(f'd{i}_{{v}}'"),
                "plugins/helper.py": f"NAME = 'p{i}'\n",
                f"dags/uses_plugin_{i}.py": dag(f"u{i}", body="from helper import NAME\n").replace(
                    f"DAG('u{i}'", "DAG(f'u_{NAME}'"
                ),
            },
        )
        for i in range(3)
    ]

    def validate(i: int):
        pipeline = settings(tmp_path / f"s{i}", placeholders={"enabled": False, "variables": {"name": f"v{i}"}})
        return parse_tree(runtime, roots[i], "dags", "plugins", pipeline)

    with ThreadPoolExecutor(3) as pool:
        reports = list(pool.map(validate, range(3)))

    for i, report in enumerate(reports):
        assert sorted(d for f in report.files for d in f.dag_ids) == [f"d{i}_v{i}", f"u_p{i}"]
    assert len(parser_service._started) == 1


def test_reports_come_as_files_finish_and_a_dropped_answer_is_asked_again_for_the_rest(runtime, tmp_path):
    root = tree(tmp_path / "repo", {"dags/fine.py": dag("fine"), "dags/slow.py": "import time\ntime.sleep(10)\n"})
    server = parser_service.Server(runtime, root)
    request = {
        "folder": str(root / "dags"),
        "plugins_folder": str(root / "plugins"),
        "cwd": str(root),
        "files": ["fine.py", "slow.py", "<plugins>"],
        "placeholders": {},
        "limits": {},
        "workers": 2,
        "timeout": 60,
    }

    reports = parser_service.parse(server, request, timeout=120)
    first = next(reports)
    started = (server.path / "socket").stat().st_ino
    os.killpg(parser_service._started[server.path].pid, signal.SIGKILL)  # drops the answer half-way
    rest = list(reports)

    assert first["path"] != "slow.py"  # it came before the slow file was done: the answer was half-way
    assert sorted(r["path"] for r in [first, *rest]) == ["<plugins>", "fine.py", "slow.py"]  # each once
    assert (server.path / "socket").stat().st_ino != started  # a new parser answered the rest


@pytest.mark.parametrize("ending", ["idle", "socket removed"])
def test_a_server_ends_by_itself(runtime, tmp_path, ending):
    server = parser_service.Server(runtime, tmp_path, sandboxed=False).path
    idle = "1" if ending == "idle" else "600"
    process = subprocess.Popen(
        [runtime / "bin" / "python", parser_app.path(), "--serve", server, "--idle", idle],
        stdout=subprocess.PIPE,
        env={"PATH": os.environ["PATH"], "HOME": str(server), "AIRFLOW_HOME": str(server / "airflow")},
    )
    try:
        assert process.stdout.readline() == b"ready\n"
        if ending == "socket removed":
            (server / "socket").unlink()
        assert process.wait(timeout=120) == 0
        assert not (server / "socket").exists()
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def test_trees_outside_the_releases_share_one_parser_and_their_errors_name_them(runtime, tmp_path):
    """Working trees are staged under the state directory for the sandbox; what people read names theirs."""
    first = tree(tmp_path / "first", {"dags/broken.py": "raise ValueError('first tree')\n"})
    second = tree(tmp_path / "second", {"dags/one.py": dag("one"), ".venv/lib/big.py": "x = 1\n"})
    os.chmod(first, 0o700)  # a private folder stays private: its staged copy is what the sandbox opens

    broken = parse_tree(runtime, first, "dags", "plugins").files[0]
    server = socket_of(runtime)
    assert [f.dag_ids for f in parse_tree(runtime, second, "dags", "plugins").files] == [["one"]]

    assert socket_of(runtime) == server
    assert str(first / "dags" / "broken.py") in broken.error and str(home() / "trees") not in broken.error
    assert os.stat(first).st_mode & 0o777 == 0o700
    assert not any((home() / "trees").iterdir())  # each staged copy is removed after its parse


def test_a_state_directory_deeper_than_a_socket_address_holds_still_gets_its_parser(runtime, tmp_path, monkeypatch):
    deep = tmp_path / ("deep" * 20) / "home"  # its parser's socket path is past the 107 bytes an address holds
    monkeypatch.setenv("AIRAGENT_HOME", str(deep))
    root = tree(tmp_path / "repo", {"dags/one.py": dag("one")})

    report = parse_tree(runtime, root, "dags", "plugins")

    assert len(str(server_of(runtime).path / "socket")) > 108
    assert [f.dag_ids for f in report.files] == [["one"]]
