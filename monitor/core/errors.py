"""Exceptions any layer (and monitor/cli.py) can catch without importing what
raises them: this module uses nothing but the standard library, so catching a
ConfigError costs the command line no pydantic."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration file that cannot be used, with a message for people."""
