"""The request pipeline of an API route:

authenticate -> scopes -> validate -> fault -> match -> mask, then ONE store round trip that
checks revocation, counts the call (rate limit) and journals it with its final status.

Each step raises ApiError to stop; the error is rendered in the route's own format. The
answer is worked out before the store is asked, and the store's verdict wins: a revoked
token or a call over its limit is answered 401 / 429 whatever the call asked, exactly as
when the limit was checked first (the steps before the store have no side effect). Latency
(fixture `latency_ms`, fault `latency=`) is waited after the call is counted.

A masked payload is serialised once per (case, scopes held) and kept; a miss's near-miss
report once per (operation, parameters).

FastPath serves a GET on an API route straight from the WSGI environ: no Flask request
context, URL map, session or Response object. It is used only while the app's request hooks
and the route's view are the ones create_app installed; anything else goes through Flask.
Code run by the pipeline must therefore take the request it is given, not flask.request.
"""
from __future__ import annotations

import json
import logging
import random
import time

from flask import Response, request as flask_request
from werkzeug.http import HTTP_STATUS_CODES

from . import errors, faults
from .errors import ApiError
from .fixtures import request_key
from .scopes import NothingVisible
from .store import StoreUnavailable

JSON = "application/json; charset=utf-8"
logger = logging.getLogger("sandbox")
_MEMO_LIMIT = 50_000


class Pipeline:
    def __init__(self, settings, authenticator, limiter, catalogue, population, journal):
        self.settings = settings
        self.auth = authenticator
        self.limiter = limiter
        self.catalogue = catalogue
        self.population = population
        self.journal = journal
        self._memo_for = None
        self._rendered = {}    # (case, held) -> (status, body)
        self._near_miss = {}   # (operation id, request key) -> (near miss, header value)

    def view_for(self, op):
        def view(**_path_params):
            # the request itself rather than the context-bound proxy, which resolves on each use
            status, body, headers = self.handle(op, flask_request._get_current_object())
            return Response(body, status, headers, content_type=JSON)
        view.__name__ = f"api_{op.method}_{op.path}"
        view.operation = op  # FastPath serves the route by itself while this view is the route's
        return view

    def handle(self, op, request) -> tuple[int, bytes, dict]:
        """One API call -> (status, body, headers)."""
        status, body, headers = self._handle(op, request)
        headers["X-Request-ID"] = f"{random.getrandbits(128):032x}"  # 32 hex digits, as uuid4().hex; no syscall
        return status, body, headers

    def _handle(self, op, request):
        try:
            if op.gone:
                raise ApiError("gone")
            identity = self.auth.authenticate(request, op)
        except ApiError as error:
            return self._error(op, error)  # no caller: neither counted nor journaled

        case = near_miss = fault = None
        throttled = False
        try:
            held = self.catalogue.authorize(identity, op.operation_id)
            op.validate(request.args, request.headers)
            fault = faults.from_request(request.headers) if self.settings.faults else None
            if fault and fault.kind == faults.API_RATE_LIMITED:
                status, body, headers, throttled = 429, b"", {}, True  # rendered once the count is known
            elif fault and fault.kind:
                status, body = self._provider_fault(op, fault.kind)
                headers = {}
            else:
                case, near_miss, near_header = self._match(op, identity, request.args)
                status, body, headers = self._answer(op, case, held, near_header)
        except ApiError as error:
            status, body, headers = self._error(op, error)

        verdict = []

        def decide(revoked, hits):
            try:
                verdict.append(self.limiter.judge(revoked, hits, amounts))
            except ApiError as error:  # revoked, or over a limit: that is the answer
                verdict.append(error)
                return self.journal.entry(request, errors.render(error, op.v3)[0])
            return self.journal.entry(request, status, case, near_miss, fault.describe() if fault else None)

        counters, amounts = self.limiter.counters(identity, request.remote_addr or "-")
        try:
            self.limiter.store.settle(self.limiter.revocable(identity), counters, identity.key, decide)
        except StoreUnavailable:
            return self._error(op, ApiError("store_unavailable"))
        decision = verdict[0]
        if isinstance(decision, ApiError):
            return self._error(op, decision)

        if fault and fault.latency_ms:
            time.sleep(fault.latency_ms / 1000)
        if throttled:
            status, body, headers = self._error(op, faults.api_rate_limited(decision))
        elif case is not None and case.latency_ms:
            time.sleep(min(case.latency_ms, faults.MAX_LATENCY_MS) / 1000)
        if decision and "RateLimit-Limit" not in headers:
            headers.update(decision.headers())
        return status, body, headers

    def _error(self, op, error: ApiError) -> tuple[int, bytes, dict]:
        status, payload = errors.render(error, op.v3)
        return status, errors.dumps(payload), dict(error.headers)

    def _memos(self):
        current = self.population.current
        if self._memo_for is not current:  # fixtures reloaded: what was kept is stale
            self._rendered, self._near_miss, self._memo_for = {}, {}, current
        return current

    def _match(self, op, identity, args):
        fixtures = self._memos()
        if identity.france_connect is not None:
            case = fixtures.match_france_connect(op.operation_id, identity.france_connect, args)
            key = None
        else:
            key = request_key(args)
            case = fixtures.match(op.operation_id, args, key)
        if case is not None:
            return case, None, None
        memo_key = (op.operation_id, key if key is not None else request_key(args))
        found = self._near_miss.get(memo_key)
        if found is None:
            near_miss = fixtures.near_miss(op.operation_id, args, memo_key[1])
            header = json.dumps(near_miss, ensure_ascii=True, separators=(",", ":")) if near_miss else None
            found = (near_miss, header)
            if len(self._near_miss) > _MEMO_LIMIT:
                self._near_miss.clear()
            self._near_miss[memo_key] = found
        return fixtures.fallback.get(op.operation_id), found[0], found[1]

    def _answer(self, op, case, held, near_header):
        headers = {}
        if near_header:
            headers["X-Sandbox-Near-Miss"] = near_header
        if case is None:
            status, body = self._provider_fault(op, "not_found")
            return status, body, headers
        headers["X-Sandbox-Case"] = case.id
        if case.problem:
            headers["X-Sandbox-Fixture-Invalid"] = case.problem.encode("ascii", "replace").decode()[:300]
        try:
            status, body = self._render(op, case, held)
        except NothingVisible:
            status, body = self._provider_fault(op, "not_found")
        return status, body, headers

    def _render(self, op, case, held):
        self._memos()
        key = (case, held)
        cached = self._rendered.get(key)
        if cached is None:
            payload = case.payload
            scopes = self.catalogue.get(op.operation_id)
            if case.status == 200 and scopes is not None:
                payload = scopes.mask(payload, held)
            cached = (case.status, errors.dumps(payload))
            if len(self._rendered) > _MEMO_LIMIT:
                self._rendered.clear()
            self._rendered[key] = cached
        return cached

    def _provider_fault(self, op, kind):
        scopes = self.catalogue.get(op.operation_id)
        provider = scopes.provider if scopes else "fournisseur"
        prefix = scopes.code_prefix if scopes else "00"
        status, payload = errors.provider_fault(kind, op.v3, provider, prefix)
        return status, errors.dumps(payload)


