"""A local environment that runs real Airflow: its files (LocalEnvironment) plus its components.

    <env>/airflow/     AIRFLOW_HOME: the SQLite metadata database, task logs
    <env>/secrets/     the JWT secret the components share and airagent's API login, mode 0600
    <env>/run/, logs/  the components' records and output (components.py)
    <env>/baseline.json  how the environment was before the roll in progress (soak compares against it)

The components read DAGs through `current`, so a dags-only roll is a swap of the link
and nothing restarts. Plugins, config and the runtime are read at start: a `restart`
or `rebuild` drains running tasks, restarts the scheduler, dag-processor and triggerer,
and brings a new api-server up beside the old one on a shared port (SO_REUSEPORT) before
the old one leaves, so the API never stops answering.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from activities import probes
from activities.airflow_api import AirflowApi, Credentials
from activities.targets import local_drain as drain
from activities.targets import served
from activities.targets.base import CONFIG_FILES, EnvironmentDown, NotLive
from activities.targets.components import Components, Process
from activities.targets.local import LocalEnvironment, Record
from activities.targets.local_metrics import EXPORTER, Exporter
from activities.targets.local_settings import (
    airflow_home,
    component_env,
    ensure_secrets,
    migrate,
    secrets_dir,
    write,
)
from airagent import tls
from airagent.config import LocalTarget, Probes
from airagent.models import Baseline, Expected, ProbeReading, Release, RolloutMode

WORKERS = ("scheduler", "dag-processor", "triggerer")
# Airflow's log server (a child of the scheduler and of the triggerer) listens on every interface, and
# Airflow has no setting for its host. It is not needed here: the api-server reads task and trigger logs
# from the folder all components share, so none is started, and every port listens on 127.0.0.1 only.
NO_LOG_SERVER = ("scheduler", "triggerer")
API_SLOTS = ("api-server-1", "api-server-2")
COMPONENTS = (*WORKERS, "api-server")

logger = logging.getLogger(__name__)


class LocalAirflow:
    def __init__(
        self, name: str, target: LocalTarget, probes: Probes | None = None, say: Callable[[str], None] | None = None
    ):
        """`say` hears what a stop waits for while it waits (the CLI prints it; a worker logs it)."""
        self.name, self.target, self.settings = name, target, probes or Probes()
        self.say = say or logger.info
        self.files = LocalEnvironment(target.path, name)
        self.components = Components(target.path)
        self.exporter = Exporter(target, self.components)
        self.home = airflow_home(target)
        self.secrets = secrets_dir(target)
        self.baseline_file = target.path / "baseline.json"

    # --- what runs ----------------------------------------------------------------------

    def processes(self) -> dict[str, Process]:
        """Each component's record; the api-server is whichever slot is live."""
        records = {p.name: p for p in self.components.records() if p.name != EXPORTER}
        apis = [records.pop(slot) for slot in API_SLOTS if slot in records]
        live_api = next((p for p in apis if p.alive), apis[0] if apis else None)
        if live_api:
            records["api-server"] = live_api
        return records

    def stopped(self) -> list[str]:
        """The components not running as the processes airagent started."""
        found = self.processes()
        return [name for name in COMPONENTS if not (name in found and found[name].alive)]

    def running(self) -> bool:
        return not self.stopped()

    def api(self, timeout: float | None = None) -> AirflowApi:
        return AirflowApi(
            f"http://127.0.0.1:{self.target.port}",
            Credentials.load(self.secrets / "api-login"),
            timeout=timeout or self.settings.timeout.total_seconds(),
        )

    # --- up and down ----------------------------------------------------------------------

    def up(self, runtime: Path | None = None) -> str:
        """Start whatever component is not running, on the live release (or `runtime`, before the first roll)."""
        release = self.files.live()
        if release is None and runtime is None:
            raise EnvironmentDown(f"{self.name} has no release yet; give a runtime to start it empty")
        ensure_secrets(self.target)
        root = release.runtime if release else runtime
        assert root is not None  # refused above when there is neither
        python = Path(root) / "bin" / "python"
        down = self.stopped()
        exporter = self.exporter.ensure()  # first: the components send to it as they start
        if down:
            self._migrate(python, release)
        found = self.processes()
        for name in down:
            if name in found:  # a component that died may leave helpers running in its group
                self.components.stop(found[name], 0)
            if name == "api-server":
                self._start_api(API_SLOTS[0], python, release)
            else:
                self._start(name, python, release)
        self.wait_healthy()
        started = [*([exporter] if exporter else []), *([f"started {', '.join(down)}"] if down else [])]
        return "; ".join(started) or "already running"

    def down(self) -> str:
        stopped = self._stop_workers()
        stopped += [self._stop(record) for slot in API_SLOTS if (record := self.components.record(slot))]
        stopped += [said] if (said := self.exporter.stop()) else []
        return f"stopped {'; '.join(stopped) or 'nothing'}"

    # --- roll and rollback ----------------------------------------------------------------------

    def roll(
        self, release: Release, mode: RolloutMode, dags: dict[str, list[str]], replaces: Expected | None = None
    ) -> tuple[Record, bool, str]:
        """Make `release` live and confirm Airflow runs it; returns the record, whether it changed, what was done.

        Refuses (UnexpectedLive) when another release than `replaces` names is live, before writing anything.
        """
        if not self.target.airflow:
            record, changed = self.files.roll(release, replaces)
            return record, changed, "files swapped"
        self.files.expect(release, replaces)  # before the baseline is written: a refused roll leaves no trace
        if not self.running():
            raise EnvironmentDown(self._down_message())
        self._keep_baseline(release.id)
        before, swapped = self.files.live(), datetime.now(UTC)
        record, changed = self.files.roll(release, replaces)  # checked again: taking the baseline takes a while
        installed = record.live
        assert installed is not None  # `release`, now live
        if mode == RolloutMode.dags_only and self._same_components(installed):
            return record, changed, self.confirm_dags(installed, dags, before, swapped)
        return record, changed, self.restart(installed)

    def rollback(self, to: str | None) -> tuple[Record, bool, str]:
        """Put back an earlier release, restarting components only where it needs other plugins, config or runtime."""
        if not self.target.airflow:
            record, changed = self.files.rollback(to)
            return record, changed, "files swapped"
        before, swapped = self.files.live(), datetime.now(UTC)
        record, changed = self.files.rollback(to)
        if record.live is None:
            return record, changed, self.down()
        if self.running() and self._same_components(record.live):
            return record, changed, self.confirm_dags(record.live, {}, before, swapped)
        return record, changed, self.restart(record.live)

    def baseline(self) -> Baseline | None:
        if not self.baseline_file.exists():
            return None
        return Baseline.model_validate_json(self.baseline_file.read_text())

    def _keep_baseline(self, release_id: str) -> None:
        """Taken once per release, before anything changes: a retried roll keeps the first reading."""
        current = self.baseline()
        if current and self.baseline_file.with_suffix(".release").read_text() == release_id:
            return
        with self.api() as api:
            baseline = probes.take_baseline(api, self.settings)
        write(self.baseline_file, baseline.model_dump_json(indent=2))
        write(self.baseline_file.with_suffix(".release"), release_id)

    def _same_components(self, release: Release) -> bool:
        """Whether the running components were started on a release with this one's plugins, config and runtime."""
        key = _restart_key(release)
        for process_ in self.processes().values():
            try:
                started_on = self.files.installed(process_.release) if process_.release else None
            except FileNotFoundError:  # its release is gone: what it runs on is unknown, so a restart is safe
                return False
            if not process_.alive or started_on is None or _restart_key(started_on) != key:
                return False
        return True

    # --- dags-only: confirm the new code is what Airflow serves ----------------------------------

    def confirm_dags(
        self, release: Release, dags: dict[str, list[str]], before: Release | None, swapped: datetime
    ) -> str:
        """Done when every DAG of the release is served and each changed file was parsed after the swap."""
        with self.api() as api:
            return served.confirm(api, release, dags, before, swapped, self.baseline(), self.target.live_timeout)

    # --- restart and rebuild ----------------------------------------------------------------------

    def restart(self, release: Release) -> str:
        """Drain, restart the workers, swap the api-server without a gap, and wait for health."""
        ensure_secrets(self.target)
        python = Path(release.runtime) / "bin" / "python"
        drained = self.drain()
        self.exporter.ensure()
        stopped = self._stop_workers()
        self._migrate(python, release)
        for name in WORKERS:
            self._start(name, python, release)
        self._swap_api(python, release)
        self.wait_healthy()
        return (
            f"{drained}; stopped {'; '.join(stopped)}; "
            f"restarted {', '.join(WORKERS)} and the api-server on {release.id}; healthy"
        )

    def drain(self) -> str:
        """Wait for running task instances to finish, up to the drain timeout; say what was waited for."""
        return drain.running_tasks(self.api, self.target.drain_timeout.total_seconds())

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.target.live_timeout.total_seconds()
        last = "no answer yet"
        with self.api(timeout=5) as api:
            while True:
                try:
                    verdict = probes.health(api.health())
                    if verdict.ok:
                        return
                    last = verdict.reading
                except httpx.HTTPError as err:
                    last = f"no answer ({type(err).__name__})"
                dead = [name for name, p in self.processes().items() if not p.alive]
                if dead or time.monotonic() > deadline:
                    why = (
                        f"{', '.join(dead)} exited (see {self.components.logs})"
                        if dead
                        else f"not healthy within {self.target.live_timeout}"
                    )
                    raise NotLive(f"{self.name}: {why}; health: {last}")
                time.sleep(0.5)

    def _swap_api(self, python: Path, release: Release) -> None:
        """Start the new api-server in the free slot; stop the old only once the new one answers."""
        old = [r for slot in API_SLOTS if (r := self.components.record(slot))]
        busy = {r.name: r for r in old if r.alive}
        free = [s for s in API_SLOTS if s not in busy]
        # Both busy only after a swap was cut short: take the slot not serving this release.
        slot = free[0] if free else next((n for n, r in busy.items() if r.release != release.id), API_SLOTS[0])
        if record := self.components.record(slot):
            self._stop(record)  # a leftover of an interrupted swap
        new = self._start_api(slot, python, release)
        self._wait_answers(new)
        for record in old:
            if record.name != slot:
                self._stop(record)

    def _wait_answers(self, process_: Process) -> None:
        deadline = time.monotonic() + self.target.live_timeout.total_seconds()
        url = f"http://127.0.0.1:{process_.port}/api/v2/monitor/health"
        while time.monotonic() < deadline:
            if not process_.alive:
                raise NotLive(f"{self.name}: the new api-server exited at start (see {self.components.logs})")
            try:
                if httpx.get(url, timeout=2, verify=tls.context()).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise NotLive(f"{self.name}: the new api-server did not answer within {self.target.live_timeout}")

    # --- probes ----------------------------------------------------------------------

    def probe(self, release: Release, baseline: Baseline | None) -> list[ProbeReading]:
        baseline = baseline or Baseline(at=datetime.now(UTC))
        found = self.processes()
        readings = [probes.components(found, list(COMPONENTS))]
        try:
            api = self.api()
        except FileNotFoundError as err:
            return [
                *readings,
                probes.reading("health", False, str(err), "an answer").model_copy(update={"error": True}),
            ]
        with api:
            return readings + probes.airflow_probes(api, baseline, self.settings)

    # --- starting components ----------------------------------------------------------------------

    def _start(self, name: str, python: Path, release: Release | None) -> Process:
        return self.components.start(
            name,
            [python.with_name("airflow"), name, *(["--skip-serve-logs"] if name in NO_LOG_SERVER else [])],
            component_env(self.name, self.target, python, release),
            cwd=self.home,
            release=release.id if release else None,
        )

    def _start_api(self, slot: str, python: Path, release: Release | None) -> Process:
        port = self.target.port + API_SLOTS.index(slot) + 1
        env = component_env(self.name, self.target, python, release)
        # Both slots listen on the shared port; each also on its own, so airagent can ask the new one directly.
        # gunicorn splits this like a shell line: quoted, a path with a space stays one argument.
        env["GUNICORN_CMD_ARGS"] = shlex.join(
            [
                "--reuse-port",
                *("--bind", f"127.0.0.1:{self.target.port}"),
                *("--bind", f"127.0.0.1:{port}"),
                *("--control-socket", str(self.components.run / f"{slot}.ctl")),
            ]
        )
        argv: list[str | Path] = [python.with_name("airflow"), "api-server", "--port", str(self.target.port)]
        return self.components.start(slot, argv, env, cwd=self.home, release=release.id if release else None, port=port)

    def _migrate(self, python: Path, release: Release | None) -> None:
        migrate(python.with_name("airflow"), component_env(self.name, self.target, python, release), self.home)

    # --- stopping components ----------------------------------------------------------------------

    def _stop_workers(self) -> list[str]:
        found = self.processes()
        return [self._stop(found[name]) for name in WORKERS if name in found]

    def _stop(self, process_: Process) -> str:
        """Stop one component, waiting only while it has something to finish; says what it waits for."""
        if not process_.alive:  # a dead component's helpers may linger in its group: nothing to wait for
            return f"{process_.name}: {self.components.stop(process_, 0)}"
        grace, why, keep_waiting = drain.QUIET_GRACE, "", None
        if process_.name == "scheduler":  # the one component that finishes work (its task instances) before it exits
            tasks = drain.SchedulerTasks(self.api, self.target.drain_timeout.total_seconds(), self._say)
            grace, why, keep_waiting = tasks.grace()
        bound = f"{why + '; ' if why else ''}up to {grace:.0f}s"
        self.say(f"{self.name}: stopping {process_.name} ({bound} before SIGKILL)")
        ended = self.components.stop(process_, grace, self._say, keep_waiting)
        return f"{process_.name} ({bound}): {ended}"

    def _say(self, line: str) -> None:
        self.say(f"{self.name}: {line}")

    def _down_message(self) -> str:
        return (
            f"{self.name} is not running ({', '.join(self.stopped())} down); start it with "
            f"`airagent env up {self.name}` before deploying"
        )


