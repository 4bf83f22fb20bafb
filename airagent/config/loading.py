"""Reading `airagent.yaml`: one clear message naming the file, the line and the fix, or the checked config."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from airagent.config import checks
from airagent.config.analysis import PROVIDERS
from airagent.config.base import Model, Name, is_url
from airagent.config.errors import ConfigError
from airagent.config.pipeline import Classification, PipelineDeclaration, PipelineSettings, Runtime
from airagent.config.targets import TARGET_TYPES, EnvironmentSettings, LocalTarget

DEFAULT_FILE = "airagent.yaml"


class _Loader(yaml.SafeLoader):
    """YAML 1.2's booleans, only `true` and `false`: YAML 1.1 also reads on, off, yes and no as booleans, which
    made a notification's `on:` key the boolean True."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class AirAgentConfig(Model):
    classification: Classification = Classification()
    runtime: Runtime = Runtime()
    pipelines: dict[Name, PipelineDeclaration]

    def pipeline(self, name: str, base: Path) -> PipelineSettings:
        if name not in self.pipelines:
            raise ConfigError(f"unknown pipeline {name!r}; declared pipelines: {', '.join(self.pipelines)}")
        decl = self.pipelines[name]
        repo = decl.repo if is_url(decl.repo) else str((base / decl.repo).resolve())
        envs = [_resolved(e, base) for e in decl.environments]
        return PipelineSettings(
            name=name,
            repo=repo,
            branch=decl.branch,
            dag_folder=decl.dag_folder,
            plugins_folder=decl.plugins_folder,
            allow_history_rewrite=decl.allow_history_rewrite,
            isolation=decl.isolation,
            sandbox=decl.sandbox,
            poll_interval=decl.poll_interval,
            environments=envs,
            windows=decl.windows,
            notifications=decl.notifications,
            teams=decl.teams,
            validation=decl.validation,
            image=decl.image,
            previews=decl.previews,
            classification=decl.classification or self.classification,
            runtime=decl.runtime or self.runtime,
        )


def _resolved(env: EnvironmentSettings, base: Path) -> EnvironmentSettings:
    """Relative paths of a target mean the file's folder; a kubernetes target's names mean the cluster."""
    target = env.target
    if isinstance(target, LocalTarget):
        target = target.model_copy(update={"path": (base / target.path.expanduser()).resolve()})
    else:
        paths = {
            f: (base / p.expanduser()).resolve()
            for f in ("kubeconfig", "credentials_file")
            if (p := getattr(target, f)) is not None
        }
        target = target.model_copy(update=paths)
    return env.model_copy(update={"target": target})


def load(path: Path | str = DEFAULT_FILE) -> tuple[AirAgentConfig, Path]:
    """Read and check the file; returns the config and the folder relative paths start from."""
    config, base, _ = check(path)
    return config, base


def check(path: Path | str = DEFAULT_FILE) -> tuple[AirAgentConfig, Path, list[str]]:
    """`load`, and the warnings: what the file may say but likely should not, each worded like an error."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; create it or pass --config PATH") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', err)}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'pipelines' key at the top")
    try:
        config = AirAgentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, path, text)) from None
    refused = checks.refusals(config.pipelines)
    if refused:
        raise ConfigError("\n".join(_at(path, text, loc, message) for loc, message in refused))
    warned = [_at(path, text, loc, message) for loc, message in checks.warnings(config.pipelines)]
    return config, path.parent.resolve(), warned


def load_pipeline(name: str, path: Path | str = DEFAULT_FILE) -> PipelineSettings:
    config, base = load(path)
    return config.pipeline(name, base)


def _describe(err: ValidationError, path: Path, text: str) -> str:
    errors = err.errors()
    return "\n".join(
        _at(path, text, _untagged(tuple(e["loc"])), f"{e['msg']}{_hint(e)}") for e in errors if not _moot(e, errors)
    )


def _moot(error: ErrorDetails, errors: list[ErrorDetails]) -> bool:
    """An analysis written in place that is wrong is not meant as an analysis' name: that reading's error says
    nothing."""
    *parent, last = error["loc"]
    meant = (*parent, "Analysis")
    return last == "constrained-str" and any(tuple(e["loc"][: len(meant)]) == meant for e in errors)


def _at(path: Path, text: str, loc: tuple, message: str) -> str:
    """`file:line: field: message`, the line of the field's YAML node when it has one."""
    line = _line_of(text, loc)
    where = f"{path}:{line}" if line else str(path)
    return f"{where}: {'.'.join(str(p) for p in loc) or '(top level)'}: {message}"


def _untagged(loc: tuple) -> tuple:
    """A location without the unions' tags: people wrote `target.namespace` and `analysis.metrics.0.query`."""
    return tuple(p for i, p in enumerate(loc) if not (i and _tag(loc[: i + 1])))


def _tag(loc: tuple) -> bool:
    *before, p = loc
    if before[-1] == "target":
        return p in TARGET_TYPES
    if before[-1] == "analysis":
        return p == "Analysis"
    return len(before) > 1 and before[-2] == "metrics" and isinstance(before[-1], int) and p in PROVIDERS


def _hint(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        *parent, key = error["loc"]
        known = _fields_at(AirAgentConfig, tuple(parent)) or _fields_at(AirAgentConfig, _untagged(tuple(parent)))
        close = difflib.get_close_matches(str(key), known, n=1)
        if close:
            return f"; did you mean {close[0]!r}? (see `airagent config schema`)"
        return "; remove it or check its spelling (see `airagent config schema`)"
    if error["type"] == "missing":
        return "; add it (see `airagent config schema`)"
    return ""


def _fields_at(annotation: Any, loc: tuple) -> list[str]:
    """The field names of the model at `loc` under `annotation`, following dicts, lists, optionals and the
    target union, whose tag pydantic puts in the location."""
    if get_origin(annotation) is Annotated:
        return _fields_at(get_args(annotation)[0], loc)
    if get_origin(annotation) in (Union, UnionType):
        members = get_args(annotation)
        tagged = [m for m in members if loc and any(getattr(t, "tag", None) == loc[0] for t in get_args(m)[1:])]
        if tagged:
            return _fields_at(tagged[0], loc[1:])
        return [name for m in members for name in _fields_at(m, loc)]
    if get_origin(annotation) in (list, dict) and loc:
        return _fields_at(get_args(annotation)[-1], loc[1:])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not loc:
            return list(annotation.model_fields)
        field = annotation.model_fields.get(str(loc[0]))
        return _fields_at(field.annotation, loc[1:]) if field else []
    return []


def _line_of(text: str, loc: tuple) -> int | None:
    """1-based line of the deepest YAML node on `loc`, so a message can point at the line."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line
