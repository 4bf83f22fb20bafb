"""Mistakes in `airagent.yaml` or in a command, worded for the person who has to fix them."""

from __future__ import annotations


class ConfigError(Exception):
    """A mistake in airagent.yaml, worded for the person who has to fix it."""


class UnknownEnvironment(ConfigError):
    """A command named an environment the pipeline does not have."""
