"""particulier-sandbox: a sandbox of API Particulier that anyone can run.

Importing the package imports neither Flask nor the request pipeline: `particulier-sandbox
serve` starts parsing the fixture files in a pool of processes first, and those imports (a
third of a start-up) happen while the pool parses. create_app comes from sandbox.application.
"""
from __future__ import annotations

from .settings import ConfigError, Settings

__all__ = ["create_app", "Settings", "ConfigError"]


def create_app(settings: Settings | None = None, reading=None, specs=None):
    from .application import create_app as factory
    return factory(settings, reading, specs)
