"""The app factory: the Sandbox built once at start-up, the API app, and the Flask app beside it.

    dispatch ─┬─ a path of an API route ──> api.ApiApp (werkzeug only: the pipeline)
              └─ anything else ───────────> Flask: /sandbox/*, /docs, /openapi.yml, /, errors
    (with --franceconnect-port, requests on that port go to the built-in FranceConnect alone:
    franceconnect/own_port.py)
"""
from __future__ import annotations

import functools
import logging
import re

import yaml
from flask import Flask, Response, request
from flask_cors import CORS
from flask_cors.core import get_cors_headers, get_cors_options
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.middleware.proxy_fix import ProxyFix

from .production import errors
from .api import transport
from .api.pipeline import ApiApp, Pipeline
from .api.auth import Authenticator
from .production.errors import ApiError
from .population.served import Population
from .api.journal import Journal
from .population.runtime import RuntimePersonas
from .api.ratelimit import RateLimiter
from .production.pings import Pings, UnknownProvider
from .production.scopes import ScopeCatalogue
from .metrics import Metrics
from .settings import ConfigError, Settings, in_networks, parse_networks
from .production.spec import load_specs
from .store import StoreUnavailable, open_store

logger = logging.getLogger("sandbox")
# Production's own origins (siade/config/initializers/cors.rb): a browser app elsewhere is
# refused there, so it is refused here too unless SANDBOX_CORS_ORIGINS names it.
PRODUCTION_ORIGINS = [r"^https?://(staging\.)?api\.gouv\.fr$", r"^https?://([a-z0-9-]+\.)*entreprise\.api\.gouv\.fr$"]
HSTS = "max-age=31536000"  # a year, as browsers' preload lists want; no includeSubDomains: not ours to say
EXPOSED = ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After", "X-Request-ID",
           "X-Sandbox-Case", "X-Sandbox-Near-Miss", "X-Sandbox-Hint", "X-Sandbox-Fixture-Invalid",
           "X-Sandbox-Fixtures-Stale"]


class Sandbox:
    """Everything built once at start-up, shared by the request steps."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.trusted_proxies = parse_networks(settings.trusted_proxies, "SANDBOX_TRUSTED_PROXIES")
        # who may read /metrics: anyone (None), unless public or listed (then loopback and the list)
        self.metrics_from = (parse_networks(settings.metrics_from, "SANDBOX_METRICS_FROM")
                             if settings.public or settings.metrics_from is not None else None)
        self.store = open_store(settings)  # first: an unreachable Redis stops the start at once
        self.specs = load_specs(settings.specs)
        try:
            self.pings = Pings(settings.provider_states)  # production's provider pings, states of the run
        except UnknownProvider as exc:
            raise ConfigError(f"--provider-state: {exc}") from None
        self.operations = self.specs.by_operation_id()
        self.catalogue = ScopeCatalogue()
        self.population = Population(settings.fixtures, self.operations, settings.reload_interval, logger)
        fatal = self.population.current.fatal
        if fatal:
            raise ConfigError("the fixtures are broken, the sandbox will not serve them:\n  "
                              + "\n  ".join(map(str, fatal)))
        problems = self.population.current.check() if settings.strict else self.population.current.problems
        for problem in problems:
            logger.warning("fixture problem: %s", problem)
        if settings.strict and problems:
            raise ConfigError(f"--strict: {len(problems)} fixture problem(s), listed above")
        self.secret = settings.resolved_secret()
        self.authenticator = Authenticator(self.secret, settings.static_tokens, self.population.france_connect)
        self.limiter = RateLimiter(self.store, settings)
        self.journal = Journal(self.store)
        self.personas = RuntimePersonas(self.store, self.operations, self.population, allow_global=not settings.public)
        self.pipeline = Pipeline(settings, self.authenticator, self.limiter, self.catalogue,
                                 self.population, self.journal, self.personas, self.pings)
        self.metrics = Metrics()
        self.metrics.watch(self.store, self.personas)
        self.pipeline.metrics = self.metrics

    @functools.cached_property
    def spec_yaml(self) -> bytes:
        """The merged spec /openapi.yml serves, dumped on first use (a start-up need not pay for it)."""
        return yaml.dump(self.specs.document, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                         sort_keys=False, allow_unicode=True).encode()

    def start(self):
        """This process's own threads: the fixture watcher, the Airtable sync. Called in each
        gunicorn worker after the fork (threads do not survive one), or at once outside gunicorn."""
        self.population.start_watching()
        if self.settings.airtable_sync:  # `serve --airtable-sync SECONDS`: periodic pull, one worker at a time
            from .airtable.sync import start_sync
            start_sync(self)


def create_app(settings: Settings | None = None, start: bool = True):
    """The WSGI application (a Flask app whose wsgi_app dispatches API routes to the API app).
    start=False: the caller starts the sandbox's threads itself (gunicorn's post_fork)."""
    settings = settings or Settings.from_env()
    sandbox = Sandbox(settings)
    app = Flask(__name__)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.extensions["sandbox"] = sandbox
    from .tryit import docs
    from . import franceconnect, routes
    app.register_blueprint(routes.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(franceconnect.blueprint(sandbox))
    _install_handlers(app)
    origins = PRODUCTION_ORIGINS + [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    # max_age as text: flask-cors passes it through as given, and the API side hands its headers
    # to the WSGI server as they are, which refuses anything but a str (gunicorn answers 500)
    cors = {"origins": origins, "expose_headers": EXPOSED, "max_age": "600"}
    CORS(app, resources={r"/openapi.yml": {**cors, "origins": "*"}, r"/*": cors})
    api_cors = get_cors_options(app, cors)
    api = ApiApp([op for op in sandbox.specs.operations if op.is_api], sandbox.pipeline,
                 lambda req: get_cors_headers(api_cors, req.headers, req.method).items(multi=True))
    app.wsgi_app = franceconnect.serve_on_own_port(settings.franceconnect_port,
                                                  _dispatch(api, app.wsgi_app, sandbox.metrics))
    if settings.public:
        app.wsgi_app = _hsts(app.wsgi_app)
    if sandbox.trusted_proxies:
        app.wsgi_app = _behind_proxies(app.wsgi_app, sandbox.trusted_proxies)
    if start:
        sandbox.start()
    return app


def _dispatch(api: ApiApp, flask_app, metrics):
    def dispatch(environ, start_response):
        try:
            routed = api.route(environ)
        except MethodNotAllowed:  # an API path: the API answers (or a CORS preflight)
            return api(environ, _counted(start_response, metrics, environ, "(other)"))
        if routed is None:
            return flask_app(environ, start_response)  # counted by its after_request
        return api(environ, _counted(start_response, metrics, environ, routed[0].path), routed)
    return dispatch


def _counted(start_response, metrics, environ, route: str):
    def counted(status, headers, exc_info=None):
        metrics.call(environ.get("REQUEST_METHOD", ""), route, status[:3])
        return start_response(status, headers, exc_info)
    return counted


def _behind_proxies(app, trusted):
    """X-Forwarded-For and -Proto believed from the listed proxies only (werkzeug's ProxyFix, one
    hop): from anyone else they would let a client pick its address for the per-address limits,
    or its scheme. The socket's peer stays in `sandbox.peer`."""
    fixed = ProxyFix(app, x_for=1, x_proto=1)

    def middleware(environ, start_response):
        peer = environ["sandbox.peer"] = environ.get("REMOTE_ADDR")
        return (fixed if in_networks(peer, trusted) else app)(environ, start_response)
    return middleware


