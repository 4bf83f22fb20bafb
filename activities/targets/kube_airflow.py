"""A kubernetes environment as the roll and soak stages see it: the driver (kubernetes.py) plus Airflow's API.

The driver moves pod templates, the chart's ConfigMap and the DAG ref; this module gives
it what it needs from the train's world: the git ref in the pipeline's repository, a
`confirm` that asks the api-server whether it serves the release's commit (every DAG's
`bundle_version`, which GitDagBundle sets to the commit it parsed), and a baseline read
before the roll. Probes are the API's (health, import errors, task failure rate) and the
pods' (crash loops, restarts since the roll).

Without `api_url` on the target the API is not asked: a roll is done when the pods are,
and soak watches the pods only.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx

from activities import probes
from activities.airflow_api import AirflowApi, Credentials
from activities.targets.base import NotLive, Rolled, RolloutFailed, config_file
from activities.targets.kube_client import connect
from activities.targets.kube_git import GitRef
from activities.targets.kube_preview import CFG_OVERLAY, airflow_cfg
from activities.targets.kube_record import Rollout, RollReport
from activities.targets.kube_rollout import FATAL_WAITING
from activities.targets.kubernetes import KubernetesEnvironment
from airagent.config import EnvironmentSettings, KubernetesTarget, PipelineSettings
from airagent.models import Baseline, Expected, Marker, ProbeReading, Release, RolloutMode
from airagent.repo import open_repository


class KubernetesAirflow:
    def __init__(self, settings: EnvironmentSettings, pipeline: PipelineSettings | None = None):
        assert isinstance(settings.target, KubernetesTarget)
        self.name, self.target, self.settings = settings.name, settings.target, settings.probes
        self.pipeline = pipeline
        self.dags: dict[str, list[str]] = {}
        self.env = KubernetesEnvironment(
            self.name, self.target, connect(self.target), _LazyRef(self), confirm=self._confirm, observe=self._observe
        )

    # --- roll and rollback -----------------------------------------------------------------

    def roll(
        self, release: Release, mode: RolloutMode, dags: dict[str, list[str]], replaces: Expected | None = None
    ) -> Rolled:
        if mode == RolloutMode.rebuild and not release.image:
            raise RolloutFailed(
                f"release {release.id} changes the runtime but has no image; give the pipeline "
                f"`image:` settings (builder external: pass the image CI built, tagged "
                f"{release.runtime_hash}, to deploy or notify)",
                reason="NoImage",
            )
        self.dags = dags
        config = None if mode == RolloutMode.dags_only else self._config(release)
        report = self.env.roll(
            Rollout(
                release=release.id,
                commit=release.commit,
                mode=mode,
                image=release.image if mode == RolloutMode.rebuild else None,
                config=config,
            ),
            replaces,
        )
        return _from_report(report, mode.value)

    def rollback(self, to: str | None) -> Rolled:
        self.dags = {}
        return _from_report(self.env.rollback(to), "rollback")

    def preflight(self) -> list[str]:
        return self.env.preflight()

    def _config(self, release: Release) -> dict[str, str] | None:
        """The chart ConfigMap's data with the release's airflow.cfg, and the options the ConfigMap's annotation
        `airagent.io/airflow-cfg` sets over it (a preview's); None when the release has none."""
        found = config_file(release)
        current = self.env.read_config()
        if found is None or current is None:
            return None
        text = found.read_text()
        options = (current["metadata"].get("annotations") or {}).get(CFG_OVERLAY)
        if options:
            text = airflow_cfg(text, json.loads(options))
        return {**(current.get("data") or {}), "airflow.cfg": text}

    def drop_dag_ref(self) -> bool:
        """Delete the DAG ref (a preview's, once its namespace is gone); False when it was already gone."""
        return self.env.ref.delete()

    # --- the record ------------------------------------------------------------------------

    def marker(self) -> Marker:
        record = self.env.record()
        return Marker(
            live=record.live,
            previous=record.previous,
            live_commit=record.live_commit,
            rolled=list(dict.fromkeys(s.release for s in record.history if s.release)),
        )

    def baseline(self) -> Baseline | None:
        return self.env.record().baseline

    # --- confirm and baseline through the API --------------------------------------------

    def airflow_api(self) -> AirflowApi | None:
        return self.api()

    def api(self) -> AirflowApi | None:
        if not self.target.api_url:
            return None
        fix = (
            f"`credentials_file` (a mounted Secret holding username:password) or `credentials_env` of "
            f"environment {self.name}'s target in airagent.yaml"
        )
        return AirflowApi(
            self.target.api_url,
            Credentials.load(self.target.credentials_file, fix, env=self.target.credentials_env),
            timeout=self.settings.timeout.total_seconds(),
        )

    def _observe(self) -> Baseline:
        baseline = Baseline(at=datetime.now(UTC), restarts=self._restarts())
        api = self.api()
        if api is None:
            return baseline
        with api:
            taken = probes.take_baseline(api, self.settings)
        return taken.model_copy(update={"restarts": baseline.restarts})

    def _confirm(self, release: str | None, commit: str | None) -> None:
        """Done when each DAG of the release is served at `commit` and no new import error appeared."""
        api = self.api()
        if api is None or commit is None:
            return
        expected = {dag_id for ids in self.dags.values() for dag_id in ids}
        known = self.baseline()
        deadline = time.monotonic() + self.target.live_timeout.total_seconds()
        with api:
            while True:
                try:
                    missing = not_live(api.dags(), api.import_errors(), expected, commit, known)
                except (httpx.HTTPError, ValueError, KeyError) as err:
                    missing = [f"an answer from the API ({type(err).__name__})"]
                if not missing:
                    return
                if time.monotonic() > deadline:
                    raise NotLive(
                        f"{self.name}: release {release} (commit {commit[:12]}) not served within "
                        f"{self.target.live_timeout}: still waiting for {', '.join(missing[:10])}"
                    )
                time.sleep(2)

    # --- probes ----------------------------------------------------------------------------

    def probe(self, release: Release, baseline: Baseline | None) -> list[ProbeReading]:
        record = self.env.record()
        ok = record.live == release.id and record.pending is None
        readings = [
            probes.reading(
                "marker",
                ok,
                f"record: live {record.live}, pending {record.pending}",
                f"live {release.id}, nothing pending",
            )
        ]
        if not ok:
            return readings
        baseline = baseline or record.baseline or Baseline(at=datetime.now(UTC))
        readings.append(pods(self._pods(), baseline))
        api = self.api()
        if api is not None:
            with api:
                readings += probes.airflow_probes(api, baseline, self.settings)
        return readings

    def _pods(self) -> list[dict]:
        """The pods of the workloads airagent rolls, matched by each workload's selector."""
        selectors = [obj["spec"]["selector"].get("matchLabels") or {} for obj in self.env.read_workloads().values()]
        # The client's types promise a V1PodList; with _preload_content=False it returns the HTTP response.
        response = self.env.core.list_namespaced_pod(self.target.namespace, _preload_content=False)
        listed = json.loads(response.data)  # type: ignore[attr-defined]
        return [
            p
            for p in listed["items"]
            if any(all((p["metadata"].get("labels") or {}).get(k) == v for k, v in s.items()) for s in selectors)
        ]

    def _restarts(self) -> dict[str, int]:
        return {p["metadata"]["name"]: _restart_count(p) for p in self._pods()}


class _LazyRef:
    """The DAG ref, opened only when a roll first needs it: reading the record needs no repository."""

    def __init__(self, owner: KubernetesAirflow):
        self.owner = owner
        self._ref: GitRef | None = None

    def _open(self) -> GitRef:
        if self._ref is None:
            pipeline = self.owner.pipeline
            if pipeline is None:
                raise LookupError(
                    f"{self.owner.name}: moving the DAG ref needs the pipeline's repository; "
                    "this request came without it (a train started by an older worker): retry it "
                    "from a new train"
                )
            repo = open_repository(pipeline)  # fetched: the commit to move to may be one another worker made
            remote = self.owner.target.dag_remote or (pipeline.repo if pipeline.repo_is_url else None)
            self._ref = GitRef(
                repo.working_tree_dir or repo.git_dir,
                self.owner.target.dag_ref.format(env=self.owner.name),
                remote=remote,
            )
        return self._ref

    def read(self) -> str | None:
        return self._open().read()

    def move(self, commit: str) -> None:
        self._open().move(commit)

    def delete(self) -> bool:
        return self._open().delete()


def not_live(
    dags: list[dict], errors: list[dict], expected: set[str], commit: str, baseline: Baseline | None
) -> list[str]:
    """What is still missing for `commit` to be live: unserved DAGs, DAGs at another commit, new import errors."""
    served = {d["dag_id"]: d for d in dags}
    checked = expected or set(served)
    missing = [f"{d} (not served)" for d in sorted(checked) if d not in served]
    missing += [
        f"{d} (at {str(served[d].get('bundle_version'))[:12]})"
        for d in sorted(checked)
        if d in served and served[d].get("bundle_version") != commit
    ]
    before = set(baseline.import_errors) if baseline else set()
    missing += [f"import error in {f}" for f in sorted({str(e.get("filename")) for e in errors} - before)]
    return missing


def pods(found: list[dict], baseline: Baseline) -> ProbeReading:
    """No pod of the rolled workloads crash-looping or unable to start, and none restarted since the roll."""
    threshold = f"no pod in {', '.join(sorted(FATAL_WAITING))}, no container restart since the roll"
    stuck, restarted = [], []
    for pod in found:
        name = pod["metadata"]["name"]
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        reasons = FATAL_WAITING & {((c.get("state") or {}).get("waiting") or {}).get("reason") for c in statuses}
        if reasons:
            stuck.append(f"{name} {'/'.join(sorted(reasons))}")
        if (more := _restart_count(pod) - baseline.restarts.get(name, 0)) > 0:
            restarted.append(f"{name} +{more}")
    if stuck or restarted:
        return probes.reading(
            "pods", False, "; ".join(filter(None, [", ".join(stuck), ", ".join(restarted)])), threshold
        )
    return probes.reading("pods", True, f"{len(found)} pods running, no restarts", threshold)


def _restart_count(pod: dict) -> int:
    return sum(c.get("restartCount", 0) for c in (pod.get("status") or {}).get("containerStatuses") or [])


def _from_report(report: RollReport, what: str) -> Rolled:
    if not report.changed:
        return Rolled(report.live, report.previous, False, "already live")
    patched = f"patched {', '.join(report.patched)}" if report.patched else "no pod template patched"
    return Rolled(
        report.live,
        report.previous,
        True,
        f"{what}: {patched}" + (f"; {'; '.join(report.rollout)}" if report.rollout else ""),
    )
