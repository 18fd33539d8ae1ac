"""The request pipeline of an API route, one step after the other:

authenticate -> rate limit (and revocation) -> scopes -> validate -> fault -> match -> mask -> journal

Each step raises ApiError to stop; the error is rendered in the route's own format.
A masked payload is serialised once per (case, scopes held) and kept.
"""
from __future__ import annotations

import json
import time
import uuid

from flask import Response, request

from . import errors, faults
from .errors import ApiError
from .scopes import NothingVisible
from .store import StoreUnavailable

JSON = "application/json; charset=utf-8"


class Pipeline:
    def __init__(self, settings, authenticator, limiter, catalogue, population, journal):
        self.settings = settings
        self.auth = authenticator
        self.limiter = limiter
        self.catalogue = catalogue
        self.population = population
        self.journal = journal
        self._rendered = {}
        self._rendered_for = None

    def view_for(self, op):
        def view(**_path_params):
            return self.handle(op)
        view.__name__ = f"api_{op.method}_{op.path}"
        return view

    def handle(self, op):
        identity = decision = case = near_miss = fault = None
        headers = {}
        try:
            if op.gone:
                raise ApiError("gone")
            identity = self.auth.authenticate(request, op)
            decision = self.limiter.admit(identity, request.remote_addr or "-")
            held = self.catalogue.authorize(identity, op.operation_id)
            op.validate(request.args, request.headers)
            fault = faults.from_request(request.headers) if self.settings.faults else None
            if fault and fault.latency_ms:
                time.sleep(fault.latency_ms / 1000)
            if fault and fault.kind == faults.API_RATE_LIMITED:
                raise faults.api_rate_limited(decision)
            if fault and fault.kind:
                status, body = self._provider_fault(op, fault.kind)
            else:
                case, near_miss = self._match(op, identity)
                status, body, headers = self._answer(op, case, held, near_miss)
        except ApiError as error:
            status, payload = errors.render(error, op.v3)
            body, headers = errors.dumps(payload), dict(error.headers)
        except StoreUnavailable:
            status, payload = errors.render(ApiError("store_unavailable"), op.v3)
            body = errors.dumps(payload)
        if decision and "RateLimit-Limit" not in headers:
            headers.update(decision.headers())
        headers["X-Request-ID"] = uuid.uuid4().hex
        if identity is not None:
            self.journal.record(identity, request, status, case, near_miss, fault.describe() if fault else None)
        return Response(body, status, headers, content_type=JSON)

    def _match(self, op, identity):
        fixtures = self.population.current
        if identity.france_connect is not None:
            case = fixtures.match_france_connect(op.operation_id, identity.france_connect, request.args)
        else:
            case = fixtures.match(op.operation_id, request.args)
        if case is not None:
            return case, None
        return fixtures.fallback.get(op.operation_id), fixtures.near_miss(op.operation_id, request.args)

    def _answer(self, op, case, held, near_miss):
        headers = {}
        if near_miss:
            headers["X-Sandbox-Near-Miss"] = json.dumps(near_miss, ensure_ascii=True, separators=(",", ":"))
        if case is None:
            status, body = self._provider_fault(op, "not_found")
            return status, body, headers
        if case.latency_ms:
            time.sleep(min(case.latency_ms, faults.MAX_LATENCY_MS) / 1000)
        headers["X-Sandbox-Case"] = case.id
        if case.problem:
            headers["X-Sandbox-Fixture-Invalid"] = case.problem.encode("ascii", "replace").decode()[:300]
        try:
            status, body = self._render(op, case, held)
        except NothingVisible:
            status, body = self._provider_fault(op, "not_found")
        return status, body, headers

    def _render(self, op, case, held):
        if self._rendered_for is not self.population.current:
            self._rendered, self._rendered_for = {}, self.population.current
        key = (case, held)
        cached = self._rendered.get(key)
        if cached is None:
            payload = case.payload
            scopes = self.catalogue.get(op.operation_id)
            if case.status == 200 and scopes is not None:
                payload = scopes.mask(payload, held)
            cached = (case.status, errors.dumps(payload))
            if len(self._rendered) > 50_000:
                self._rendered.clear()
            self._rendered[key] = cached
        return cached

    def _provider_fault(self, op, kind):
        scopes = self.catalogue.get(op.operation_id)
        provider = scopes.provider if scopes else "fournisseur"
        prefix = scopes.code_prefix if scopes else "00"
        status, payload = errors.provider_fault(kind, op.v3, provider, prefix)
        return status, errors.dumps(payload)