def _hsts(app):
    """A public instance served over TLS (as a trusted proxy says, or gunicorn's own) tells
    browsers to come back over TLS only."""
    def middleware(environ, start_response):
        if environ.get("wsgi.url_scheme") != "https":
            return app(environ, start_response)

        def with_hsts(status, headers, exc_info=None):
            headers.append(("Strict-Transport-Security", HSTS))
            return start_response(status, headers, exc_info)
        return app(environ, with_hsts)
    return middleware


def _install_handlers(app):
    sandbox = app.extensions["sandbox"]
    limiter = sandbox.limiter

    @app.before_request
    def _sandbox_rate_limit():
        """The generous per-address limit of the sandbox's own pages and routes."""
        if request.path.startswith(("/sandbox/", "/docs", "/franceconnect/")):
            limiter.admit_sandbox(request.remote_addr or "-")

    @app.errorhandler(ApiError)
    def _api_error(error):
        """The sandbox's own routes answer in v2's format; a revoked token outside /api/v2/ as
        production's blocklist does (JSON:API, config/initializers/rack_attack.rb)."""
        sandbox.metrics.refused(error.kind)
        v3 = error.kind == "revoked_token" and not request.path.startswith("/api/v2/")
        status, payload = errors.render(error, v3=v3)
        status = getattr(error, "status", status)  # personas.InvalidPersona: 422, the body as v2's
        return Response(errors.dumps(payload), status, error.headers, content_type="application/json; charset=utf-8")

    @app.errorhandler(StoreUnavailable)
    def _store_down(_):
        return _api_error(ApiError("store_unavailable"))

    population = sandbox.population

    @app.after_request
    def _nosniff(response):
        response.headers["X-Content-Type-Options"] = "nosniff"
        if population.stale:  # as on the API's answers (api/pipeline.py)
            response.headers["X-Sandbox-Fixtures-Stale"] = transport.stale_header(population.stale)
        return response

    @app.after_request
    def _count(response):
        """Counted by Flask's rule (`/sandbox/personas/<path:name>`): a bounded set of routes."""
        rule = request.url_rule
        sandbox.metrics.call(request.method, rule.rule if rule is not None else "(other)", response.status_code)
        return response

    @app.errorhandler(Exception)
    def _error(error):
        """Unknown routes: production's plain-text 404 on the API's paths (every method: it has no
        405), the sandbox's JSON on its own; bugs in the API's own format."""
        sandbox_path = request.path.startswith("/sandbox/")
        api_path = request.path.startswith("/api/") or re.match(r"/v\d+/", request.path)
        if isinstance(error, HTTPException):
            if error.code in (404, 405) and api_path:
                status, body, headers = transport.unknown_route_answer()
                return Response(body, status, headers)
            if error.code not in (404, 405) or not sandbox_path:
                return error
            kind = "route_not_found" if error.code == 404 else "method_not_allowed"
        else:
            logger.exception("unexpected error on %s %s", request.method, request.path)
            kind = "internal"
        status, payload = errors.render(ApiError(kind), v3=not (sandbox_path or request.path.startswith("/api/")))
        headers = {}
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return Response(errors.dumps(payload), status, headers, content_type="application/json; charset=utf-8")