def _restart_key(release: Release) -> str:
    """What the components read only at start: the runtime and every file outside the DAG folder."""
    return _restart_key_of(release.bundle, release.runtime_hash, release.dag_folder, release.plugins_folder)


@functools.lru_cache(maxsize=64)
def _restart_key_of(bundle: str, runtime_hash: str, dag_folder: str, plugins_folder: str) -> str:
    """Kept per release: its folder never changes once made, and a roll asks for the key of each component's
    release, reading every file of a 20,000-file bundle each time otherwise."""
    digest = hashlib.sha256(runtime_hash.encode())
    dags = dag_folder.strip("/").removeprefix("./")
    dags, plugins = "" if dags == "." else dags, plugins_folder.strip("/") + "/"
    for path, content in sorted(_digests(Path(bundle)).items()):
        in_dags = not dags or (path + "/").startswith(dags + "/")  # DAGs at the root: every file is beside them
        if (not in_dags or path.startswith(plugins) or path in CONFIG_FILES) and path != "release.json":
            digest.update(f"{path}\0{content}\0".encode())
    return digest.hexdigest()


def _digests(root: Path) -> dict[str, str]:
    """Content hashes of a release's own files; Python's bytecode caches written beside them are not its own."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and p.name != "release.json" and "__pycache__" not in p.parts
    }
