"""The sandbox's own routes: ping, introspect, tokens, journal, personas, scopes, the spec."""
from __future__ import annotations

import datetime
import json
import uuid

from flask import Blueprint, Response, current_app, jsonify, redirect, request

from .api import auth as auth_module
from .api import transport
from .population import runtime as persona_rules
from .production.errors import ApiError

MAX_TTL = 10 * 365 * 86400
MAX_BODY = 64 * 1024  # a token request is a few hundred bytes; more is a mistake or an attack
bp = Blueprint("sandbox", __name__)


def _sandbox():
    return current_app.extensions["sandbox"]


def _caller():
    """The calling token of a sandbox route (same places as v2: X-Api-Key, Bearer, ?token=)."""
    sandbox = _sandbox()
    token, _ = auth_module.extract(request, None)
    if not token:
        raise ApiError("missing_token")
    identity = sandbox.authenticator.france_connect(token) or sandbox.authenticator.verify(token)
    if identity.kind == "jwt" and sandbox.store.is_revoked(identity.key):
        raise ApiError("revoked_token")
    return identity


@bp.get("/")
def home():
    return redirect("/docs", 302)


@bp.get("/api/ping")
def ping():
    return jsonify("pong")  # production's body: the JSON string "pong"


@bp.get("/api/caf/famille")
@bp.get("/api/impots/svair")
def retired_v1():
    """Production's retired routes outside any spec: 410 and its text (production/retired.py)."""
    status, body, headers = transport.retired_answer(request.path)
    response = Response(body, status, headers)
    del response.headers["Content-Type"]  # production sends none
    return response


@bp.get("/api/<provider>/ping")
def provider_ping(provider):
    """Production's per-provider pings (`/api/caf/ping`...), served when a loaded spec declares them."""
    if f"/api/{provider}/ping" not in _sandbox().specs.document.get("paths", {}):
        raise ApiError("route_not_found")
    return jsonify("pong")


@bp.get("/api/introspect")
def introspect():
    identity = _caller()
    return jsonify({"_id": identity.key, "name": identity.name, "scopes": sorted(identity.scopes)})


def _json_body(limit: int, setting: str = ""):
    """The body read as JSON whatever its Content-Type says (`curl -d '{...}'` labels it a form):
    {} when empty, None when not JSON."""
    raw = request.stream.read(limit + 1)  # bounded, whatever Content-Length says (or chunked)
    if len(raw) > limit:
        raise ApiError("payload_too_large", parameter=setting or None,
                       detail=f"Le corps de la requête dépasse {limit // 1024} Kio{f' ({setting})' if setting else ''}.")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None


@bp.post("/sandbox/tokens")
def mint_token():
    sandbox = _sandbox()
    body = _json_body(MAX_BODY)
    if not isinstance(body, dict):
        raise ApiError("invalid_parameter", parameter="body", detail="Le corps doit être un objet JSON "
                       '{"scopes": [...], "ttl": secondes}')
    known = set(sandbox.catalogue.all_scopes())
    scopes = body.get("scopes")
    if scopes is None:
        scopes = sorted(known)
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ApiError("invalid_parameter", parameter="scopes", detail="scopes doit être une liste de noms de scopes")
    unknown = sorted(set(scopes) - known)
    if unknown:
        named = ", ".join(name[:80] for name in unknown[:5]) + (f" (+{len(unknown) - 5})" if len(unknown) > 5 else "")
        raise ApiError("invalid_parameter", parameter="scopes",
                       detail=f"Scopes inconnus : {named} (liste : GET /sandbox/scopes)")
    ttl = body.get("ttl", sandbox.settings.default_token_ttl)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL:
        raise ApiError("invalid_parameter", parameter="ttl", detail=f"ttl doit être un entier de 1 à {MAX_TTL} secondes")
    token, claims = auth_module.mint(sandbox.secret, scopes, ttl)
    expires = datetime.datetime.fromtimestamp(claims["exp"], datetime.timezone.utc)
    return jsonify(token=token, jti=claims["jti"], scopes=claims["scopes"],
                   expires_at=expires.isoformat().replace("+00:00", "Z")), 201


