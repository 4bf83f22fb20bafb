"""Secrets never leave: refused in URLs of airagent.yaml, warned about in placeholders, and each environment's
Airflow login reaches that environment only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from activities.airflow_api import NoCredentials
from activities.targets.kube_airflow import KubernetesAirflow
from activities.targets.local_airflow import LocalAirflow
from activities.targets.local_settings import ensure_secrets
from airagent.config import EnvironmentSettings, KubernetesTarget, LocalTarget, check, load
from airagent.config.checks import looks_generated
from tests.kube import cluster as kube
from tests.test_config import AIRAGENT, config_error, kubernetes_with, pipeline_with, write

TOKEN = "ghp_T3EVPQLrGiGLJQVdKaAiBSfikklgcXelM2QR"  # made up, shaped like a GitHub token


# --- credentials in URLs are refused ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "carried"),
    [
        ("https://bob:hunter22@github.com/org/mono.git", "a password"),
        ("ssh://git:hunter22@github.com/org/mono.git", "a password"),
        ("deploy:hunter22@github.com:org/mono.git", "a password"),  # git's scp-like form
        (f"https://{TOKEN}@github.com/org/mono.git", "a token as its user name"),
        ("https://gitlab.example.com/org/mono.git?private_token=hunter22", "a token in its query (private_token=)"),
    ],
)
def test_a_repo_url_with_credentials_is_refused_naming_the_field_and_the_fix(tmp_path, url, carried):
    message = config_error(tmp_path, pipeline_with(pipeline_lines=f"repo: '{url}'"))
    assert message.startswith(f"{tmp_path / 'airagent.yaml'}:3: pipelines.main.repo: the URL carries {carried}")
    assert "SSH key" in message and "credential helper" in message and "image.git_secret" in message
    assert "hunter22" not in message and TOKEN not in message


@pytest.mark.parametrize(
    ("target", "field", "fix"),
    [
        ("api_url: 'https://admin:hunter22@airflow.example.com'", "api_url", "credentials_file"),
        ("api_url: 'https://airflow.example.com/?access_token=hunter22'", "api_url", "credentials_env"),
        ("dag_remote: 'https://x:hunter22@github.com/org/mono.git'", "dag_remote", "credential helper"),
    ],
)
def test_kubernetes_urls_with_credentials_are_refused(tmp_path, target, field, fix):
    message = config_error(tmp_path, kubernetes_with(target))
    assert f"airagent.yaml:5: pipelines.main.environments.0.target.{field}: the URL carries" in message
    assert fix in message and "hunter22" not in message


def test_a_clone_context_with_credentials_names_the_git_secret(tmp_path):
    image = "image: {repository: registry.example.com/airflow, context: 'https://oauth2:hunter22@gitlab.com/o/r.git'}"
    message = config_error(tmp_path, pipeline_with(pipeline_lines=image))
    assert "airagent.yaml:3: pipelines.main.image.context: the URL carries a password" in message
    assert "image.git_secret" in message and "hunter22" not in message


@pytest.mark.parametrize(
    "url",
    [
        "git@github.com:org/mono.git",
        "ssh://git@github.com/org/mono.git",
        "https://github.com/org/mono.git",
        "https://deploy@bitbucket.org/org/mono.git",  # a user name alone: git asks its credential helper
        "https://github.com/org/mono.git?ref=main",
    ],
)
def test_urls_without_credentials_load(tmp_path, url):
    config, _ = load(write(tmp_path, pipeline_with(pipeline_lines=f"repo: '{url}'")))
    assert config.pipelines["main"].repo == url


@pytest.mark.parametrize(
    ("pipeline_lines", "env_lines", "field", "line"),
    [
        ("notifications: [{url_env: 'https://hooks.slack.com/services/T0/B0/hunter22'}]", "", "notifications.0", 3),
        (
            "",
            "probes: {webhooks: [{name: smoke, url_env: 'https://x.io/hunter22'}]}",
            "environments.0.probes.webhooks.0",
            6,
        ),
    ],
)
def test_a_url_written_where_a_variable_name_belongs_is_refused_without_echoing_it(
    tmp_path, pipeline_lines, env_lines, field, line
):
    message = config_error(tmp_path, pipeline_with(env_lines, pipeline_lines))
    assert message.startswith(f"{tmp_path / 'airagent.yaml'}:{line}: pipelines.main.{field}.url_env: not the name")
    assert "hunter22" not in message and "https" not in message


def test_database_and_credentials_variables_must_be_names(tmp_path):
    local = pipeline_with().replace("path: envs/staging}", "path: envs/staging, database_url_env: 'postgres://u:p@db'}")
    assert "environments.0.target.database_url_env: not the name of an environment variable" in config_error(
        tmp_path, local
    )
    kubernetes = kubernetes_with("credentials_env: 'admin:hunter22'")
    message = config_error(tmp_path, kubernetes)
    assert "environments.0.target.credentials_env: not the name" in message and "hunter22" not in message


# --- placeholders that look like real secrets are warned about ---------------------------


PLACEHOLDERS = """\
pipelines:
  main:
    validation:
      placeholders:
        connections:
          warehouse: "postgres://u:hunter22@wh/db"
          api: {conn_type: http, host: api, password: hunter22}
          plain: "postgres://u@wh/db"
        variables:
          stripe: "sk_live_51HxQbR2eZvKYlo2C8xTqP9aB"
          config: '{"region": "eu-west-1", "token": "TOKEN"}'
          bucket: raw-data
          job: ledger_daily_2024_finance_v2
          run_id: 123e4567-e89b-12d3-a456-426614174000
        env: {API_KEY: d5154a2d409fd8f3f095ddb6b4e58aa4, REGION: eu-west-1, PIPELINE: MyDataPipelineV2Production2024}
    environments:
      - name: staging
        target: {type: local, path: envs/staging}
