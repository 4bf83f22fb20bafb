"""airagent.yaml: loading, resolving, and mistakes worded with file, line and field."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from textwrap import dedent

import pytest

from airagent.config import ConfigError, PipelineSettings, check, home, load, load_pipeline

AIRAGENT = str(Path(sys.executable).with_name("airagent"))

GOOD = """\
pipelines:
  main:
    repo: monorepo
    branch: main
    environments:
      - name: staging
        target: {type: local, path: envs/staging}
        soak: 5m
      - name: prod
        target: {type: local, path: /srv/airflow/prod, port: 8090}
        require_approval: true
"""


def write(tmp_path: Path, text: str, name: str = "airagent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text))
    return path


def pipeline_with(env_lines: str = "", pipeline_lines: str = "") -> str:
    """A one-pipeline file; extra lines go into the pipeline and into its only environment."""
    return (
        "pipelines:\n"
        "  main:\n" + "".join(f"    {line}\n" for line in pipeline_lines.splitlines()) + "    environments:\n"
        "      - name: staging\n"
        "        target: {type: local, path: envs/staging}\n"
        + "".join(f"        {line}\n" for line in env_lines.splitlines())
    )


def kubernetes_with(target: str = "", pipeline_lines: str = "", env: str = "staging") -> str:
    """A one-pipeline file whose only environment is kubernetes; `target` goes into its target's mapping."""
    return (
        "pipelines:\n"
        "  main:\n" + "".join(f"    {line}\n" for line in pipeline_lines.splitlines()) + "    environments:\n"
        f"      - name: {env}\n"
        "        target: {type: kubernetes, namespace: airflow" + (f", {target}" if target else "") + "}\n"
    )


def config_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    return str(err.value)


