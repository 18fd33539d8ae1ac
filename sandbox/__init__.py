"""particulier-sandbox: a sandbox of API Particulier that anyone can run.

create_app comes from sandbox.application, imported on first use: the commands that serve
nothing (`token`, `fixtures check`, `--help`) need not import Flask.
"""
from __future__ import annotations

from .settings import ConfigError, Settings

__all__ = ["create_app", "Settings", "ConfigError"]


def create_app(settings: Settings | None = None, start: bool = True):
    from .application import create_app as factory
    return factory(settings, start)
