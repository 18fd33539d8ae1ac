"""The API itself: every route of the loaded specs, as a plain WSGI application.

router (ApiApp.route) -> pipeline (Pipeline.handle), one straight line per call:

    authenticate -> authorize (scopes) -> validate -> fault, provider limit or match (runtime
    personas, then fixtures) -> mask, then count, judge and record: ONE store step checks the
    revocation, counts the call in its rate-limit windows and journals it with its final status.

Each step raises ApiError to stop; the error is rendered in the route's own format. The
answer is worked out before the store is asked, and the store's verdict wins: a revoked token
or a call over its limit is answered 401 / 429 whatever the call asked, exactly as when the
limit was checked first (the steps before the store have no side effect, but for the count of
a provider's own limit, as the provider counts what reaches it). Latency (fixture
`latency_ms`, fault `latency=`) is waited after the call is counted.

This app is a werkzeug Request in and a WSGI answer out, nothing else: the sandbox's own pages
(/sandbox, /docs, /franceconnect) are the Flask app beside it (application's dispatch picks one
per request).
"""
from __future__ import annotations

import functools
import json
import logging
import time

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request

from ..population import dates
from ..production import errors
from . import faults, transport
from ..production.errors import ApiError, ParameterErrors
from ..population.lookup import canonical_identity, france_connect_civility, request_key
from ..store import PersonasMoved, StoreUnavailable
from ..production import clock
from ..production.requests import request_id

JSON = "application/json; charset=utf-8"
logger = logging.getLogger("sandbox")
_MEMO_LIMIT = 50_000
# The memos' bytes: a runtime persona may be 256 KiB and rendered once per scope set a token
# holds, and a call that matches nothing may carry an 8 KB query, so a count alone would let
# 50,000 large entries pile up in each worker (a flood of long queries took one to 200 MB).
_MEMO_BYTES = 64 << 20
_NEAR_MISS_BYTES = 16 << 20
_PERSONA_RETRIES = 5


