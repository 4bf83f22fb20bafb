"""The `build` stage: a release directory, the runtime venv it runs in, and for kubernetes its image.

The release's files come straight out of git (`git archive` of the commit), so no
shared working tree can race. The runtime is keyed by the hash of its inputs and
reused whenever they are unchanged; two builds of one runtime may race, the second
simply discards its copy.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import images, process
from airagent.config import PipelineSettings, Runtime, home
from airagent.models import BuildInput, Release
from airagent.repo import RepoError, open_repository, ref_of, resolve

UV = Path(sys.executable).with_name("uv")
# gunicorn lets a new api-server share the port with the old one during a restart (SO_REUSEPORT).
RUNTIME_EXTRAS = ["gunicorn"]


def runtime_hash(runtime: Runtime, requirements: bytes) -> str:
    spec = {"python": runtime.python, "airflow": runtime.airflow, "extras": RUNTIME_EXTRAS,
            "requirements": hashlib.sha256(requirements).hexdigest()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def ensure_runtime(runtime: Runtime, requirements: Path | None) -> tuple[str, Path]:
    """The runtime venv for these inputs, built with uv unless it already exists."""
    reqs = requirements.read_bytes() if requirements and requirements.is_file() else b""
    digest = runtime_hash(runtime, reqs)
    final = home() / "runtimes" / digest
    if (final / "runtime.json").exists():
        return digest, final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{digest}.{uuid.uuid4().hex[:8]}")
    try:
        process.run([_uv(), "venv", "--quiet", "--relocatable", "--python", runtime.python, tmp])
        install = [_uv(), "pip", "install", "--quiet", "--python", tmp / "bin" / "python",
                   f"apache-airflow=={runtime.airflow}", *RUNTIME_EXTRAS]
        if reqs:
            install += ["-r", requirements]
        process.run(install, timeout=1800)
        (tmp / "runtime.json").write_text(json.dumps({"hash": digest, **runtime.model_dump()}, indent=2))
        try:
            tmp.rename(final)
        except OSError:
            if not (final / "runtime.json").exists():
                raise
    except process.ProcessFailed as err:
        raise ApplicationError(
            f"building the runtime (Airflow {runtime.airflow}, Python {runtime.python}"
            f"{', ' + str(requirements.name) if reqs else ''}) failed: {err.output[-3000:]}",
            type="RuntimeBuildFailed", non_retryable=True,
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return digest, final


def _uv() -> str:
    return str(UV) if UV.exists() else shutil.which("uv") or "uv"


def export_commit(pipeline: PipelineSettings, sha: str, dest: Path) -> None:
    """The files of one commit, extracted with tarfile's `data` filter so no link escapes `dest`."""
    repo = open_repository(pipeline, fetch=False)
    buf = io.BytesIO()
    repo.archive(buf, treeish=sha, format="tar")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as err:
            raise ApplicationError(
                f"commit {sha[:12]}: {err.tarinfo.name} links outside the repository; "
                "replace the link with the files themselves",
                type="BadInput", non_retryable=True,
            ) from None


def inside(root: Path, relative: str, what: str, sha: str) -> Path:
    """A folder named in the config, checked to stay inside the release even through symlinks."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ApplicationError(
            f"commit {sha[:12]}: {what} {relative!r} resolves to {path}, outside the repository; "
            f"make {relative!r} a real folder in the repository",
            type="BadInput", non_retryable=True,
        )
    return path


def release_hash(pipeline: PipelineSettings, bundle: Path, sha: str) -> str:
    """The runtime hash a release is known by: the venv's inputs, plus the Dockerfile when the pipeline has
    `image:` (so it is also the image tag). One function, so CI's `airagent image tag` and the build agree."""
    requirements = bundle / pipeline.runtime.requirements
    digest = runtime_hash(pipeline.runtime, requirements.read_bytes() if requirements.is_file() else b"")
    if pipeline.image is not None:
        dockerfile = inside(bundle, pipeline.image.dockerfile, "image.dockerfile", sha)
        digest = images.image_hash(digest, dockerfile.read_bytes() if dockerfile.is_file() else b"")
    return digest


def image_tag(pipeline: PipelineSettings, sha: str | None = None) -> str:
    """`<repository>:<runtime hash>` of a commit (default the branch head), without building anything: the tag
    CI must build and push for the `external` builder."""
    assert pipeline.image is not None
    commit = resolve(open_repository(pipeline), pipeline, sha)
    with tempfile.TemporaryDirectory(prefix="airagent-tag-") as scratch:
        export_commit(pipeline, commit, Path(scratch))
        return f"{pipeline.image.repository}:{release_hash(pipeline, Path(scratch), commit)}"


@activity.defn(name="build")
def build(input: BuildInput) -> Release:
    pipeline = input.pipeline
    try:
        repo = open_repository(pipeline, fetch=False)
        sha = resolve(repo, pipeline, input.target)
    except RepoError as err:
        raise ApplicationError(str(err), type="BadInput", non_retryable=True) from None
    releases = home() / "releases" / pipeline.name
    scratch = releases / f".{sha[:12]}.{uuid.uuid4().hex[:8]}"
    try:
        export_commit(pipeline, sha, scratch / "bundle")
        bundle = scratch / "bundle"
        dag_folder = inside(bundle, pipeline.dag_folder, "dag_folder", sha)
        inside(bundle, pipeline.plugins_folder, "plugins_folder", sha)
        if not dag_folder.is_dir():
            raise ApplicationError(
                f"commit {sha[:12]}: dag_folder {pipeline.dag_folder!r} is not a folder in the repository; "
                "fix `dag_folder` in airagent.yaml",
                type="BadInput", non_retryable=True,
            )
        _, runtime = ensure_runtime(pipeline.runtime, bundle / pipeline.runtime.requirements)
        digest = release_hash(pipeline, bundle, sha)
        image = images.image_for(pipeline, digest, sha, input.image, ref_of(repo, pipeline, sha))
        release_id = f"{sha[:12]}-{digest[:8]}"
        final = releases / release_id
        release = Release(
            id=release_id, commit=sha, runtime_hash=digest, runtime=str(runtime),
            bundle=str(final / "bundle"), dag_folder=pipeline.dag_folder, plugins_folder=pipeline.plugins_folder,
            image=image,
        )
        if not (final / "release.json").exists():
            (scratch / "release.json").write_text(release.model_dump_json(indent=2))
            try:
                scratch.rename(final)
            except OSError:
                if not (final / "release.json").exists():
                    raise
        return release
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
