"""Checks across a pipeline as written, once every field is well-formed: what loading refuses (credentials
in a URL, an `*_env` setting that is not a variable's name, a dag_ref that would move the pipeline's own
branch) and what `config check` warns about (placeholders that look like real secrets).

They run where the file is read, never on a train's snapshot: history must always decode.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from airagent.config.analysis import Analysis, PrometheusMetric, WebhookMetric
from airagent.config.pipeline import PipelineDeclaration
from airagent.config.targets import KubernetesTarget, LocalTarget

Loc = tuple[str | int, ...]
Finding = tuple[Loc, str]

# How each URL's credentials reach whoever uses it, instead of the file.
_GIT = "let git on the worker authenticate with an SSH key (git@host:org/repo.git) or a credential helper"
_CLUSTER = "give the validator Job the Secret image.git_secret names (GITSYNC_USERNAME, GITSYNC_PASSWORD)"
_FIXES = {
    "repo": f"{_GIT}, and {_CLUSTER}",
    "context": _CLUSTER,
    "dag_remote": _GIT,
    "api_url": "put the API login in credentials_file (a mounted Secret holding username:password) "
    "or in the variable credentials_env names",
    "address": "put the whole URL in a variable on the worker and name it in address_env instead",
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# git's scp-like form, [user@]host:path, where a '/' never comes before the ':'
_SCP = re.compile(r"(?P<user>[^/]+)@[^/@:]+:")
_SECRET_PARAM = re.compile(r"(?:.*[_-])?(?:token|key|apikey|secret|password|passwd|sig|signature|auth)", re.I)
_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{20,}")
_HEX = re.compile(r"[0-9a-f]{32,}|[0-9A-F]{32,}")


def refusals(pipelines: dict[str, PipelineDeclaration]) -> list[Finding]:
    """What the file must not say, each with where and the fix."""
    return [found for name, pipeline in pipelines.items() for found in _refused(("pipelines", name), pipeline)]


def warnings(pipelines: dict[str, PipelineDeclaration]) -> list[Finding]:
    """Placeholder values that look like real secrets: allowed, as a made-up value may look like one."""
    found = []
    for name, pipeline in pipelines.items():
        values = pipeline.validation.placeholders.model_dump(include={"variables", "connections", "env"})
        for loc, text in _strings(("pipelines", name, "validation", "placeholders"), values):
            if why := _secret_like(loc, text):
                found.append(
                    (
                        loc,
                        f"looks like a real secret ({why}); placeholders are kept in every train's history, "
                        "so use a made-up value (and leave passwords out)",
                    )
                )
    return found


def in_url(url: str) -> str | None:
    """The credential a URL carries, in words, or None. A user name alone is no credential
    (ssh://git@host/…, git@host:org/repo.git) unless it looks like a generated token."""
    if "://" in url:
        try:
            parts = urlsplit(url)
        except ValueError:
            return None  # not a URL at all: whatever reads it says so
        user, password, query = parts.username, parts.password, parts.query
    elif found := _SCP.match(url):
        user, _, password = found["user"].partition(":")
        query = ""
    else:
        return None
    if password:
        return "a password"
    if user and looks_generated(user):
        return "a token as its user name"
    names = [key for key, _ in parse_qsl(query, keep_blank_values=True) if _SECRET_PARAM.fullmatch(key)]
    return f"a token in its query ({names[0]}=)" if names else None


def looks_generated(text: str) -> bool:
    """Holds a run of 20 or more characters that reads like a generated key: upper case, lower case and
    digits switching often with few repeats, or 32 hex digits. Names and words do not."""
    return any(_generated(token) for token in _TOKEN.findall(text))


def _generated(token: str) -> bool:
    if _HEX.search(token):
        return True
    # Separators do not count: words joined by '_' or '/' would look random.
    kinds = ["lower" if c.islower() else "upper" if c.isupper() else "digit" for c in token if c.isalnum()]
    if not {"lower", "upper", "digit"} <= set(kinds):
        return False
    switches = sum(a != b for a, b in pairwise(kinds)) / (len(kinds) - 1)
    n = len(token)
    entropy = -sum(k / n * math.log2(k / n) for k in Counter(token).values())
    # Thresholds from samples: random base62 of 20 characters passes 96% of the time; CamelCase names,
    # paths and snake_case words with numbers stay below.
    return switches >= 0.35 and entropy >= 3.5


def _refused(at: Loc, pipeline: PipelineDeclaration) -> Iterator[Finding]:
    yield from _url((*at, "repo"), pipeline.repo)
    if pipeline.image:
        yield from _url((*at, "image", "context"), pipeline.image.context)
    for i, note in enumerate(pipeline.notifications):
        yield from _name((*at, "notifications", i, "url_env"), note.url_env)
    for i, env in enumerate(pipeline.environments):
        here, target = (*at, "environments", i), env.target
        if isinstance(target, LocalTarget):
            yield from _name((*here, "target", "database_url_env"), target.database_url_env)
        else:
            yield from _kubernetes((*here, "target"), env.name, target, pipeline.branch)
        for j, probe in enumerate(env.probes.webhooks):
            yield from _name((*here, "probes", "webhooks", j, "url_env"), probe.url_env)
        if isinstance(env.analysis, Analysis) and all(env.analysis is not a for a in pipeline.analyses.values()):
            yield from _analysis((*here, "analysis"), env.analysis)
    for name, analysis in pipeline.analyses.items():
        yield from _analysis((*at, "analyses", name), analysis)
    hosts = {env.host for env in pipeline.environments if env.host}
    if len(hosts) > 1:
        i = next(i for i, env in enumerate(pipeline.environments) if env.host and env.host != min(hosts))
        yield (
            (*at, "environments", i, "target", "host"),
            f"local environments on several hosts ({', '.join(sorted(hosts))}): a train's diff reads every "
            "environment's record on one host; give one pipeline per host",
        )


def _analysis(at: Loc, analysis: Analysis) -> Iterator[Finding]:
    """Metrics whose addresses are secrets: named by a variable, never written in the file."""
    for i, metric in enumerate(analysis.metrics):
        here = (*at, "metrics", i)
        if isinstance(metric, WebhookMetric):
            yield from _name((*here, "url_env"), metric.url_env)
        elif isinstance(metric, PrometheusMetric):
            yield from _url((*here, "address"), metric.address)
            yield from _name((*here, "address_env"), metric.address_env)


def _url(loc: Loc, url: str | None) -> Iterator[Finding]:
    if url and (carried := in_url(url)):
        yield (
            loc,
            f"the URL carries {carried}, and this file is in the repository and in every train's history; "
            f"give the URL without it and {_FIXES[str(loc[-1])]}",
        )


def _name(loc: Loc, name: str | None) -> Iterator[Finding]:
    if name is not None and not _ENV_NAME.fullmatch(name):
        # Never echo it: a URL pasted here is the secret itself.
        yield (
            loc,
            "not the name of an environment variable; name the variable on the worker that holds the "
            "value (letters, digits and '_', like AIRAGENT_WEBHOOK_URL) and keep the value there",
        )


def _kubernetes(at: Loc, env: str, target: KubernetesTarget, branch: str) -> Iterator[Finding]:
    yield from _url((*at, "dag_remote"), target.dag_remote)
    yield from _url((*at, "api_url"), target.api_url)
    yield from _name((*at, "credentials_env"), target.credentials_env)
    if target.credentials_file and target.credentials_env:
        yield (*at, "credentials_env"), "give the API login in credentials_file or credentials_env, not both"
    try:
        ref = target.dag_ref.format(env=env)
    except (KeyError, IndexError, ValueError, AttributeError):
        yield (*at, "dag_ref"), f"{target.dag_ref!r}: use {{env}} and no other {{...}}, like 'airagent/{{env}}'"
        return
    if _branch(ref) == _branch(branch):
        yield (
            (*at, "dag_ref"),
            f"{target.dag_ref!r} is the pipeline's branch {branch!r}, and airagent force-moves dag_ref to "
            "every release it rolls; give the environment a ref of its own, like 'airagent/{env}' (the default)",
        )


def _branch(ref: str) -> str:
    return ref.removeprefix("refs/heads/")


def _strings(at: Loc, value: Any) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        yield at, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings((*at, str(key)), item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings((*at, i), item)


def _secret_like(loc: Loc, text: str) -> str | None:
    if loc[-1] == "password" and text:
        return "a password"
    if carried := in_url(text):
        return f"a URL with {carried}"
    if looks_generated(text):
        return "a long random string"
    return None