def test_good_file_resolves_relative_paths_against_its_folder(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", GOOD)
    monkeypatch.chdir(tmp_path)  # not the file's folder: the working directory must not matter
    config, base = load(path)
    assert base == (tmp_path / "conf").resolve()

    main = config.pipeline("main", base)
    assert main.repo == str((tmp_path / "conf" / "monorepo").resolve())
    assert main.environment("staging").target.path == (tmp_path / "conf" / "envs" / "staging").resolve()
    assert main.environment("prod").target.path == Path("/srv/airflow/prod")
    assert main.environment("staging").soak == timedelta(minutes=5)
    assert main.environment("prod").require_approval
    assert main.dag_folder == "dags" and main.classification.unmatched == "config"


def test_load_pipeline_matches_load(tmp_path):
    path = write(tmp_path, GOOD)
    config, base = load(path)
    assert load_pipeline("main", path) == config.pipeline("main", base)


def test_unknown_pipeline_names_the_declared_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown pipeline 'nightly'; declared pipelines: main"):
        load_pipeline("nightly", write(tmp_path, GOOD))


def test_missing_file_says_how_to_point_at_one(tmp_path):
    with pytest.raises(ConfigError, match="no such file.*--config"):
        load(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_line(tmp_path):
    message = config_error(tmp_path, "pipelines:\n  main:\n    branch: main\n   bad: [unclosed\n")
    assert message.startswith(f"{tmp_path / 'airagent.yaml'}:4: not valid YAML")
    assert "fix the syntax" in message


def test_unknown_field_names_file_line_and_field(tmp_path):
    message = config_error(tmp_path, pipeline_with(env_lines="soak_time: 5m"))
    assert message.startswith(f"{tmp_path / 'airagent.yaml'}:6: pipelines.main.environments.0.soak_time:")
    assert "did you mean 'soak'?" in message
    assert "airagent config schema" in message


def test_unknown_field_with_no_close_name_says_to_remove_it(tmp_path):
    message = config_error(tmp_path, pipeline_with(env_lines="colour: blue"))
    assert message.startswith(f"{tmp_path / 'airagent.yaml'}:6: pipelines.main.environments.0.colour:")
    assert "remove it or check its spelling" in message and "did you mean" not in message


@pytest.mark.parametrize(
    ("line", "where", "meant"),
    [
        ("branchh: main", "3: pipelines.main.branchh", "branch"),
        ("validation: {policies: {min_retrys: 1}}", "3: pipelines.main.validation.policies.min_retrys", "min_retries"),
    ],
)
def test_unknown_field_names_the_closest_known_one(tmp_path, line, where, meant):
    message = config_error(tmp_path, pipeline_with(pipeline_lines=line))
    assert message.startswith(f"{tmp_path / 'airagent.yaml'}:{where}: ")
    assert f"did you mean {meant!r}?" in message


def test_unknown_field_of_a_target_or_at_the_top_names_the_closest_known_one(tmp_path):
    text = kubernetes_with("rollout_deadlin: 5m") + "pipeline: {}\n"
    message = config_error(tmp_path, text)
    assert "pipelines.main.environments.0.target.rollout_deadlin: " in message
    assert "did you mean 'rollout_deadline'?" in message
    assert f"{tmp_path / 'airagent.yaml'}:6: pipeline: " in message and "did you mean 'pipelines'?" in message


def test_missing_environments_is_named(tmp_path):
    message = config_error(tmp_path, "pipelines:\n  main:\n    branch: main\n")
    assert message.startswith(f"{tmp_path / 'airagent.yaml'}:2: pipelines.main.environments: Field required")
    assert "add it" in message


def test_empty_environments_is_rejected(tmp_path):
    message = config_error(tmp_path, "pipelines:\n  main:\n    environments: []\n")
    assert "pipelines.main.environments" in message and "at least one environment" in message


@pytest.mark.parametrize("written", ["10x", "5 fortnights", "soon", "1h30", "pt5m", "''"])
def test_bad_duration_names_the_field_and_the_forms_that_work(tmp_path, written):
    message = config_error(tmp_path, pipeline_with(env_lines=f"soak: {written}"))
    assert message.startswith(f"{tmp_path / 'airagent.yaml'}:6: pipelines.main.environments.0.soak:")
    assert "is not a duration; give one like 30s, 5m, 1h30m or 2d" in message
    assert "identifier" not in message  # pydantic's own words name its parser, not the fix


@pytest.mark.parametrize("written", ["-5m", "-90", "-PT5M"])
def test_negative_duration_must_be_positive(tmp_path, written):
    message = config_error(tmp_path, pipeline_with(env_lines=f"soak: {written}"))
    assert message.startswith(f"{tmp_path / 'airagent.yaml'}:6: pipelines.main.environments.0.soak:")
    assert "is negative: a duration must be positive" in message


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("90", 90),
        ('"90"', 90),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1.5h", 5400),
        ("250ms", 0.25),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("2h", 7200),
        ("1d", 86400),
        ("30 seconds", 30),
        ("10 minutes", 600),
        ("1 hour 30 minutes", 5400),
        ("2 days", 172800),
        # ISO 8601 and pydantic's clock form, as workflow histories and older files hold them
        ("PT30S", 30),
        ("PT1H30M", 5400),
        ("P1DT2H", 93600),
        ("01:30:00", 5400),
    ],
)
def test_durations(tmp_path, written, seconds):
    config, _ = load(write(tmp_path, pipeline_with(env_lines=f"soak: {written}\nprobe_interval: {written}")))
    env = config.pipelines["main"].environments[0]
    assert env.soak == env.probe_interval == timedelta(seconds=seconds)


def test_durations_keep_the_form_workflow_histories_hold(tmp_path):
    """Settings travel in workflow history as pydantic writes them: that form stays, and reads back."""
    settings = load_pipeline("main", write(tmp_path, pipeline_with(env_lines="soak: 1h30m\nprobe_interval: 90")))
    data = json.loads(settings.model_dump_json())
    assert data["environments"][0]["soak"] == "PT1H30M" and data["environments"][0]["probe_interval"] == "PT1M30S"
    assert PipelineSettings.model_validate(data) == settings


def test_duplicate_environment_names(tmp_path):
    text = pipeline_with() + "      - name: staging\n        target: {type: local, path: envs/other}\n"
    message = config_error(tmp_path, text)
    assert "pipelines.main.environments" in message
    assert "environment names must be unique" in message


