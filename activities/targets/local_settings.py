"""What each component of a local Airflow starts with: its environment, its database, and the secrets the
components share. airagent's own login is made here once, kept private, and never logged."""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import secrets
from pathlib import Path

from activities import process
from activities.targets.base import EnvironmentDown, config_file
from activities.targets.local_metrics import statsd_settings
from airagent.config import LocalTarget
from airagent.models import Release

USER = "airagent"
# Settings airagent chooses unless the release's airflow.cfg chooses otherwise.
DEFAULTS = {
    ("core", "executor"): "LocalExecutor",
    ("core", "load_examples"): "False",
    ("core", "simple_auth_manager_users"): f"{USER}:admin",
    ("dag_processor", "refresh_interval"): "5",
    # How often the processor looks whether the listing is due (default 5 s): a new DAG file, which Airflow cannot be
    # asked to parse, is found within refresh_interval rather than up to twice that. One small query a second.
    ("dag_processor", "bundle_refresh_check_interval"): "1",
    ("api", "workers"): "1",
    # Save a changed DAG at the parse that saw it (default: not within 30 s of its last save): soak judges a changed
    # DAG on the version that parse makes, and a train 20 s after the last one would otherwise have none yet.
    ("core", "min_serialized_dag_update_interval"): "0",
}


def component_env(name: str, target: LocalTarget, python: Path, release: Release | None) -> dict[str, str]:
    """The environment of one component process: Airflow's settings for this environment and release."""
    home, secret_dir = airflow_home(target), secrets_dir(target)
    port = target.port
    live = target.path / "current"
    env = {
        "PATH": f"{python.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", str(home)),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(live / (release.dag_folder if release else "dags")),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(live / (release.plugins_folder if release else "plugins")),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(name, target),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__SERVER_TYPE": "gunicorn",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # No log server runs (local_airflow.NO_LOG_SERVER); its ports stay this environment's own, so what the
        # api-server asks there for a running task's log reaches no other environment's.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port + 3),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + 4),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(secret_dir / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": (secret_dir / "jwt-secret").read_text().strip(),
        "AIRFLOW__API__SECRET_KEY": (secret_dir / "jwt-secret").read_text().strip(),
    }
    config = config_file(release)
    chosen = configparser.RawConfigParser()
    if config:
        env["AIRFLOW_CONFIG"] = str(config)
        chosen.read(config)
    for (section, key), value in DEFAULTS.items():
        if not chosen.has_option(section, key):
            env[f"AIRFLOW__{section.upper()}__{key.upper()}"] = value
    return env | statsd_settings(target)


def airflow_home(target: LocalTarget) -> Path:
    return target.path / "airflow"


def secrets_dir(target: LocalTarget) -> Path:
    return target.path / "secrets"


def database_url(name: str, target: LocalTarget) -> str:
    variable = target.database_url_env
    if variable:
        if not os.environ.get(variable):
            raise EnvironmentDown(
                f"{name}: target.database_url_env names {variable}, which is not set on "
                "this worker; export it or remove the setting to use SQLite"
            )
        return os.environ[variable]
    # A writer waits up to 30 s for SQLite's lock, not pysqlite's 5: on a busy host the api-server's write (a
    # triggered run) lost to the scheduler's with "database is locked" and answered 500.
    return f"sqlite:///{airflow_home(target) / 'airflow.db'}?timeout=30"


def ensure_secrets(target: LocalTarget) -> None:
    """A JWT secret the components share, and airagent's own login, made once and kept private."""
    secret_dir = secrets_dir(target)
    secret_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    jwt = secret_dir / "jwt-secret"
    if not jwt.exists():
        write(jwt, secrets.token_urlsafe(32), private=True)
    login = secret_dir / "api-login"
    if not login.exists():
        password = secrets.token_urlsafe(24)
        write(secret_dir / "passwords.json", json.dumps({USER: password}), private=True)
        write(login, f"{USER}:{password}", private=True)


def write(path: Path, text: str, private: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    if private:
        tmp.chmod(0o600)
    os.replace(tmp, path)


def migrate(airflow: Path, env: dict[str, str], home: Path) -> bool:
    """`airflow db migrate`, unless this database was last migrated by this same runtime (True when it ran).

    A runtime's packages never change, so its schema is already there; the command costs a whole Airflow start
    (4-8 s here) on every restart roll. The marker holds a digest, not the database's URL, which may hold a password.
    """
    url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    marker = home / "migrated"
    key = hashlib.sha256(f"{airflow.parent.parent}\n{url}".encode()).hexdigest()
    sqlite = url.removeprefix("sqlite:///").split("?")[0] if url.startswith("sqlite:///") else None
    if marker.is_file() and marker.read_text() == key and (sqlite is None or Path(sqlite).is_file()):
        return False
    home.mkdir(parents=True, exist_ok=True)
    process.run([airflow, "db", "migrate"], env=env, cwd=home, timeout=600)
    marker.write_text(key)
    return True
