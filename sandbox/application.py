"""The app factory: the Sandbox built once at start-up, and the Flask app around its pipeline."""
from __future__ import annotations

import logging
import os
import threading

import yaml
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from . import errors
from .api import FastPath, Pipeline
from .auth import Authenticator
from .errors import ApiError
from .fixtures import Population, Reading
from .journal import Journal
from .ratelimit import RateLimiter
from .scopes import ScopeCatalogue
from .settings import ConfigError, Settings
from .spec import load_specs
from .store import open_store

logger = logging.getLogger("sandbox")
CORS_HEADERS = "Authorization, X-Api-Key, Content-Type, Cache-Control, Prefer, X-Sandbox-Fault"
EXPOSED = ("RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After, X-Request-ID, "
           "X-Sandbox-Case, X-Sandbox-Near-Miss, X-Sandbox-Fixture-Invalid")


class Sandbox:
    """Everything built once at start-up, shared by the request steps."""

    def __init__(self, settings: Settings, reading: Reading | None = None, specs=None):
        self.settings = settings
        reading = reading or Reading(settings.fixtures)  # the case files parse in a pool while the spec loads
        try:
            self.store = open_store(settings)  # first: an unreachable Redis stops the start at once
            self.specs = specs or load_specs(settings.specs)
            self.operations = self.specs.by_operation_id()
            self.catalogue = ScopeCatalogue()
            self.population = Population(settings.fixtures, self.operations, settings.reload_interval, logger,
                                         reading)
        finally:
            reading.close()
        fatal = self.population.current.fatal
        if fatal:
            raise ConfigError("the fixtures are broken, the sandbox will not serve them:\n  "
                              + "\n  ".join(map(str, fatal)))
        for problem in self.population.current.problems:
            logger.warning("fixture problem: %s", problem)
        self.secret = settings.resolved_secret()
        self.authenticator = Authenticator(self.secret, settings.static_tokens, self.population.france_connect)
        self.limiter = RateLimiter(self.store, settings.rate_limit, settings.ip_rate_limit, settings.sandbox_rate_limit)
        self.journal = Journal(self.store)
        self.pipeline = Pipeline(settings, self.authenticator, self.limiter, self.catalogue,
                                 self.population, self.journal)
        self._spec_yaml = None
        self._spec_yaml_lock = threading.Lock()
        self._pid = None

    @property
    def spec_yaml(self) -> bytes:
        """The merged spec /openapi.yml serves, dumped on first use: 0.2 s a start-up need not pay."""
        with self._spec_yaml_lock:
            if self._spec_yaml is None:
                self._spec_yaml = yaml.dump(self.specs.document, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                                            sort_keys=False, allow_unicode=True).encode()
            return self._spec_yaml

    def in_worker(self):
        """Per-process set-up, done on the first request of each (forked) worker."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self.store.reset_after_fork()
        self.population.start_watching()
        if self.settings.airtable_sync:  # `serve --airtable-sync SECONDS`: periodic pull, one worker at a time
            from .airtable import start_sync  # only then: the package is ~0.1 s of imports
            start_sync(self)


def create_app(settings: Settings | None = None, reading: Reading | None = None, specs=None) -> Flask:
    """`reading`: the fixture files of `settings`, already being parsed or checked, and
    `specs`: its specs, already loaded (see cli.serve)."""
    settings = settings or Settings.from_env()
    sandbox = Sandbox(settings, reading, specs)
    app = Flask(__name__)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.extensions["sandbox"] = sandbox
    for op in sandbox.specs.operations:
        if op.is_api:
            rule = op.path.replace("{", "<").replace("}", ">")
            app.add_url_rule(rule, endpoint=f"{op.method} {op.path}", view_func=sandbox.pipeline.view_for(op),
                             methods=[op.method])
    from . import docs, routes
    app.register_blueprint(routes.bp)
    app.register_blueprint(docs.bp)
    extra_headers = _install_handlers(app, sandbox)
    app.wsgi_app = FastPath(app, sandbox, extra_headers)  # API GETs skip Flask's per-request work
    return app


def _install_handlers(app, sandbox):
    origins = [o.strip() for o in settings_origins(sandbox.settings)]

    def extra_headers(origin, method) -> list:
        """What every answer carries on top of its own headers: nosniff, and CORS."""
        out = [("X-Content-Type-Options", "nosniff")]
        if origin and ("*" in origins or origin in origins):
            out.append(("Access-Control-Allow-Origin", "*" if "*" in origins else origin))
            out.append(("Access-Control-Expose-Headers", EXPOSED))
            if method == "OPTIONS":
                out.append(("Access-Control-Allow-Headers", CORS_HEADERS))
                out.append(("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"))
                out.append(("Access-Control-Max-Age", "600"))
        return out

    @app.before_request
    def _per_worker():
        sandbox.in_worker()

    @app.after_request
    def _headers(response):
        for name, value in extra_headers(request.headers.get("Origin"), request.method):
            response.headers[name] = value
        return response

    @app.errorhandler(HTTPException)
    def _http_error(error):
        if not request.path.startswith(("/api/", "/v", "/sandbox/")):
            return error
        kind = {404: "route_not_found", 405: "method_not_allowed"}.get(error.code)
        if kind is None:
            return error
        status, payload = errors.render(ApiError(kind), v3=not request.path.startswith(("/api/", "/sandbox/")))
        headers = {}
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return Response(errors.dumps(payload), status, headers, content_type="application/json; charset=utf-8")

    @app.errorhandler(Exception)
    def _unexpected(error):
        if isinstance(error, HTTPException):
            return error
        logger.exception("unexpected error on %s %s", request.method, request.path)
        status, payload = errors.render(ApiError("internal"), v3=not request.path.startswith(("/api/", "/sandbox/")))
        return Response(errors.dumps(payload), status, content_type="application/json; charset=utf-8")

    return extra_headers


def settings_origins(settings):
    return [o for o in settings.cors_origins.split(",") if o.strip()] if settings.cors_origins else []