@pytest.mark.parametrize("folder", ["../outside", "dags/../../outside", "/etc/airflow"])
def test_dag_folder_outside_the_repository_is_rejected(tmp_path, folder):
    message = config_error(tmp_path, pipeline_with(pipeline_lines=f"dag_folder: {folder}"))
    assert f"{tmp_path / 'airagent.yaml'}:3: pipelines.main.dag_folder:" in message
    assert "must be a path inside the repository" in message


def test_dag_folder_is_normalised(tmp_path):
    config, _ = load(write(tmp_path, pipeline_with(pipeline_lines="dag_folder: ./airflow/dags/")))
    assert config.pipelines["main"].dag_folder == "airflow/dags"


def test_branch_starting_with_dash_is_rejected(tmp_path):
    """A branch becomes a git argument; '--upload-pack=x' must never read as an option."""
    message = config_error(tmp_path, pipeline_with(pipeline_lines="branch: --upload-pack=evil"))
    assert "pipelines.main.branch" in message and "must not start with '-'" in message


@pytest.mark.parametrize("line", ["branch: 5", "repo: 123", "dag_folder: 5", "plugins_folder: null"])
def test_non_string_ref_or_folder_is_a_config_error(tmp_path, line):
    message = config_error(tmp_path, pipeline_with(pipeline_lines=line))
    assert f"pipelines.main.{line.split(':')[0]}" in message


@pytest.mark.parametrize("name", ["Main", "has space", "-x"])
def test_pipeline_and_environment_names_stay_plain(tmp_path, name):
    message = config_error(tmp_path, pipeline_with().replace("name: staging", f"name: '{name}'"))
    assert "pipelines.main.environments.0.name" in message


@pytest.mark.parametrize(
    ("branch", "dag_ref", "env"),
    [
        ("main", "main", "staging"),
        ("main", "refs/heads/main", "staging"),
        ("refs/heads/main", "main", "staging"),
        ("release", "{env}", "release"),
    ],
)
def test_a_dag_ref_on_the_pipelines_own_branch_is_refused(tmp_path, branch, dag_ref, env):
    """airagent force-moves dag_ref to every release: on the branch it deploys from, it would rewrite it."""
    message = config_error(tmp_path, kubernetes_with(f"dag_ref: '{dag_ref}'", f"branch: '{branch}'", env))
    assert message.startswith(f"{tmp_path / 'airagent.yaml'}:6: pipelines.main.environments.0.target.dag_ref: ")
    assert f"is the pipeline's branch {branch!r}" in message and "'airagent/{env}' (the default)" in message


def test_the_default_dag_ref_and_one_beside_the_branch_load(tmp_path):
    for target in ("", "dag_ref: 'main-airflow'", "dag_ref: 'deploy/{env}'"):
        config, _ = load(write(tmp_path, kubernetes_with(target)))
        assert config.pipelines["main"].environments[0].name == "staging"


def test_a_dag_ref_with_another_placeholder_is_refused(tmp_path):
    message = config_error(tmp_path, kubernetes_with("dag_ref: 'airagent/{environment}'"))
    assert "pipelines.main.environments.0.target.dag_ref: 'airagent/{environment}': use {env}" in message


def test_one_api_login_per_environment(tmp_path):
    message = config_error(tmp_path, kubernetes_with("credentials_file: login, credentials_env: AIRFLOW_LOGIN"))
    assert "environments.0.target.credentials_env: give the API login in credentials_file or credentials_env" in (
        message
    )


def test_every_refusal_of_a_file_is_named_at_once(tmp_path):
    text = kubernetes_with("dag_ref: main, api_url: 'https://a:b@airflow'", "repo: 'https://u:p@git.example.com/r'")
    lines = config_error(tmp_path, text).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "pipelines.main.repo",
        "pipelines.main.environments.0.target.api_url",
        "pipelines.main.environments.0.target.dag_ref",
    ]


def test_a_good_file_has_no_warnings(tmp_path):
    assert check(write(tmp_path, GOOD))[2] == []


# --- the CLI ---------------------------------------------------------------------------


