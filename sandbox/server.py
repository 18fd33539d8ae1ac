"""Run the app under gunicorn, configured from Settings.

The app is preloaded: specs and fixtures are read once in the master and shared by the forked
workers, and a broken set stops the master before any worker starts. Each worker then starts
its own threads (fixture watcher, Airtable sync) in post_fork.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from .settings import Settings


def gunicorn_options(settings: Settings) -> dict:
    """gunicorn's settings for `settings` (also read by sandbox/gunicorn_conf.py)."""
    return {
        # The built-in FranceConnect's own port, if any, on the same address: a request's listening
        # port tells the app which side it is for (franceconnect/own_port.py).
        "bind": [f"{settings.host}:{port}" for port in (settings.port, settings.franceconnect_port) if port],
        "workers": settings.workers,
        "threads": settings.threads,
        # One thread per worker (the default): gunicorn's sync worker, whose connections still
        # sending their request and calls waiting on a latency hold no worker (workers.py);
        # more: gthread, each call a thread (slower per call and stalled by sleepers, bench/README.md).
        "worker_class": "sandbox.workers.DeferringSyncWorker" if settings.threads == 1 else "gthread",
        "preload_app": True,
        "keepalive": 5,
        "timeout": 60,
        "graceful_timeout": 30,  # SIGTERM: in-flight requests get this long to finish
        # No control socket: gunicorn's default is one path per user, which a second instance
        # on the machine would take over (and remove when it stops).
        "control_socket_disable": True,
        # No query string in the access log: v2 accepts `?token=`, and a token is never logged.
        "accesslog": os.environ.get("SANDBOX_ACCESS_LOG") or None,
        "access_log_format": AccessLine.FORMAT,
        "logger_class": AccessLine,
        "errorlog": "-",
        "loglevel": os.environ.get("SANDBOX_LOG_LEVEL", "info"),
        # A query string up to gunicorn's maximum (8190 bytes) reaches the routes, which answer
        # it in their own format; a longer one, or headers gunicorn refuses, get
        # errors.write_server_error.
        "limit_request_line": 8190,
        # gunicorn believes X-Forwarded-Proto from these peers only (its default trusts loopback,
        # which is any client once a proxy on the same machine relays it); application.py does
        # the same for X-Forwarded-For
        "forwarded_allow_ips": settings.trusted_proxies,
        "post_fork": post_fork,
        "child_exit": child_exit,
    }


class AccessLine(Logger):
    """gunicorn's logger, with the access line built from the five fields it shows.

    gunicorn's own access() builds every atom a format may name (each request and answer
    header, the environ) for any format: 13-17 % of a loaded worker's CPU (bench/README.md).
    The line is the same as `access_log_format` would give."""

    FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        sent = resp.sent if getattr(resp, "sent", None) is not None else "-"
        millis = request_time.seconds * 1000 + request_time.microseconds // 1000
        self.access_log.info('%s "%s %s" %s %s %sms', environ.get("REMOTE_ADDR", "-"),
                             environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), status, sent, millis)


def banner(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    return (f"\nparticulier-sandbox: serving {base}\n"
            f"  try it:    {base}/docs\n"
            f"  personas:  {base}/docs/personas\n"
            f"  a token:   curl -s -X POST {base}/sandbox/tokens\n"
            + (f"  FranceConnect: http://{host}:{settings.franceconnect_port}/api/v2/.well-known/openid-configuration\n"
               if settings.franceconnect_port else ""))


def post_fork(server, worker):
    from .production.errors import install_server_error_pages
    install_server_error_pages()
    sandbox = getattr(worker.app.wsgi(), "extensions", {}).get("sandbox")
    if sandbox is not None:  # at once, not on the first call: an idle worker follows fixture edits too
        sandbox.start()


def child_exit(server, worker):
    from .metrics import worker_exited
    worker_exited(worker.pid)


class SandboxServer(BaseApplication):
    def __init__(self, app, settings):
        self.application = app
        self.settings = settings
        super().__init__()

    def load_config(self):
        for name, value in gunicorn_options(self.settings).items():
            self.cfg.set(name, value)
        self.cfg.set("when_ready", lambda server: print(banner(self.settings), file=sys.stderr, flush=True))

    def load(self):
        return self.application


def run(app, settings: Settings):
    if settings.owns_store_dir and not settings.redis_url:
        master = os.getpid()
        # this instance's own store folder goes with it (only the master's exit removes it)
        atexit.register(lambda: os.getpid() == master and shutil.rmtree(settings.store_dir, ignore_errors=True))
    SandboxServer(app, settings).run()
