"""Code from the repository never gets the deployer's rights: an adversarial corpus parsed through the real
`validate` path, each file failing alone or contained, none seeing a secret, the network or the disk outside.
The same probes parsed with `sandbox: off` get through, so "contained" means the sandbox stopped them."""

from __future__ import annotations

import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from activities import runtime as runtime_module
from activities import sandbox
from activities.runtime import ensure_runtime
from activities.validation.parse import parse_tree
from activities.validation.tree import check_tree
from airagent import example
from airagent.config import Runtime, home
from tests.conftest import make_pipeline
from tests.test_validate import GOOD, dag, settings, tree

# The Airflow runtime: the full suite, not the fast layer.
pytestmark = pytest.mark.slow

CANARY = "canary-7c1e0f3a9b"
# In every probe, new each run: no cached parse result answers for one, each runs.
RUN = uuid.uuid4().hex[:12]


def guarded(name: str, attempt: str) -> str:
    """A DAG file that tries `attempt` and, when it works, fails with what it got, so a leak shows in the
    report; when it is stopped, it defines its DAG and parses clean."""
    return (
        f"# run {RUN}\ndef attempt():\n{_indent(attempt)}\n"
        "try:\n    got = attempt()\nexcept Exception:\n    got = None\n"
        "if got:\n    raise RuntimeError(f'escaped: {got}')\n"
    ) + dag(name)


def _indent(code: str) -> str:
    return "\n".join(f"    {line}" for line in code.strip().splitlines())


@pytest.fixture
def listener() -> Iterator[tuple[int, threading.Event]]:
    """A TCP server on the host's loopback; its event is set once anything connects."""
    server = socket.create_server(("127.0.0.1", 0))
    connected = threading.Event()

    def serve():
        try:
            server.accept()
            connected.set()
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], connected
    server.close()
    thread.join(timeout=5)


@dataclass
class Bait:
    """What the deployer has and repository code must not reach."""

    secret: Path  # a file holding the canary
    port: int  # the listener's
    connected: threading.Event
    outside: list[Path]  # files to be written outside the parser's own folder


@pytest.fixture
def bait(tmp_path, monkeypatch, request, listener) -> Iterator[Bait]:
    port, connected = listener
    monkeypatch.setenv("TEMPORAL_API_KEY", CANARY)
    # /proc/<pid>/environ shows what a process started with: a stand-in for a worker started with secrets.
    worker = subprocess.Popen(["sleep", "300"], env={"TEMPORAL_API_KEY": CANARY, "AIRAGENT_AIRFLOW_PASSWORD": CANARY})
    request.addfinalizer(worker.kill)
    secret = home() / "envs" / "prod" / "secrets" / "api-login"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(CANARY)
    # The home is shared by the suite: the one there is the run's own, and goes after it.
    outside = [tmp_path / "written-outside", home() / f"written-outside-{RUN}", tmp_path / "repo" / "dags" / "x"]
    yield Bait(secret, port, connected, outside)
    for path in outside:
        path.unlink(missing_ok=True)


def probes(bait: Bait) -> dict[str, str]:
    """One DAG file per thing a probe reaches for, by path: the corpus both the sandbox and its control parse."""
    return {
        "dags/environ.py": guarded(
            "environ",
            f"""
import glob
found = []
for path in glob.glob('/proc/*/environ'):
    try:
        found.append(open(path, 'rb').read().decode(errors='replace'))
    except OSError:
        pass
import os
found.append(str(dict(os.environ)))
return [f for f in found if {CANARY!r} in f]
""",
        ),
        "dags/secret_file.py": guarded("secret_file", f"return open({str(bait.secret)!r}).read()"),
        "dags/connects.py": guarded(
            "connects",
            f"""
import _socket
s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
s.settimeout(3)
s.connect(('127.0.0.1', {bait.port}))
return 'connected'
""",
        ),
        "dags/writes.py": guarded(
            "writes",
            f"""
wrote = []
for path in {[str(p) for p in bait.outside]!r}:
    try:
        open(path, 'w').write('x')
        wrote.append(path)
    except OSError:
        pass
return wrote
""",
        ),
    }


