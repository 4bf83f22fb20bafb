"""Airflow's REST API (v2), as much of it as rolling and soaking need, with the simple auth manager's JWT.

The password is read by whoever builds the client (from the environment or a secret
file) and only ever travels in the token request's body; the token only in a header.
Neither is logged: httpx logs methods and URLs, never bodies or headers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from airagent import tls

PAGE = 100  # Airflow's default maximum page size


# The worker-wide login, for environments that name none of their own.
USERNAME_ENV, PASSWORD_ENV = "AIRAGENT_AIRFLOW_USERNAME", "AIRAGENT_AIRFLOW_PASSWORD"


class NoCredentials(FileNotFoundError):
    """An environment's Airflow login is missing or unreadable; the message says where it should be."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never show the password, even in a traceback
        return f"Credentials(username={self.username!r}, password=***)"

    @classmethod
    def load(
        cls, secret_file: Path | None, fix: str = "`airagent env up` creates it", env: str | None = None
    ) -> Credentials:
        """The environment's own login, `username:password` in its secret file or in its own variable, always wins;
        the worker-wide variables serve only an environment that has neither, so one environment's password
        never reaches another. `fix` says, in the error, where this kind of environment gets its login."""
        if secret_file is not None:
            try:
                text = secret_file.read_text()
            except FileNotFoundError:
                raise NoCredentials(f"no Airflow credentials: {secret_file} does not exist ({fix})") from None
            return cls._parse(text, str(secret_file), fix)
        if env is not None:
            if not os.environ.get(env):
                raise NoCredentials(f"no Airflow credentials: {env} is not set on this worker ({fix})")
            return cls._parse(os.environ[env], env, fix)
        if os.environ.get(PASSWORD_ENV):
            return cls(os.environ.get(USERNAME_ENV) or "airagent", os.environ[PASSWORD_ENV])
        raise NoCredentials(
            f"no Airflow credentials: set {PASSWORD_ENV} (and {USERNAME_ENV}) on the worker, "
            f"or give the environment its own login ({fix})"
        )

    @classmethod
    def _parse(cls, text: str, source: str, fix: str) -> Credentials:
        username, colon, password = text.strip().partition(":")
        if not (username and colon and password):
            # Never quote it: a bare password would show in the message.
            raise NoCredentials(f"no Airflow credentials: {source} does not hold `username:password` ({fix})")
        return cls(username, password)