def airagent(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # the default terminal width
    return subprocess.run([AIRAGENT, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_cli_config_check_ok(tmp_path):
    result = airagent("config", "check", "--config", str(write(tmp_path, GOOD)))
    assert result.returncode == 0, result.stderr
    assert "pipeline main" in result.stdout and "staging → prod" in result.stdout


def test_cli_config_check_names_file_and_field_without_traceback(tmp_path):
    write(tmp_path, pipeline_with(env_lines="soak_time: 5m"), name="deploy.yaml")
    result = airagent("config", "check", "--config", "deploy.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "deploy.yaml:6: pipelines.main.environments.0.soak_time" in result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr


def test_cli_config_check_keeps_a_long_path_whole(tmp_path):
    folder = tmp_path / ("a-folder-with-a-long-name-" * 3)
    folder.mkdir()
    path = write(folder, pipeline_with(env_lines="soak_time: 5m"))
    result = airagent("config", "check", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}:6: pipelines.main.environments.0.soak_time" in result.stderr


def test_cli_config_check_missing_file(tmp_path):
    result = airagent("config", "check", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "absent.yaml" in result.stderr and "Traceback" not in result.stderr


def test_cli_config_schema_prints_json_schema():
    result = airagent("config", "schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["type"] == "object"
    assert "pipelines" in schema["properties"] and schema["required"] == ["pipelines"]
    assert schema["additionalProperties"] is False
    assert {"EnvironmentSettings", "Classification", "LocalTarget"} <= set(schema["$defs"])


def test_environments_running_airflow_on_one_host_need_their_own_ports(tmp_path):
    clash = GOOD.replace("port: 8090", "port: 8082")
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, clash))
    assert "airagent.yaml:5: pipelines.main.environments" in str(err.value)
    assert "staging and prod share ports" in str(err.value) and "at least 5 apart" in str(err.value)


def test_metrics_take_a_sixth_port(tmp_path):
    metered = GOOD.replace("path: envs/staging}", "path: envs/staging, metrics: {statsd: true}}")
    loaded, _ = load(write(tmp_path, metered.replace("port: 8090", "port: 8086")))  # staging: 8080 to 8085
    assert loaded.pipelines["main"].environments[0].target.metrics.statsd
    with pytest.raises(ConfigError, match="at least 6 apart"):
        load(write(tmp_path, metered.replace("port: 8090", "port: 8085")))


def test_the_cli_names_an_unreachable_temporal_and_exits_2(tmp_path):
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1", "AIRAGENT_HOME": str(tmp_path)}
    done = subprocess.run(
        [Path(sys.executable).with_name("airagent"), "pipeline", "status", "-p", "main"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot reach Temporal (127.0.0.1:1" in done.stderr and "Traceback" not in done.stderr


def test_airagent_dev_says_so_when_a_server_already_listens(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [Path(sys.executable).with_name("airagent"), "dev", "--port", str(port)],
            env={**os.environ, "AIRAGENT_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2 and f"already listens on localhost:{port}" in done.stderr, done.stderr


def test_home_is_airagent_home_then_the_projects_state_then_the_users(tmp_path, monkeypatch):
    """`make` keeps state in the project's `.airagent/`: the CLI run anywhere inside the project finds it."""
    project, user = tmp_path / "project", tmp_path / "user"
    (project / "dags" / "finance").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(user))
    monkeypatch.delenv("AIRAGENT_HOME")
    monkeypatch.chdir(project / "dags" / "finance")
    (project / ".airagent").mkdir()
    assert home() == user / ".airagent"  # an empty `.airagent/` is no state
    (project / ".airagent" / "runtimes").mkdir()
    assert home() == project / ".airagent"
    monkeypatch.setenv("AIRAGENT_HOME", str(tmp_path / "chosen"))
    assert home() == tmp_path / "chosen"


def test_the_readmes_airagent_yaml_loads_as_written(tmp_path):
    """What the README shows works when copied: notifications' `on:` stays a key (YAML 1.1 read it as True),
    and its analysis and smoke settings are read."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.startswith("runtime:"))
    (tmp_path / "airagent.yaml").write_text(example)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    pipeline = load_pipeline("main", tmp_path / "airagent.yaml")
    assert pipeline.notifications[0].on == ["failed", "rolled_back", "held"]
    staging = pipeline.environments[0]
    assert [m.name for m in staging.metrics().metrics] == ["health", "changed_dags", "smoke", "errors"]
    assert staging.smoke == "trigger"
