"""One train on the real dev server with every kind of secret configured, then a grep of everything a person or
Temporal keeps (the worker's log, every CLI answer, every workflow's history and description, the dev server's
database and the deployer's state files) for each secret's value: none may appear anywhere."""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from activities.targets.local_settings import ensure_secrets
from airagent import example
from airagent.config import load_pipeline
from airagent.config.base import home
from airagent.devserver import binary
from airagent.models import train_id
from tests.devserver import WorkerProcess, agent, cli_env, dev_server  # noqa: F401  fixtures

pytestmark = [pytest.mark.devserver, pytest.mark.slow]

CLI_TIMEOUT = 90  # seconds, for any one command


class Receiver:
    """Loopback HTTP: keeps each request's method, path, query and body, and answers 204."""

    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def _keep(self):
                length = int(self.headers.get("Content-Length") or 0)
                url = urlsplit(self.path)
                body = json.loads(self.rfile.read(length)) if length else None
                seen.append((self.command, url.path, parse_qs(url.query), body))
                self.send_response(204)
                self.end_headers()

            do_GET = do_POST = _keep

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def at(self, path: str) -> list[tuple]:
        return [s for s in self.seen if s[1] == path]

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def canary(kind: str) -> str:
    return f"canary-{kind}-{secrets.token_hex(8)}"


def config_yaml(envs: Path) -> str:
    def environment(name: str) -> str:
        return (
            f"      - name: {name}\n"
            f"        target: {{type: local, path: {envs / name}, airflow: false}}\n"
            "        soak: 1s\n"
            "        probe_interval: 1s\n"
            "        probes:\n"
            "          webhooks:\n"
            "            - {name: smoke, url_env: AIRAGENT_SMOKE_URL}\n"
        )

    return (
        'runtime: {python: "3.11", airflow: "3.3.2"}\n'
        "pipelines:\n"
        "  main:\n"
        "    repo: .\n"
        "    branch: main\n"
        "    dag_folder: dags\n"
        "    poll_interval: 30s\n"
        "    teams:\n"
        '      marketing: ["dags/marketing/*"]\n'
        '      finance: ["dags/finance/*"]\n'
        "    environments:\n"
        f"{environment('staging')}{environment('prod')}"
        "    notifications:\n"
        "      - {type: slack, url_env: AIRAGENT_SLACK_URL}\n"
        "      - {type: webhook, url_env: AIRAGENT_WEBHOOK_URL}\n"
    )