""".replace("TOKEN", TOKEN)


def test_placeholders_that_look_like_real_secrets_are_warned_about_not_refused(tmp_path):
    path = write(tmp_path, PLACEHOLDERS)
    load(path)  # a warning never stops a load
    _, _, warnings = check(path)
    found = [w.removeprefix(f"{path}:").split(": ", 2) for w in warnings]
    at = "pipelines.main.validation.placeholders"
    assert sorted((int(line), field, message.split(";")[0]) for line, field, message in found) == [
        (6, f"{at}.connections.warehouse", "looks like a real secret (a URL with a password)"),
        (7, f"{at}.connections.api.password", "looks like a real secret (a password)"),
        (10, f"{at}.variables.stripe", "looks like a real secret (a long random string)"),
        (11, f"{at}.variables.config", "looks like a real secret (a long random string)"),
        (15, f"{at}.env.API_KEY", "looks like a real secret (a long random string)"),
    ]
    assert all("train's history" in message and "made-up value" in message for *_, message in found)
    assert all("hunter22" not in w and TOKEN not in w for w in warnings)


def test_config_check_shows_warnings_and_still_passes(tmp_path):
    path = write(tmp_path, PLACEHOLDERS)
    result = subprocess.run(
        [AIRAGENT, "config", "check", "--config", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"warning: {path}:6: pipelines.main.validation.placeholders.connections.warehouse: looks like" in (
        result.stderr
    )
    assert "pipeline main" in result.stdout


@pytest.mark.parametrize(
    ("text", "generated"),
    [
        (TOKEN, True),
        ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", True),
        ("4c103117afc788e220342408f0d9b8cb", True),
        ("ledger_daily_2024_finance_v2", False),
        ("MyDataPipelineV2Production2024", False),
        ("s3://Bucket/Path2024/Report_Q1_2024_Final.csv", False),
        ("dags/Finance2024/LedgerDailyV2Report.py", False),
        ("_" * 30, False),
        ("123e4567-e89b-12d3-a456-426614174000", False),
        ("short1Ab", False),
    ],
)
def test_what_looks_generated(text, generated):
    assert looks_generated(text) is generated


# --- each environment's own Airflow login wins ----------------------------------------------


@pytest.fixture
def worker_login(monkeypatch):
    """The worker-wide login, set as on a worker that serves prod."""
    monkeypatch.setenv("AIRAGENT_AIRFLOW_USERNAME", "prod-admin")
    monkeypatch.setenv("AIRAGENT_AIRFLOW_PASSWORD", "prod-password")


def kubernetes(tmp_path: Path, name: str, **settings) -> KubernetesAirflow:
    config = kube.kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")  # never asked: nothing is requested
    target = KubernetesTarget(namespace="airflow", kubeconfig=config, api_url="http://airflow:8080", **settings)
    return KubernetesAirflow(EnvironmentSettings(name=name, target=target))


def login(env: KubernetesAirflow | LocalAirflow) -> tuple[str, str]:
    api = env.api()
    assert api is not None
    with api:
        return api.credentials.username, api.credentials.password


def test_an_environment_with_its_own_login_never_gets_the_worker_wide_one(tmp_path, monkeypatch, worker_login):
    (tmp_path / "staging-login").write_text("staging-user:staging-password\n")
    monkeypatch.setenv("STAGING_AIRFLOW_LOGIN", "staging-env-user:pass:with:colons")
    from_file = kubernetes(tmp_path, "staging", credentials_file=tmp_path / "staging-login")
    from_env = kubernetes(tmp_path, "staging", credentials_env="STAGING_AIRFLOW_LOGIN")
    assert login(from_file) == ("staging-user", "staging-password")
    assert login(from_env) == ("staging-env-user", "pass:with:colons")
    assert login(kubernetes(tmp_path, "prod")) == ("prod-admin", "prod-password")  # names none: the worker's


def test_a_missing_own_login_fails_instead_of_taking_the_worker_wide_one(tmp_path, monkeypatch, worker_login):
    monkeypatch.delenv("STAGING_LOGIN", raising=False)
    for settings, named in [
        ({"credentials_file": tmp_path / "absent"}, f"{tmp_path / 'absent'} does not exist"),
        ({"credentials_env": "STAGING_LOGIN"}, "STAGING_LOGIN is not set on this worker"),
    ]:
        with pytest.raises(NoCredentials) as err:
            kubernetes(tmp_path, "staging", **settings).api()
        assert named in str(err.value) and "environment staging's target" in str(err.value)


def test_no_login_anywhere_names_every_way_to_give_one(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRAGENT_AIRFLOW_PASSWORD", raising=False)
    with pytest.raises(NoCredentials) as err:
        kubernetes(tmp_path, "staging").api()
    assert all(s in str(err.value) for s in ("AIRAGENT_AIRFLOW_PASSWORD", "credentials_file", "credentials_env"))


def test_a_login_without_a_colon_is_refused_without_quoting_it(tmp_path):
    (tmp_path / "login").write_text("hunter22\n")
    with pytest.raises(NoCredentials) as err:
        kubernetes(tmp_path, "staging", credentials_file=tmp_path / "login").api()
    assert "does not hold `username:password`" in str(err.value) and "hunter22" not in str(err.value)


def test_a_local_environment_keeps_the_login_it_made(tmp_path, worker_login):
    target = LocalTarget(path=tmp_path / "staging")
    ensure_secrets(target)
    made = (tmp_path / "staging" / "secrets" / "api-login").read_text().split(":")
    assert login(LocalAirflow("staging", target)) == (made[0], made[1])