def test_the_adversarial_corpus_fails_alone_or_is_contained(tmp_path, bait):
    assert sandbox.unavailable() is None, sandbox.unavailable()
    corpus = probes(bait)
    root = tree(
        tmp_path / "repo",
        {
            "dags/good.py": GOOD,
            **corpus,
            "dags/fork_bomb.py": "import os, time\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        time.sleep(0.05)\n",
            "dags/memory_bomb.py": "hog = bytearray(64 << 30)\n",
            "dags/huge_message.py": "raise RuntimeError('A' * (1 << 20))\n",
            "dags/big_file.py": "# padding\n" * (50 * (1 << 20) // 10),
        },
    )
    pipeline = settings(tmp_path / "s", limits={"processes": 64})

    report = parse_tree(ensure_runtime(Runtime(), None)[1], root, "dags", "plugins", pipeline, timeout=15)

    files = {f.path: f for f in report.files}
    assert files["dags/good.py"].error is None and files["dags/good.py"].dag_ids == ["fine"]
    for path in corpus:
        assert files[path].error is None, files[path].error
        assert files[path].dag_ids == [Path(path).stem]
    assert "longer than 15s" in files["dags/fork_bomb.py"].error
    assert "MemoryError" in files["dags/memory_bomb.py"].error
    assert "not parsed" in files["dags/big_file.py"].error and "50.0 MiB" in files["dags/big_file.py"].error
    assert len(files["dags/huge_message.py"].error) < 5000 and "characters cut" in files["dags/huge_message.py"].error
    assert not bait.connected.wait(timeout=1)
    assert not any(path.exists() for path in bait.outside)
    seen = report.model_dump_json() + "".join(
        p.read_text(errors="replace") for p in home().joinpath("parsers").rglob("*") if p.is_file()
    )
    assert CANARY not in seen


def test_without_the_sandbox_every_probe_gets_through(tmp_path, bait):
    """The control: with `sandbox: off` the same probes read the secret, connect and write outside, so a probe
    the test above finds contained was stopped by the sandbox, not broken on its own (a typo, a missing module)."""
    corpus = probes(bait)
    root = tree(tmp_path / "repo", corpus)
    off = settings(tmp_path / "s").model_copy(update={"sandbox": False})

    report = parse_tree(ensure_runtime(Runtime(), None)[1], root, "dags", "plugins", off, timeout=30)

    errors = {f.path: f.error or "" for f in report.files}
    assert set(errors) == set(corpus)
    for path, error in errors.items():
        assert "escaped: " in error, f"{path}: {error}"
    assert CANARY in errors["dags/environ.py"] and CANARY in errors["dags/secret_file.py"]
    assert "connected" in errors["dags/connects.py"] and bait.connected.wait(timeout=10)
    assert all(path.exists() for path in bait.outside)


def test_a_parser_asked_for_without_a_sandbox_says_how_to_get_one(tmp_path, monkeypatch):
    runtime = ensure_runtime(Runtime(), None)[1]
    monkeypatch.setenv("AIRAGENT_HOME", str(tmp_path / "home"))  # no warm parser nor cached result to answer
    monkeypatch.setattr(sandbox, "bwrap", lambda: None)
    root = tree(tmp_path / "repo", {"dags/good.py": GOOD})

    with pytest.raises(sandbox.SandboxUnavailable) as refused:
        parse_tree(runtime, root, "dags", "plugins", settings(tmp_path / "s"))
    assert "apt-get install bubblewrap" in str(refused.value) and "sandbox: off" in str(refused.value)

    off = settings(tmp_path / "s").model_copy(update={"sandbox": False})
    assert [f.dag_ids for f in parse_tree(runtime, root, "dags", "plugins", off).files] == [["fine"]]


LEAKY_SETUP = """
import glob
leaks = []
for path in glob.glob('/proc/*/environ'):
    try:
        if {canary!r}.encode() in open(path, 'rb').read():
            leaks.append(path)
    except OSError:
        pass
for path in {outside!r}:
    try:
        open(path, 'w').write('x')
        leaks.append(path)
    except OSError:
        pass
if leaks:
    raise SystemExit('escaped: ' + ' '.join(leaks))
from setuptools import setup
setup(py_modules=[])
"""


def test_a_requirement_built_from_source_sees_no_secret_and_writes_only_the_runtime(tmp_path, request, monkeypatch):
    """requirements.txt names a package in the repository; its setup.py runs at build. Two activities asking
    for this new runtime at once (a build and a validate of one commit on one worker) build it once."""
    worker = subprocess.Popen(["sleep", "300"], env={"TEMPORAL_API_KEY": CANARY})
    request.addfinalizer(worker.kill)
    outside = [str(tmp_path / "written-outside"), str(home() / "written-outside")]
    root = tree(
        tmp_path / "repo",
        {
            "requirements.txt": "./local_package\n",
            "local_package/pyproject.toml": '[build-system]\nrequires = ["setuptools"]\n'
            'build-backend = "setuptools.build_meta"\n[project]\nname = "local-package"\nversion = "0.1"\n',
            "local_package/setup.py": LEAKY_SETUP.format(canary=CANARY, outside=outside),
        },
    )

    builds, real = [], runtime_module._build
    monkeypatch.setattr(runtime_module, "_build", lambda *args: builds.append(args) or real(*args))
    start = threading.Barrier(2)

    def ask() -> Path:
        start.wait(timeout=30)
        return ensure_runtime(Runtime(), root / "requirements.txt")[1]

    with ThreadPoolExecutor(2) as pool:
        runtime, again = pool.map(lambda _: ask(), range(2))

    assert runtime == again and len(builds) == 1
    assert list(runtime.glob("lib/python*/site-packages/local_package-0.1.dist-info"))
    assert not any(Path(p).exists() for p in outside)
    assert not (root / "local_package" / "build").exists()  # it built in a copy


def test_one_commit_checked_out_to_a_private_scratch_folder_validates_in_the_sandbox(tmp_path):
    """`airagent validate --sha` exports the commit to a temporary directory, which is 0700: nobody must get in."""
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    fresh = f"fresh_{uuid.uuid4().hex[:8]}"  # not in the validation cache: it is parsed now
    sha = example.commit(repo, {f"dags/{fresh}.py": example.dag_file(fresh)}, "a fresh DAG", "finance")

    report = check_tree(make_pipeline(repo, tmp_path / "envs"), Path(repo.working_tree_dir), sha=sha)

    assert fresh in {d for f in report.files for d in f.dag_ids} and not report.broken, report.summary()