def strings(node, depth: int = 0) -> Iterator[str]:
    """Every string in a JSON document, and what each base64 one decodes to (payloads, search attributes, memos)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings(value, depth)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value, depth)
    elif isinstance(node, str):
        yield node
        if depth < 3 and len(node) >= 8:
            try:
                decoded = base64.b64decode(node, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return
            yield decoded
            try:
                yield from strings(json.loads(decoded), depth + 1)
            except ValueError:
                pass


def json_text(raw: str) -> str:
    """A JSON answer with its base64 decoded alongside; `temporal -o json` may print one document or a stream."""
    found = [raw]
    decoder, at = json.JSONDecoder(), 0
    while at < len(raw):
        while at < len(raw) and raw[at].isspace():
            at += 1
        if at >= len(raw):
            break
        try:
            document, at = decoder.raw_decode(raw, at)
        except ValueError:
            break
        found += strings(document)
    return "\n".join(found)


def temporal(address: str, *args: str) -> str:
    """The `temporal` CLI as an operator reads with it, without airagent's TEMPORAL_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    done = subprocess.run(
        [binary("temporal"), *args, "--address", address, "--namespace", "default", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert done.returncode == 0, f"temporal {' '.join(args)}: {done.stderr}"
    return done.stdout


def executions(address: str, expected: set[str], timeout: float = 20) -> list[tuple[str, str]]:
    """Every (workflow id, run id) in the namespace, once visibility shows at least the `expected` ids."""
    deadline = time.monotonic() + timeout
    while True:
        listed = json.loads(temporal(address, "workflow", "list") or "[]")
        runs = [(w["execution"]["workflowId"], w["execution"]["runId"]) for w in listed]
        if expected <= {wf for wf, _ in runs}:
            return runs
        assert time.monotonic() < deadline, f"visibility never listed {expected - {wf for wf, _ in runs}}: {runs}"
        time.sleep(0.5)


def files_under(root: Path, skip: frozenset[str] = frozenset(), since: float | None = None) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        parts = set(path.relative_to(root).parts)
        if path.is_file() and not path.is_symlink() and not parts & skip:
            if since is None or path.stat().st_mtime >= since:
                yield path


async def test_no_secret_reaches_logs_cli_history_or_state(dev_server, agent, cli_env, tmp_path, receiver):
    started = time.time() - 1
    envs = tmp_path / "envs"
    repo = example.create(tmp_path / "repo", envs, airflow=False)
    example.commit(repo, {"airagent.yaml": config_yaml(envs)}, "platform: notifications and smoke probes")
    config = tmp_path / "repo" / "airagent.yaml"
    pipeline = load_pipeline("main", config)
    sha = repo.head.commit.hexsha

    # Each environment's own API login, made as airagent makes it (0600, <path>/secrets/api-login). airagent writes
    # it on `env up` or a restart only, never for `airflow: false`, so here the test has it made before the train.
    logins = {}
    for env in pipeline.environments:
        ensure_secrets(env.target)
        logins[env.name] = (env.target.path / "secrets" / "api-login").read_text()
    tokens = {name: canary(name) for name in ("webhook", "slack", "smoke")}
    urls = {
        "AIRAGENT_WEBHOOK_URL": f"{receiver.base}/hooks/{tokens['webhook']}",
        "AIRAGENT_SLACK_URL": f"{receiver.base}/services/T0/B0/{tokens['slack']}",
        "AIRAGENT_SMOKE_URL": f"{receiver.base}/smoke/{tokens['smoke']}",
    }
    variables = {
        **urls,
        "AIRAGENT_AIRFLOW_USERNAME": canary("airflow-user"),
        "AIRAGENT_AIRFLOW_PASSWORD": canary("airflow-password"),
        "TEMPORAL_API_KEY": canary("temporal-api-key"),
        # An API key turns TLS on in temporalio.envconfig; the plain dev server speaks none, so say so.
        "TEMPORAL_TLS": "false",
    }
    needles = {
        **{f"{env} login password": login.split(":", 1)[1] for env, login in logins.items()},
        **{f"{name} ({value})": value for name, value in variables.items() if name != "TEMPORAL_TLS"},
        **{f"{name} token": token for name, token in tokens.items()},
    }
    # The CLI is given every secret too: whatever it read from its environment would travel into history.
    env = {**cli_env, **variables}
    kept: dict[str, str] = {}  # where -> what it keeps

    def cli(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [binary("airagent"), *args],
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        kept[f"`airagent {' '.join(args)}` output{' with ' + str(extra) if extra else ''}"] = done.stdout + done.stderr
        return done

    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        checked = cli("config", "check", "-c", str(config))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        deployed = cli("deploy", "--pipeline", "main", "--wait", "--timeout", "60", "-c", str(config))
        assert deployed.returncode == 0 and "succeeded" in deployed.stdout, deployed.stdout + deployed.stderr
        train = train_id("main", sha)
        for args in (
            ("status", train),
            ("status", "--pipeline", "main", "--json"),
            ("pipeline", "status", "--pipeline", "main"),
            ("pipeline", "status", "--pipeline", "main", "--json"),
            ("history", "--pipeline", "main"),
            ("history", "--pipeline", "main", "--json"),
        ):
            done = cli(*args)
            assert done.returncode == 0, f"airagent {' '.join(args)}: {done.stdout}{done.stderr}"
        assert json.loads(kept["`airagent status --pipeline main --json` output"])["state"] == "succeeded"
        # Where a mistake would print it: the API key without TLS off fails to connect (no matter how it ends).
        cli("history", "--pipeline", "main", extra={"TEMPORAL_TLS": ""})
    finally:
        worker.stop()

    # The secrets were really used: notifications delivered, each environment's smoke probe asked.
    hook = receiver.at(f"/hooks/{tokens['webhook']}")
    assert [(m, b["state"], b["commit"]) for m, _, _, b in hook] == [("POST", "succeeded", sha)]
    slack = receiver.at(f"/services/T0/B0/{tokens['slack']}")
    assert len(slack) == 1 and "succeeded" in slack[0][3]["text"]
    smoke = receiver.at(f"/smoke/{tokens['smoke']}")
    assert len(smoke) >= 2 and {q["commit"][0] for _, _, q, _ in smoke} == {sha}
    for name, login in logins.items():  # airagent kept each login as it was
        assert (envs / name / "secrets" / "api-login").read_text() == login

    kept["worker log"] = (tmp_path / "worker.log").read_text(errors="replace")
    for wf, run in executions(dev_server.address, {"pipeline/main", train}):
        kept[f"history of {wf} run {run}"] = json_text(
            temporal(dev_server.address, "workflow", "show", "-w", wf, "-r", run)
        )
        described = temporal(dev_server.address, "workflow", "describe", "-w", wf, "-r", run)
        kept[f"description of {wf} run {run}"] = json_text(described)
    for path in files_under(dev_server.state_dir):  # the server's database (and its WAL) and log
        kept[f"dev server file {path}"] = path.read_bytes().decode("latin-1")
    # The deployer's state: the environments' files but their secrets; under the AIRAGENT_HOME the tests share,
    # this train's release and validation record, and what the validation cache and parsers wrote meanwhile
    # (the runtimes and uv's cache of packages are left out).
    state = [
        *files_under(envs, skip=frozenset({"secrets"})),
        *(p for d in (home() / "releases" / "main").glob(f"{sha[:12]}-*") for p in files_under(d)),
        *(home() / "validation-cache" / "commits").glob(f"{sha}-*"),
        *files_under(home() / "validation-cache" / "files", since=started),
        *files_under(home() / "parsers", since=started),
    ]
    assert {"manifest.json", "release.json"} <= {p.name for p in state}
    for path in state:
        kept[f"state file {path}"] = path.read_bytes().decode("latin-1")

    # The grep can see into what it searches: the settings' variable names (no secret) are found where they travel.
    def found(name: str, where: str) -> bool:
        return any(name in text for w, text in kept.items() if w.startswith(where))

    for where in ("history of train/", "history of pipeline/main", "dev server file"):
        assert found("AIRAGENT_SMOKE_URL", where) and found("AIRAGENT_SLACK_URL", where), where

    leaks = [f"{what} in {where}" for where, text in kept.items() for what, value in needles.items() if value in text]
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)
