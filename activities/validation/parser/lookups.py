"""What a DAG file sees at parse time: placeholders for what it looks up, and no network or database."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

PLACEHOLDER = "airagent-placeholder"
MOVE_IT = "read it inside a task, where it runs per run instead of on every parse"


class NetworkAtParseTime(RuntimeError):
    """A DAG file reached for the network while being parsed."""


class DatabaseAtParseTime(RuntimeError):
    """A DAG file opened a database connection while being parsed."""


class MissingPlaceholder(LookupError):
    """A lookup at parse time with placeholders off and no value configured for it."""


class Lookups:
    """Placeholders for Variables, Connections and environment variables, and the guards on network and database.

    Installed in the parent after the warm-up, so every forked worker inherits them and
    Airflow's own start-up is not affected.
    """

    def __init__(self, folder: Path, settings: dict):
        self.folder = str(folder) + os.sep
        self.enabled = settings.get("enabled", True)
        self.variables = settings.get("variables", {})
        self.connections = settings.get("connections", {})
        self.env = settings.get("env", {})
        self.used: set[str] = set()

    def variable(self, key: str, default, deserialize_json: bool, no_default):
        if key in self.variables:
            value = self.variables[key]
            return json.loads(value) if deserialize_json and isinstance(value, str) else value
        if default is not no_default:
            return default
        if not self.enabled:
            raise MissingPlaceholder(
                f"Variable.get({key!r}) at parse time, and validation.placeholders.variables has no {key!r} "
                f"(placeholders are off); give it a value there, or {MOVE_IT}"
            )
        self.used.add(f"variable {key}")
        return {} if deserialize_json else f"{PLACEHOLDER}-{key}"

    def connection(self, conn_id: str, cls):
        if conn_id in self.connections:
            given = self.connections[conn_id]
            if isinstance(given, str):
                return (
                    cls.from_uri(given, conn_id=conn_id)
                    if hasattr(cls, "from_uri")
                    else cls(conn_id=conn_id, uri=given)
                )
            return cls(conn_id=conn_id, **given)
        if not self.enabled:
            raise MissingPlaceholder(
                f"connection {conn_id!r} looked up at parse time, and validation.placeholders.connections has no "
                f"{conn_id!r} (placeholders are off); give it a value there, or {MOVE_IT}"
            )
        self.used.add(f"connection {conn_id}")
        return cls(
            conn_id=conn_id,
            conn_type="generic",
            host=f"{PLACEHOLDER}.invalid",
            login=PLACEHOLDER,
            password=PLACEHOLDER,
            schema=PLACEHOLDER,
            port=1,
        )

    def getenv(self, real, key, default=None):
        if not sys._getframe(2).f_code.co_filename.startswith(self.folder):
            return real(key, default)  # Airflow's own reads see the real environment
        if key in self.env:
            return self.env[key]
        value = real(key, None)
        if value is not None or default is not None or not self.enabled:
            return value if value is not None else default
        self.used.add(f"env {key}")
        return f"{PLACEHOLDER}-{key}"

    def install(self) -> None:
        from airflow.models.connection import Connection as ModelConnection
        from airflow.models.variable import Variable as ModelVariable
        from airflow.sdk.definitions.connection import Connection
        from airflow.sdk.definitions.variable import Variable

        lookups, unset = self, object()

        def sdk_variable(cls, key, default=unset, deserialize_json=False):
            return lookups.variable(key, default, deserialize_json, unset)

        def model_variable(cls, key, default_var=unset, deserialize_json=False, team_name=None):
            return lookups.variable(key, default_var, deserialize_json, unset)

        Variable.get = classmethod(sdk_variable)
        ModelVariable.get = classmethod(model_variable)
        Connection.get = classmethod(lambda cls, conn_id: lookups.connection(conn_id, Connection))
        ModelConnection.get_connection_from_secrets = classmethod(
            lambda cls, conn_id, team_name=None: lookups.connection(conn_id, ModelConnection)
        )

        environ_type: Any = type(os.environ)  # its `get` is replaced below, which mypy refuses on a typed class
        real_getenv, real_get = os.getenv, environ_type.get
        os.getenv = lambda key, default=None: lookups.getenv(real_getenv, key, default)
        environ_type.get = lambda env, key, default=None: lookups.getenv(lambda k, d: real_get(env, k, d), key, default)
        self._guard_network_and_database()

    @staticmethod
    def _guard_network_and_database() -> None:
        def network(*args, **kwargs):
            where = next((a for a in args if isinstance(a, tuple)), args[0] if args else "")
            raise NetworkAtParseTime(
                f"this DAG file reached for the network ({where!r}) while being parsed; the validator blocks it "
                f"because the DAG processor parses every file every few seconds: {MOVE_IT}"
            )

        def database(*args, **kwargs):
            raise DatabaseAtParseTime(
                "this DAG file opened a database connection while being parsed; the validator blocks it because "
                f"the DAG processor parses every file every few seconds and has no database in Airflow 3: {MOVE_IT}"
            )

        for name in ("connect", "connect_ex"):
            setattr(socket.socket, name, lambda self, address, _n=network: _n(address))
        socket.create_connection = network
        socket.getaddrinfo = network
        import sqlite3

        sqlite3.connect = database
        try:
            from sqlalchemy.engine import Engine
        except ImportError:
            return
        Engine.connect = database
        Engine.raw_connection = database
