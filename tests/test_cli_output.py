"""What a person reads: ids whole at 80 columns, a stopped environment said to be down with its fix."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime

from typer.testing import CliRunner

from airagent.models import ConductorState, ConductorStatus, TrainRecord, TrainState, TrainStatus, TrainSummary
from interface.cli import app
from interface.display import render, render_history, render_pipeline
from interface.terminal import plain_console

AT = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
IDS = [f"train/{pipeline}/371a2b3c4d5e" for pipeline in ("main", "marketing-and-finance-nightly")]


def shown(table, width: int = 80) -> str:
    """As the CLI prints it."""
    console = plain_console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_history_keeps_every_train_id_whole_at_80_columns():
    trains = [
        TrainSummary(id=i, pipeline="p", sha="371a2b3c4d5e", state="rolled_back", stage="soak", started=AT, ended=AT)
        for i in IDS
    ]
    text = shown(render_history(trains))
    assert all(i in text for i in IDS), text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_train_and_pipeline_status_keep_ids_whole_at_80_columns():
    train = TrainStatus(pipeline="p", target="371a2b3c4d5e" * 3, state=TrainState.noop, reason="nothing to do")
    assert f"{IDS[1]}: noop" in shown(render(IDS[1], train))

    records = [TrainRecord(id=i, sha="371a2b3c4d5e", state="succeeded", started=AT, ended=AT) for i in IDS]
    text = shown(render_pipeline(ConductorStatus(pipeline="p", state=ConductorState(trains=records))))
    assert all(i in text for i in IDS), text


def test_env_status_of_a_stopped_environment_says_down_and_how_to_start_it(tmp_path):
    config = tmp_path / "airagent.yaml"
    config.write_text(
        "pipelines:\n  main:\n    repo: .\n    environments:\n"
        f"      - name: staging\n        target: {{type: local, path: {tmp_path / 'staging'}, port: 18680}}\n"
    )
    status = CliRunner().invoke(app, ["env", "status", "staging", "-c", str(config)])
    as_json = CliRunner().invoke(app, ["env", "status", "staging", "-c", str(config), "--json"])

    assert status.exit_code == 1 and "staging: down" in status.output, status.output
    assert f"start it with `airagent env up staging -c {config}`" in status.output.replace("\n", "")
    assert "ConnectError" not in status.output
    data = json.loads(as_json.output)
    assert as_json.exit_code == 1 and data["state"] == "down" and not data["running"]
    assert data["fix"] == f"airagent env up staging -c {config}"


def test_the_console_script_knows_which_module_registers_each_command():
    """`main` imports only the invoked command's module: COMMANDS must name, for every command, the module that
    registers it, or that command would not exist when run."""
    from typer.main import get_group

    from interface import cli

    found = {}
    for name, command in get_group(app).commands.items():
        # a group of commands is registered where its commands are
        callback = command.callback or next(iter(command.commands.values())).callback
        found[name] = callback.__module__.rsplit(".", 1)[1]
    assert found == cli.COMMANDS


def test_validate_runs_without_importing_the_temporal_client(tmp_path):
    """What a DAG author runs on every save starts without the seconds the client and the workflows take."""
    script = (
        "import sys; sys.argv = ['airagent', 'validate', '--help']\n"
        "from interface.cli import main\n"
        "import atexit, os\n"
        "real = os._exit\n"
        "def leave(code):\n"
        "    heavy = [m for m in ('interface.client', 'workflows.train', 'scipy', 'kubernetes') if m in sys.modules]\n"
        "    print('HEAVY', heavy)\n"
        "    real(code)\n"
        "os._exit = leave\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr
    assert "--changed" in done.stdout
