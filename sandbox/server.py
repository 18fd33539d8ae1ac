"""Run the app under gunicorn with the shared configuration file."""
from __future__ import annotations

from gunicorn.app.base import BaseApplication

from . import gunicorn_conf


class SandboxServer(BaseApplication):
    def __init__(self, app, settings):
        self.application = app
        self.settings = settings
        super().__init__()

    def load_config(self):
        for name in dir(gunicorn_conf):
            if name in self.cfg.settings and not name.startswith("_"):
                self.cfg.set(name, getattr(gunicorn_conf, name))
        self.cfg.set("bind", f"{self.settings.host}:{self.settings.port}")
        self.cfg.set("workers", self.settings.workers)
        self.cfg.set("threads", self.settings.threads)

    def load(self):
        return self.application


def run(app, settings):
    SandboxServer(app, settings).run()
