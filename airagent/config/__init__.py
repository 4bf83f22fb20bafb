"""`airagent.yaml`: what a platform team declares, and the snapshot a train carries.

Relative paths are resolved against the file's folder when it is loaded, so the
snapshot in a train's input means the same thing on every worker of the host.
"""

from airagent.config.base import NAME, Duration, Model, Name, Ref, RepoPath, home, is_url
from airagent.config.errors import ConfigError, UnknownEnvironment
from airagent.config.loading import DEFAULT_FILE, AirAgentConfig, check, load, load_pipeline
from airagent.config.pipeline import (
    Classification,
    DeployWindow,
    ImageSettings,
    KubernetesPreviews,
    Notification,
    PipelineDeclaration,
    PipelineSettings,
    PreviewSettings,
    Runtime,
)
from airagent.config.targets import (
    TARGET_TYPES,
    EnvironmentSettings,
    KubernetesTarget,
    LocalTarget,
    Probes,
    Target,
    WebhookProbe,
    host_queue,
)
from airagent.config.validation import ParseTime, Placeholders, Policies, ValidationSettings

__all__ = [
    "DEFAULT_FILE",
    "NAME",
    "TARGET_TYPES",
    "AirAgentConfig",
    "Classification",
    "ConfigError",
    "DeployWindow",
    "Duration",
    "EnvironmentSettings",
    "ImageSettings",
    "KubernetesPreviews",
    "KubernetesTarget",
    "LocalTarget",
    "Model",
    "Name",
    "Notification",
    "ParseTime",
    "PipelineDeclaration",
    "PipelineSettings",
    "Placeholders",
    "Policies",
    "PreviewSettings",
    "Probes",
    "Ref",
    "RepoPath",
    "Runtime",
    "Target",
    "UnknownEnvironment",
    "ValidationSettings",
    "WebhookProbe",
    "check",
    "home",
    "host_queue",
    "is_url",
    "load",
    "load_pipeline",
]