@bp.delete("/sandbox/tokens/<jti>")
def revoke_token(jti):
    try:
        jti = str(uuid.UUID(jti))  # every sandbox token's jti is a UUID; anything else names no token
    except ValueError:
        raise ApiError("token_not_found") from None
    _sandbox().store.revoke(jti)
    return Response(status=204)


@bp.get("/sandbox/requests")
def list_requests():
    identity = _caller()
    since = request.args.get("since")
    if since is not None and not since.strip():  # `?since=$UNSET`: say so rather than list everything
        raise ApiError("invalid_parameter", parameter="since", detail="since must be an ISO 8601 date-time")
    try:
        entries = _sandbox().journal.entries(identity, request.args.get("path"), since, request.args.get("after"))
    except ValueError as exc:
        raise ApiError("invalid_parameter", parameter=str(exc).split()[0], detail=str(exc)) from None
    return jsonify(requests=entries)


@bp.delete("/sandbox/requests")
def forget_requests():
    _sandbox().journal.forget(_caller())
    return Response(status=204)


def _optional_caller():
    """The caller when a token is given (then it must be valid), else None."""
    return _caller() if auth_module.extract(request, None)[0] else None


@bp.get("/sandbox/personas")
def personas():
    sandbox = _sandbox()
    catalogue = sandbox.population.current.catalogue(sandbox.operations)
    return jsonify(operations=sandbox.personas.catalogue(catalogue, _optional_caller()))


@bp.post("/sandbox/personas")
def create_persona():
    sandbox = _sandbox()
    identity = _caller()
    body = _json_body(min(persona_rules.MAX_BODY, sandbox.settings.persona_bytes), "SANDBOX_PERSONA_BYTES")
    if body is None:
        raise persona_rules.InvalidPersona("$", "le corps n'est pas du JSON")
    case = sandbox.personas.create(body, identity)
    return jsonify(sandbox.personas.view(case, request.url_root)), 201, {"Location": f"/sandbox/personas/{case.persona_id}"}


@bp.get("/sandbox/personas/<path:name>")
def show_persona(name):
    sandbox = _sandbox()
    case = sandbox.personas.get(name, _optional_caller())
    if case is None:
        raise ApiError("persona_not_found")
    return jsonify(sandbox.personas.view(case, request.url_root))


@bp.delete("/sandbox/personas/<path:name>")
def delete_persona(name):
    if not _sandbox().personas.delete(name, _caller()):
        raise ApiError("persona_not_found")
    return Response(status=204)


@bp.get("/sandbox/usage")
def usage():
    """What the calling token holds in the store, against its quotas and the instance's bounds."""
    sandbox = _sandbox()
    identity = _caller()
    used, bounds = sandbox.store.usage(identity.key), sandbox.store.bounds
    return jsonify({
        "journal": {"rows": used["journal_rows"], "bytes": used["journal_bytes"],
                    "limits": {"rows": bounds.journal_rows, "bytes": bounds.token_bytes,
                               "row_bytes": bounds.row_bytes}},
        "personas": {"count": used["personas"], "bytes": used["persona_bytes"],
                     "limits": {"count": bounds.token_personas, "bytes": bounds.token_persona_bytes,
                                "persona_bytes": bounds.persona_bytes, "ttl": bounds.persona_ttl}},
        "instance": {"journal_bytes": used["all_journal_bytes"], "personas": used["all_personas"],
                     "persona_bytes": used["all_persona_bytes"], "revocations": used["revocations"],
                     "limits": {"journal_bytes": bounds.journal_bytes, "personas": bounds.personas,
                                "persona_bytes": bounds.personas_bytes, "revocations": bounds.revocations}},
        "token": {"expires_at": persona_rules.iso(identity.expires_at)},
    })


@bp.get("/sandbox/scopes")
def scopes():
    return jsonify(scopes=_sandbox().catalogue.describe())


@bp.get("/openapi.yml")
def openapi():
    # the merged spec, with the examples the /docs page pre-fills (sandbox/tryit/examples.py)
    return Response(current_app.extensions["docs_spec"].yaml(), 200, content_type="application/yaml; charset=utf-8")