class Pipeline:
    def __init__(self, settings, authenticator, limiter, catalogue, population, journal, personas=None, pings=None):
        self.settings = settings
        self.pings = pings  # production/pings.Pings: a provider down for the run answers so on its routes
        self.personas = personas  # runtime personas (sandbox.population.runtime), ahead of the fixture files
        self.auth = authenticator
        self.limiter = limiter
        self.store = limiter.store
        self.catalogue = catalogue
        self.population = population
        self.journal = journal
        self._memo_for = None
        self._rendered = {}    # (case, scopes held) -> (status, body): a masked payload is serialised once
        self._rendered_bytes = 0
        self._near_miss = {}   # (operation id, request key) -> (near miss, header value)
        self._near_miss_bytes = 0

    def handle(self, op, request, unsupported_version: str | None = None, defer=None) -> tuple[int, bytes, dict]:
        """One API call -> (status, body, headers). `unsupported_version`: the path named a
        version the route does not have (transport.resolve_version): 404 00402 once the token
        and its scopes are checked, as production answers. `defer(seconds)`: the server sends
        the answer that much later without this thread waiting (sandbox/workers.py); when it
        is None or answers False, the latency is waited here."""
        wait = []
        status, body, headers = self._handle(op, request, unsupported_version, wait)
        headers["X-Request-ID"] = request_id(request.headers)
        if self.population.stale:  # a broken edit: the last good set answers, and says so
            headers["X-Sandbox-Fixtures-Stale"] = transport.stale_header(self.population.stale)
        if wait and not (defer is not None and defer(sum(wait))):
            time.sleep(sum(wait))
        return status, body, headers

    def _handle(self, op, request, unsupported_version, wait):
        retired = transport.retired_answer(op.path, self.settings.serve_retired)
        if retired is not None:  # before any token check, plain text without a Content-Type
            status, body, headers = retired
            return status, body, {**headers, "Content-Type": None}
        try:
            if op.gone and op.path not in transport.RETIRED:
                raise ApiError("gone")
            identity = self.auth.authenticate(request, op)
        except ApiError as error:
            return self._error(op, error, "auth")  # no caller: neither counted nor journaled

        case = near_miss = fault = None
        # The runtime personas' version the answer depends on (None: no case was looked up). Read
        # before the lookup: another thread may rebuild the index meanwhile, never to an older set.
        personas_version = None
        stage = "auth"  # which Content-Type production gives the answer (transport.content_type)
        try:
            held = self.catalogue.authorize(identity, op.operation_id)
            stage = "answer"
            if unsupported_version:
                raise ApiError("unsupported_version", detail=unsupported_version)
            # a FranceConnect call: production's organizer reads the identity's civil status too
            civility = france_connect_civility(identity.france_connect) if identity.france_connect else None
            op.validate(request.args, request.headers, civility)
            fault = faults.from_request(request.headers) if self.settings.faults else None
            if not (fault and fault.kind) and self.pings is not None:
                standing = self.pings.route_fault(op.operation_id)
                if standing:  # its provider was put in maintenance or failure for the run
                    fault = faults.Fault(standing, fault.latency_ms if fault else 0)
            if fault and fault.kind == faults.API_RATE_LIMITED:
                status, body, headers = 429, b"", {}  # rendered once the count is known
            elif fault and fault.kind:
                status, body = self._provider_fault(op, fault.kind)
                headers = {}
            elif self.limiter.provider_limit(op.operation_id) and self.limiter.provider_refuses(
                    op, _person(op.operation_id, identity, request.args)):
                status, body = self._provider_fault(op, "rate_limited")
                headers = {}
            else:
                personas_version = self._personas_version()
                status, body, headers, case, near_miss = self._lookup(op, identity, request.args, held)
        except ApiError as error:
            if error.kind == "store_unavailable":  # the store just failed: do not wait on it again
                return self._error(op, error, "auth")
            if isinstance(error, ParameterErrors) and {e["code"] for e in error.items} == {"00210"}:
                stage = "recipient"
            status, body, headers = self._error(op, error, stage)

        for _ in range(_PERSONA_RETRIES):
            if stage != "auth":  # production's cache headers, set once the token and scopes passed
                headers.update(transport.cache_headers())
            entry = self.journal.entry(request, status, case, near_miss, fault.describe() if fault else None)
            call = self.limiter.call(identity, op, request.remote_addr or "-", identity.key, entry, request.headers)
            call.personas_version = personas_version
            try:
                decision = self.limiter.judge(call, *self.store.count(call))
                break
            except PersonasMoved as moved:  # another worker changed the personas: answer again
                try:
                    self.personas.refresh(moved.version)
                except ApiError as error:
                    return self._error(op, error, "auth")
                personas_version = self._personas_version()
                status, body, headers, case, near_miss = self._lookup(op, identity, request.args, held)
            except StoreUnavailable:
                return self._error(op, ApiError("store_unavailable"), "auth")
            except ApiError as error:  # revoked, or over a limit: that is the answer
                return self._error(op, error, "auth")
        else:  # the personas changed at every try: a store being rewritten in a loop
            return self._error(op, ApiError("store_unavailable"), "auth")

        # The latency is waited once the call is counted and its answer known (handle).
        if fault and fault.latency_ms:
            wait.append(fault.latency_ms / 1000)
        if fault and fault.kind == faults.API_RATE_LIMITED:
            status, body, headers = self._error(op, faults.api_rate_limited(decision), "auth")
        elif case is not None and case.latency_ms:
            wait.append(min(case.latency_ms, faults.MAX_LATENCY_MS) / 1000)
        if decision and "RateLimit-Limit" not in headers:
            headers.update(decision.headers())
        headers.setdefault("Content-Type", transport.content_type(op.v3, stage))
        return status, body, headers

    metrics = None  # sandbox.metrics: refusals counted by reason (application.py sets it)

    def _error(self, op, error: ApiError, stage: str) -> tuple[int, bytes, dict]:
        if self.metrics is not None:
            self.metrics.refused(error.kind)
        status, payload = errors.render(error, op.v3)
        headers = {**error.headers, "Content-Type": transport.content_type(op.v3, stage)}
        if isinstance(error, ParameterErrors) and error.hints:
            headers["X-Sandbox-Hint"] = hint_header(error.hints)
        return status, errors.dumps(payload), headers

    def _personas_version(self):
        return self.personas.version if self.personas is not None else None

    def _lookup(self, op, identity, args, held):
        """The case the call asks for (runtime persona, fixture, or none) and its answer."""
        case, near_miss, near_header = self._match(op, identity, args)
        status, body, headers = self._answer(op, case, held, near_header)
        return status, body, headers, case, near_miss

    def _memos(self):
        current = self.population.current
        if self._memo_for is not current:  # fixtures reloaded: what was kept is stale
            self._rendered, self._near_miss, self._memo_for = {}, {}, current
            self._rendered_bytes = self._near_miss_bytes = 0
        return current

    def _match(self, op, identity, args):
        fixtures = self._memos()
        runtime = self.personas
        if identity.france_connect is not None:
            case = ((runtime and runtime.match_france_connect(op.operation_id, identity, args))
                    or fixtures.match_france_connect(op.operation_id, identity.france_connect, args))
            key = None
        else:
            key = request_key(op.operation_id, args)
            case = (runtime and runtime.match(op.operation_id, identity, key)) or fixtures.match(op.operation_id, args, key)
        if case is not None:
            return case, None, None
        memo_key = (op.operation_id, key if key is not None else request_key(op.operation_id, args))
        found = self._near_miss.get(memo_key)
        if found is None:
            near_miss = fixtures.near_miss(op.operation_id, args, memo_key[1])
            header = json.dumps(near_miss, ensure_ascii=True, separators=(",", ":")) if near_miss else None
            found = (near_miss, header)
            size = sum(len(repr(item)) for item in memo_key[1]) + len(header or "")
            if len(self._near_miss) > _MEMO_LIMIT or self._near_miss_bytes > _NEAR_MISS_BYTES:
                self._near_miss, self._near_miss_bytes = {}, 0
            self._near_miss[memo_key] = found
            self._near_miss_bytes += size
        return fixtures.fallback.get(op.operation_id), found[0], found[1]

    def _answer(self, op, case, held, near_header):
        headers = {}
        if near_header:
            headers["X-Sandbox-Near-Miss"] = near_header
        if case is None:
            status, body = self._provider_fault(op, "not_found")
            return status, body, headers
        # a file named in UTF-8 is percent-encoded: a server refuses what latin-1 cannot hold
        headers["X-Sandbox-Case"] = case.id if case.id.isascii() else transport.header_text(case.id)
        if case.problem:
            headers["X-Sandbox-Fixture-Invalid"] = transport.header_text(case.problem, 300)
        status, body = self._render(op, case, held)
        return status, body, headers

    def _render(self, op, case, held):
        self._memos()
        day = clock.today() if case.dated else None  # relative dates: one rendering per day
        key = (case, held, day)
        cached = self._rendered.get(key)
        if cached is None:
            payload = case.payload_on(day) if day else case.payload
            scopes = self.catalogue.get(op.operation_id)
            if case.status == 200 and scopes is not None:
                payload = scopes.mask(payload, held)
            cached = (case.status, errors.dumps(payload))
            if len(self._rendered) > _MEMO_LIMIT or self._rendered_bytes > _MEMO_BYTES:
                self._rendered, self._rendered_bytes = {}, 0
            self._rendered[key] = cached
            self._rendered_bytes += len(cached[1])
        return cached

    def _provider_fault(self, op, kind):
        scopes = self.catalogue.get(op.operation_id)
        provider = scopes.provider if scopes else "fournisseur"
        prefix = scopes.code_prefix if scopes else "00"
        status, payload = errors.provider_fault(kind, op.v3, provider, prefix, op.operation_id)
        return status, errors.dumps(payload)


