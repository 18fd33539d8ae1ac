"""v2 and v3 error bodies, one catalogue.

Handlers raise ApiError(kind, ...); the error is rendered in the format of the route that
was called (v2: {error, reason, message}; v3+: {errors: [{code, title, detail, source, meta}]}),
so a step of the pipeline never needs to know which version it serves.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

V2_RATE_LIMITED = {"errors": ["Vous avez effectué trop de requêtes"]}

def _catalogue() -> dict:
    with (Path(__file__).parent / "data" / "api_errors.yml").open(encoding="utf-8") as f:
        return yaml.safe_load(f)


_CATALOGUE = _catalogue()
# kind -> (v2 status, v2 slug, v3 status, v3 code, v3 title, detail): data/api_errors.yml
API_ERRORS = {kind: (*row["v2"], *row["v3"], row["detail"]) for kind, row in _CATALOGUE["errors"].items()}
# Validation failures on v3 that the spec's schema finds: the parameter decides the code.
V3_PARAMETER_CODES = _CATALOGUE["schema_parameter_codes"]

# Provider faults (fixtures' deliberate errors and X-Sandbox-Fault): production's rules live in
# data/provider_errors.yml, read by provider_errors.py.
from . import provider_errors as _provider_errors  # noqa: E402

PROVIDER_FAULTS = {**_provider_errors.KINDS, _provider_errors.API_INTERNAL: None}
FAULT_BY_STATUS = _provider_errors.FAULT_BY_STATUS


class ApiError(Exception):
    """An answer that is not the fixture's: rendered in the called route's own format."""

    def __init__(self, kind, *, parameter=None, detail=None, headers=None):
        super().__init__(kind)
        self.kind = kind
        self.parameter = parameter
        self.detail = detail
        self.headers = headers or {}


def v2_body(slug, reason, message=None):
    return {"error": slug, "reason": reason, "message": message or reason}


def v3_body(code, title, detail, source=None, meta=None):
    """One error; `source` only when set, as production's serializer drops empty keys."""
    error = {"code": code, "title": title, "detail": detail, "source": source, "meta": meta or {}}
    if source is None:
        del error["source"]
    return {"errors": [error]}


# Where production names the faulty input (siade/config/errors.yml): the token errors only.
TOKEN_SOURCE_CODES = frozenset({"00100", "00101", "00103", "00105", "00106"})
# v2 answers these with production's flat list, not {error, reason, message}
# (siade/app/controllers/api_controller.rb and config/initializers/rack_attack.rb).
V2_FLAT_KINDS = frozenset({"expired_token", "revoked_token"})


class ParameterErrors(ApiError):
    """Production's parameter errors (sandbox/production/validation_rules.py): each a dict of code,
    title, detail and, where production sets them, source and meta. v3 lists them all (422);
    v2 answers the first (400 bad_request). `hints`: what to send instead, one per item
    (parameter_hints.py), which the body never shows: the API adds them as X-Sandbox-Hint."""

    def __init__(self, items, hints=()):
        super().__init__("invalid_parameters")
        self.items = list(items)
        self.hints = list(hints)


def render(error: ApiError, v3: bool) -> tuple[int, dict]:
    """ApiError -> (status, body) in the route's format."""
    if error.kind == "invalid_parameter":
        return _invalid_parameter(error, v3)
    if isinstance(error, ParameterErrors):
        if v3:
            return 422, {"errors": [{"code": e["code"], "title": e["title"], "detail": e["detail"],
                                     **({"source": e["source"]} if e.get("source") else {}),
                                     "meta": dict(e.get("meta") or {})} for e in error.items]}
        return 400, v2_body("bad_request", error.items[0]["detail"])
    v2_status, slug, v3_status, code, title, detail = API_ERRORS[error.kind]
    detail = error.detail or detail
    if v3:
        source = {"parameter": error.parameter} if error.parameter else (
            {"parameter": "token"} if code in TOKEN_SOURCE_CODES else None)
        return v3_status, v3_body(code, title, detail, source)
    if error.kind == "rate_limited":
        return 429, V2_RATE_LIMITED
    if error.kind in V2_FLAT_KINDS:
        return v2_status, {"errors": [detail]}
    return v2_status, v2_body(slug, detail)


def _invalid_parameter(error, v3):
    name = (error.parameter or "").removesuffix("[]")
    if v3:
        code = V3_PARAMETER_CODES.get(name, "00366")
        return 422, v3_body(code, "Entité non traitable", error.detail, {"parameter": error.parameter})
    return 400, v2_body("bad_request", error.detail)


def provider_fault(fault: str, v3: bool, provider: str, prefix: str, operation_id: str | None = None
                   ) -> tuple[int, dict]:
    """A provider's failure as production answers it; `api_internal`: the API's own 500."""
    if fault == _provider_errors.API_INTERNAL:
        return render(ApiError("internal"), v3)
    return _provider_errors.provider_fault(fault, v3, provider, prefix, operation_id)


def dumps(body) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


# --- answers gunicorn gives itself --------------------------------------------------------------
# A request gunicorn cannot parse (request line over 8 KiB, too many or too long headers, bad
# syntax) is answered by gunicorn before any route runs, as an HTML page. In the workers, that
# page is replaced by the API's error body (v2 format: the route is not known yet) with nosniff,
# like every other answer of the sandbox.
def write_server_error(sock, status_int, reason, mesg):
    from gunicorn import util
    slug = "bad_request" if status_int < 500 else "error"
    body = dumps(v2_body(slug, f"{reason} : {mesg}" if mesg else reason))
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            "Content-Type: application/json; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install_server_error_pages():
    """Called in each gunicorn worker (gunicorn_conf.post_fork)."""
    from gunicorn import util
    util.write_error = write_server_error
