"""The sandbox's own routes: ping, introspect, tokens, journal, personas, scopes, the spec."""
from __future__ import annotations

import datetime

from flask import Blueprint, Response, current_app, jsonify, request

from . import auth as auth_module
from . import errors
from .errors import ApiError
from .store import StoreUnavailable

MAX_TTL = 10 * 365 * 86400
bp = Blueprint("sandbox", __name__)


def _sandbox():
    return current_app.extensions["sandbox"]


def _v2_error(error: ApiError) -> Response:
    status, payload = errors.render(error, v3=False)
    return Response(errors.dumps(payload), status, error.headers, content_type="application/json; charset=utf-8")


def _caller():
    """The calling token of a sandbox route (same places as v2: X-Api-Key, Bearer, ?token=)."""
    sandbox = _sandbox()
    token, _ = auth_module.extract(request, None)
    if not token:
        raise ApiError("missing_token")
    identity = sandbox.authenticator.france_connect(token) or sandbox.authenticator.verify(token)
    revoked, _ = sandbox.store.admit(identity.key if identity.kind == "jwt" else None, [])
    if revoked:
        raise ApiError("revoked_token")
    return identity


@bp.errorhandler(ApiError)
def _api_error(error):
    return _v2_error(error)


@bp.errorhandler(StoreUnavailable)
def _store_down(_):
    return _v2_error(ApiError("store_unavailable"))


@bp.before_request
def _sandbox_rate_limit():
    if request.path.startswith(("/sandbox/", "/docs")):
        _sandbox().limiter.admit_sandbox(request.remote_addr or "-")


@bp.get("/api/ping")
def ping():
    return jsonify(status="ok")


@bp.get("/api/introspect")
def introspect():
    identity = _caller()
    return jsonify({"_id": identity.key, "name": identity.name, "scopes": sorted(identity.scopes)})


@bp.post("/sandbox/tokens")
def mint_token():
    sandbox = _sandbox()
    body = request.get_json(silent=True) if request.data else {}
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
        raise ApiError("invalid_parameter", parameter="scopes",
                       detail=f"Scopes inconnus : {', '.join(unknown)} (liste : GET /sandbox/scopes)")
    ttl = body.get("ttl", sandbox.settings.default_token_ttl)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL:
        raise ApiError("invalid_parameter", parameter="ttl", detail=f"ttl doit être un entier de 1 à {MAX_TTL} secondes")
    token, claims = auth_module.mint(sandbox.secret, scopes, ttl)
    expires = datetime.datetime.fromtimestamp(claims["exp"], datetime.timezone.utc)
    return jsonify(token=token, jti=claims["jti"], scopes=claims["scopes"],
                   expires_at=expires.isoformat().replace("+00:00", "Z")), 201


@bp.delete("/sandbox/tokens/<jti>")
def revoke_token(jti):
    _sandbox().store.revoke(jti)
    return Response(status=204)


@bp.get("/sandbox/requests")
def list_requests():
    identity = _caller()
    try:
        entries = _sandbox().journal.entries(identity, request.args.get("path"), request.args.get("since"))
    except ValueError as exc:
        raise ApiError("invalid_parameter", parameter="since", detail=str(exc)) from None
    return jsonify(requests=entries)


@bp.delete("/sandbox/requests")
def forget_requests():
    _sandbox().journal.forget(_caller())
    return Response(status=204)


@bp.get("/sandbox/personas")
def personas():
    sandbox = _sandbox()
    return jsonify(operations=sandbox.population.current.catalogue(sandbox.operations))


@bp.get("/sandbox/scopes")
def scopes():
    return jsonify(scopes=_sandbox().catalogue.describe())


@bp.get("/openapi.yml")
def openapi():
    return Response(_sandbox().spec_yaml, 200, content_type="application/yaml; charset=utf-8")