HINT_LIMIT = 3000  # characters: proxies keep all response headers in a 4-8 KiB buffer


def hint_header(hints: list) -> str:
    """X-Sandbox-Hint: {"refused": [{code, parameters: {name: value received}, expected}]} as
    JSON, like X-Sandbox-Near-Miss: non-ASCII characters are JSON's \\uXXXX escapes, so the value
    is plain ASCII (latin-1-safe). Errors past HINT_LIMIT characters are counted in "more"."""
    shown = []
    for hint in hints:
        text = json.dumps({"refused": shown + [hint]}, ensure_ascii=True, separators=(",", ":"))
        if shown and len(text) > HINT_LIMIT:
            break
        shown.append(hint)
    out = {"refused": shown}
    if len(shown) < len(hints):
        out["more"] = len(hints) - len(shown)
    return json.dumps(out, ensure_ascii=True, separators=(",", ":"))


def _person(operation_id, identity, args) -> str:
    """Who a call asks about, for a provider's limit per person."""
    if identity.france_connect is not None:
        return repr(sorted(canonical_identity(identity.france_connect).items()))
    return repr(sorted(request_key(operation_id, args)))


@functools.lru_cache(maxsize=None)
def _status_line(status: int) -> str:
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"


class ApiApp:
    """The router and the WSGI side: a request of an API route -> the pipeline -> a Response."""

    def __init__(self, operations, pipeline: Pipeline, cors):
        self.pipeline = pipeline
        self.cors = cors  # request -> CORS headers of the answer (flask-cors' computation)
        self.operations = list(operations)
        self.by_path = {op.path: op for op in self.operations}
        # most calls name a route exactly: one dict lookup; the Map handles the rest (path
        # parameters, a trailing slash, a known path with another method)
        self.exact = {(op.path, op.method): op for op in self.operations if "{" not in op.path}
        self.url_map = Map([Rule(op.path.replace("{", "<").replace("}", ">"), endpoint=index, methods=[op.method])
                            for index, op in enumerate(self.operations)], strict_slashes=False)

    def route(self, environ):
        """(operation, unsupported-version detail or None) of the request's path and method;
        None when the path is not the API's (the Flask app answers it); MethodNotAllowed when
        the path is but the method is not."""
        method = environ.get("REQUEST_METHOD", "GET")
        op = self.exact.get((environ.get("PATH_INFO", ""), "GET" if method == "HEAD" else method))
        if op is not None:
            return op, None
        try:
            index, _ = self.url_map.bind_to_environ(environ).match()
        except NotFound:
            # another version of a known route: production checks the token and scopes first
            return transport.resolve_version(environ.get("PATH_INFO", ""), self.by_path)
        return self.operations[index], None

    def __call__(self, environ, start_response, routed=None):
        request = Request(environ)
        try:
            op, unsupported = routed or self.route(environ)
            # gunicorn's socket of the request: sandbox/workers.py's can hold a waiting answer
            defer = getattr(environ.get("gunicorn.socket"), "defer", None)
            status, body, headers = self.pipeline.handle(op, request, unsupported, defer)
        except MethodNotAllowed as error:
            if request.method == "OPTIONS":  # a CORS preflight: its headers are added below
                status, body, headers = 204, b"", {"Allow": ", ".join(sorted(error.valid_methods or ())),
                                                   "Content-Type": None}  # a 204 has no content
            else:  # production has no 405: an unknown method is an unknown route
                status, body, headers = transport.unknown_route_answer()
        except Exception:  # a bug must still answer in the API's format, and be logged
            logger.exception("unexpected error on %s %s", request.method, request.path)
            status, payload = errors.render(ApiError("internal"), v3=not request.path.startswith("/api/"))
            body, headers = errors.dumps(payload), {}
        # the answer goes out as WSGI itself: a werkzeug Response would add nothing here
        content_type = headers.pop("Content-Type", JSON)
        out = [(name, value) for name, value in headers.items()]
        if content_type is not None:
            out.append(("Content-Type", content_type))
        out.append(("Content-Length", str(len(body))))
        out.append(("X-Content-Type-Options", "nosniff"))
        if "HTTP_ORIGIN" in environ:  # a browser's call: CORS as the policy says
            out.extend(self.cors(request))
        start_response(_status_line(status), out)
        return [] if request.method == "HEAD" else [body]