def status_line(code: int) -> str:
    """The status line werkzeug's Response would send for `code`."""
    line = _STATUS_LINES.get(code)
    if line is None:
        reason = HTTP_STATUS_CODES.get(code)
        line = _STATUS_LINES[code] = f"{code} {reason.upper()}" if reason else f"{code} UNKNOWN"
    return line


_STATUS_LINES: dict[int, str] = {}


class FastPath:
    """WSGI middleware in front of Flask: a GET on an API route goes straight to the pipeline.

    `extra_headers(origin, method)` -> the headers Flask's after_request adds (nosniff, CORS).
    The bypass holds only while the app-wide request hooks and the route's view function are
    the ones seen at start-up; a hook or view added later (an extension, a test) is honoured
    by sending the call through Flask.
    """

    def __init__(self, app, sandbox, extra_headers):
        self.app = app
        self.wrapped = app.wsgi_app
        self.sandbox = sandbox
        self.extra_headers = extra_headers
        self.routes = {}
        for rule in app.url_map.iter_rules():
            op = getattr(app.view_functions.get(rule.endpoint), "operation", None)
            if op is not None and op.method == "GET" and "{" not in op.path:
                self.routes[op.path] = (op, rule.endpoint, app.view_functions[rule.endpoint])
        self._hooks = self._current_hooks()

    def _current_hooks(self):
        app = self.app
        return (list(app.before_request_funcs.get(None, ())), list(app.after_request_funcs.get(None, ())),
                list(app.teardown_request_funcs.get(None, ())), list(app.url_value_preprocessors.get(None, ())))

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "GET":
            route = self.routes.get(environ.get("PATH_INFO"))
            if (route is not None and self.app.view_functions.get(route[1]) is route[2]
                    and self._current_hooks() == self._hooks):
                return self._serve(route[0], environ, start_response)
        return self.wrapped(environ, start_response)

    def _serve(self, op, environ, start_response):
        request = self.app.request_class(environ)
        try:
            self.sandbox.in_worker()
            status, body, headers = self.sandbox.pipeline.handle(op, request)
        except Exception:  # as Flask's errorhandler(Exception) answers it
            logger.exception("unexpected error on %s %s", request.method, request.path)
            status, payload = errors.render(ApiError("internal"), v3=op.v3)
            body, headers = errors.dumps(payload), {}
        out = [("Content-Type", JSON), ("Content-Length", str(len(body)))]
        out.extend(headers.items())
        out.extend(self.extra_headers(environ.get("HTTP_ORIGIN"), "GET"))
        start_response(status_line(status), out)
        return [body]