class AirflowApi:
    def __init__(self, base_url: str, credentials: Credentials, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, verify=tls.context())
        self._token: str | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> AirflowApi:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        """Needs no token: answers even when auth is what broke."""
        response = self.http.get("/api/v2/monitor/health")
        response.raise_for_status()
        return response.json()

    def dags(self) -> list[dict[str, Any]]:
        return self._all("/api/v2/dags", "dags", {"exclude_stale": "true"})

    def tagged(self, tags: list[str]) -> set[str]:
        """The DAGs carrying any of these tags."""
        params = {"tags": tags, "tags_match_mode": "any", "exclude_stale": "true"}
        return {d["dag_id"] for d in self._all("/api/v2/dags", "dags", params)}

    def import_errors(self) -> list[dict[str, Any]]:
        return self._all("/api/v2/importErrors", "import_errors")

    def task_instances(
        self,
        states: list[str],
        ended_after: datetime | None = None,
        ended_before: datetime | None = None,
        dag_id: str = "~",
    ) -> int:
        """How many task instances, of one DAG or (`~`) every DAG, in any run, are in these states (and ended in the
        window)."""
        params: dict[str, Any] = {"state": states, "limit": 1}
        if ended_after:
            params["end_date_gte"] = ended_after.isoformat()
        if ended_before:
            params["end_date_lte"] = ended_before.isoformat()
        return self._get(f"/api/v2/dags/{quote(dag_id, safe='~')}/dagRuns/~/taskInstances", params)["total_entries"]

    def deployed(self, dag_id: str) -> bool:
        """Whether the DAG is in the files Airflow serves now: one whose file is gone is stale, or unknown."""
        try:
            return not self._get(f"/api/v2/dags/{quote(dag_id, safe='')}", {}).get("is_stale", False)
        except httpx.HTTPStatusError as err:
            if err.response.status_code == 404:
                return False
            raise

    def failed_dags(self, ended_after: datetime) -> list[str]:
        """The DAGs whose task instances failed since `ended_after` (from the first page: enough to trace)."""
        body = self._get(
            "/api/v2/dags/~/dagRuns/~/taskInstances",
            {"state": ["failed"], "end_date_gte": ended_after.isoformat(), "limit": PAGE},
        )
        return sorted({t["dag_id"] for t in body["task_instances"]})

    def dag_versions(self, dag_id: str) -> list[int]:
        """The version numbers Airflow keeps of a DAG, ascending (none for a DAG it does not know): a new one each
        time a parse changes a DAG that has run; a change to one that never ran rewrites its latest version."""
        try:
            found = self._all(f"/api/v2/dags/{quote(dag_id, safe='')}/dagVersions", "dag_versions")
        except httpx.HTTPStatusError as err:
            if err.response.status_code == 404:
                return []
            raise
        return sorted(v["version_number"] for v in found)

    def changed_since(self, since: datetime, most: int = PAGE) -> list[str]:
        """The DAGs with a version made after `since`: Airflow re-serialized them, so their file or a module they
        import changed. Versions are read newest first (their ids are time-ordered UUIDv7) until one is older."""
        changed: list[str] = []
        offset = 0
        while len(changed) < most:
            body = self._get("/api/v2/dags/~/dagVersions", {"order_by": ["-id"], "limit": PAGE, "offset": offset})
            versions = body["dag_versions"]
            offset += len(versions)
            for version in versions:
                if datetime.fromisoformat(version["created_at"]) < since:
                    return changed
                if version["dag_id"] not in changed:
                    changed.append(version["dag_id"])
            if not versions or offset >= body["total_entries"]:
                break
        return changed[:most]

    def finished_tasks(
        self,
        dag_id: str,
        *,
        versions: list[int] | None = None,
        ended_after: datetime | None = None,
        ended_before: datetime | None = None,
        limit: int = PAGE,
    ) -> list[dict[str, Any]]:
        """A DAG's task instances in success or failed, newest first, at most `limit`: on these DAG versions (None:
        any; an empty list: none) and ended in the window. Bounded, as what the soak judges lands in history."""
        if versions == []:
            return []
        params: dict[str, Any] = {"state": ["success", "failed"], "order_by": ["-end_date", "id"]}
        if versions:
            params["version_number"] = versions
        if ended_after:
            params["end_date_gte"] = ended_after.isoformat()
        if ended_before:
            params["end_date_lte"] = ended_before.isoformat()
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/~/taskInstances"
        return self._all(path, "task_instances", params, most=limit)

    def trigger(self, dag_id: str, conf: dict[str, Any], note: str, run_id: str | None = None) -> str:
        """Start a run of the DAG now, with this conf and note (and run id, else Airflow's); returns its run id. A
        paused DAG's run is made all the same but waits, queued, until someone unpauses the DAG (its scheduler
        starts no run of a paused DAG): unpausing is its owners' choice, never airagent's."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf, "note": note}
        if run_id:
            body["dag_run_id"] = run_id
        response = self._send("POST", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns", json=body)
        response.raise_for_status()
        return response.json()["dag_run_id"]

    def running(self) -> list[str]:
        """The task instances running now, as `dag.task (run)`."""
        body = self._get("/api/v2/dags/~/dagRuns/~/taskInstances", {"state": ["running"], "limit": PAGE})
        return [f"{t['dag_id']}.{t['task_id']} ({t['dag_run_id']})" for t in body["task_instances"]]

    def reparse(self, file_token: str) -> bool:
        """Ask the DAG processor to parse one file on its next loop rather than its next round; the token is the
        `file_token` of a DAG from that file. False when Airflow has no DAG from that file (it is new to it)."""
        response = self._send("PUT", f"/api/v2/parseDagFile/{quote(file_token, safe='')}")
        if response.status_code == 404:
            return False
        response.raise_for_status()
        return True

    def _all(
        self, path: str, key: str, params: dict[str, Any] | None = None, most: int | None = None
    ) -> list[dict[str, Any]]:
        """Every item, page by page, or the first `most`. An item that arrives meanwhile shifts the pages: one seen
        twice is kept once, by its id where it has one."""
        items: list[dict[str, Any]] = []
        seen: set[Any] = set()
        offset = 0
        while most is None or len(items) < most:
            page = PAGE if most is None else min(PAGE, most - len(items))
            body = self._get(path, {**(params or {}), "limit": page, "offset": offset})
            offset += len(body[key])
            for item in body[key]:
                if "id" in item and item["id"] in seen:
                    continue
                seen.add(item.get("id"))
                items.append(item)
            if not body[key] or offset >= body["total_entries"]:
                break
        return items[:most]

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        response = self._send("GET", path, params)
        response.raise_for_status()
        return response.json()

    def _send(self, method: str, path: str, params: dict[str, Any] | None = None, json: Any = None) -> httpx.Response:
        response = self.http.request(method, path, params=params, json=json, headers=self._auth())
        if response.status_code == 401:  # the token expired: one fresh try
            self._token = None
            response = self.http.request(method, path, params=params, json=json, headers=self._auth())
        return response

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            response = self.http.post(
                "/auth/token", json={"username": self.credentials.username, "password": self.credentials.password}
            )
            if response.status_code in (401, 403):
                raise PermissionError(
                    f"{self.base_url} refused airagent's credentials "
                    f"(user {self.credentials.username!r}); check the secret"
                )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}
