"""The sandbox's own routes: ping, introspect, tokens, journal, personas, scopes, the spec."""
from __future__ import annotations

import datetime
import json
import uuid

from flask import Blueprint, Response, current_app, jsonify, redirect, request

from .api import auth as auth_module
from .api import faults, transport
from .population import runtime as persona_runtime, submitted as persona_rules
from .production import pings as pings_module
from .production.errors import ApiError
from .production.requests import bearer_token
from .settings import in_networks, parse_networks

MAX_TTL = 10 * 365 * 86400
LOOPBACK = parse_networks("127.0.0.0/8,::1", "loopback")
MAX_BODY = 64 * 1024  # a token request is a few hundred bytes; more is a mistake or an attack
bp = Blueprint("sandbox", __name__)


def _sandbox():
    return current_app.extensions["sandbox"]


def _caller():
    """The calling token of a sandbox route that reads (same places as v2: X-Api-Key, Bearer, ?token=)."""
    token, _ = auth_module.extract(request, None)
    if not token:
        raise ApiError("missing_token")
    return _identify(token)


def _writer():
    """The calling token of a sandbox route that writes: in a header only. A page of another
    site can make a visitor's browser send ?token= or a form, never a header without CORS'
    preflight, which only the allowed origins pass (README, Changes a pipeline may notice)."""
    return _identify(_header_token())


def _header_token() -> str:
    """The token of a write, from X-Api-Key or Authorization: Bearer (?token= is refused)."""
    token = bearer_token(request.headers) or request.headers.get("X-Api-Key")
    if not token:
        raise ApiError("token_in_query" if request.args.get("token") else "missing_token")
    return token


def _identify(token):
    sandbox = _sandbox()
    if sandbox.settings.public and sandbox.population.france_connect(token) is not None:
        # the fixtures' FranceConnect tokens (`tout`...) are everyone's: on a shared instance
        # one visitor would read and delete what another did under that identity
        raise ApiError("forbidden", detail="Sur une instance publique, /sandbox/* refuse les jetons FranceConnect "
                                           "des fixtures, partagés par tous : créez votre jeton (POST /sandbox/tokens) "
                                           "ou connectez-vous par le FranceConnect intégré.")
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
    """Production's provider ping (production/pings.py): its state for the run, or the one a fault
    header asks for this call (`X-Sandbox-Fault: maintenance` -> maintenance, any other provider
    failure -> failure), when faults are on."""
    asked = None
    fault = faults.from_request(request.headers) if _sandbox().settings.faults else None
    if fault and fault.kind:
        asked = "maintenance" if fault.kind == "maintenance" else "failure"
    status, body = _sandbox().pings.answer(provider, asked)
    return _json(body, status)


@bp.get("/api/pings")
def provider_pings():
    """Every provider ping with a status page, as production lists them (absolute URLs)."""
    return _json(pings_module.index(request.host_url), 200)


def _json(body, status):
    # compact, as Rails renders `render json:`
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), status,
                    content_type="application/json; charset=utf-8")


@bp.get("/api/introspect")
def introspect():
    identity = _caller()
    return jsonify({"_id": identity.key, "name": identity.name, "scopes": sorted(identity.scopes)})


def _json_body(limit: int):
    """The body of a write, as JSON: {} when there is none at all, None when it is not JSON.
    Anything but `Content-Type: application/json` is refused (415): a form or a text/plain body
    is what a page of another site can make a browser send without asking (no CORS preflight)."""
    raw = request.stream.read(limit + 1)  # bounded, whatever Content-Length says (or chunked)
    if (raw or request.content_type) and not _is_json(request.mimetype):
        raise ApiError("unsupported_media_type", detail=f"Content-Type: {request.mimetype or 'absent'} ; une écriture "
                       "sur /sandbox/* envoie du JSON avec Content-Type: application/json.")
    if len(raw) > limit:
        raise ApiError("payload_too_large", detail=f"Le corps de la requête dépasse {limit // 1024} Kio.")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


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
    sandbox.metrics.minted()
    expires = datetime.datetime.fromtimestamp(claims["exp"], datetime.timezone.utc)
    return jsonify(token=token, jti=claims["jti"], scopes=claims["scopes"],
                   expires_at=expires.isoformat().replace("+00:00", "Z")), 201


@bp.delete("/sandbox/tokens/<jti>")
def revoke_token(jti):
    """A token revokes itself only: whoever saw a jti (in a journal, a log) cannot revoke the
    token, and no row is written for a jti no token of ours carries."""
    sandbox = _sandbox()
    try:
        jti = str(uuid.UUID(jti))  # every sandbox token's jti is a UUID; anything else names no token
    except ValueError:
        raise ApiError("token_not_found") from None
    identity = sandbox.authenticator.verify(_header_token())  # revoking a token already revoked is no error
    if identity.kind != "jwt" or identity.key != jti:
        raise ApiError("forbidden", detail="Un jeton ne révoque que lui-même : envoyez le jeton de ce jti "
                                           "(X-Api-Key ou Authorization: Bearer).")
    sandbox.store.revoke(jti, expires_at=identity.expires_at)  # kept no longer than the token lives
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
    _sandbox().journal.forget(_writer())
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
    identity = _writer()
    body = _json_body(persona_rules.MAX_BODY)
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
    if not _sandbox().personas.delete(name, _writer()):
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
        "token": {"expires_at": persona_runtime.iso(identity.expires_at)},
    })


@bp.get("/sandbox/scopes")
def scopes():
    return jsonify(scopes=_sandbox().catalogue.describe())


@bp.get("/sandbox/status")
def status():
    """The fixture set being served, the last reload and its problems: where a broken edit shows."""
    return jsonify({"fixtures": _sandbox().population.status()})


@bp.get("/openapi.yml")
def openapi():
    # the merged spec, with the examples the /docs page pre-fills (sandbox/tryit/examples.py)
    return Response(current_app.extensions["docs_spec"].yaml(), 200, content_type="application/yaml; charset=utf-8")


@bp.get("/metrics")
def metrics():
    """Prometheus' text format (sandbox/metrics.py). On a public instance, only loopback (a
    scraper beside the sandbox, not a client relayed by a proxy on the same machine) and the
    addresses of SANDBOX_METRICS_FROM may read it."""
    sandbox = _sandbox()
    allowed = sandbox.metrics_from
    if allowed is not None:
        direct = request.environ.get("sandbox.peer", request.remote_addr)
        loopback = in_networks(direct, LOOPBACK) and "X-Forwarded-For" not in request.headers \
            and request.remote_addr == direct
        if not (loopback or in_networks(request.remote_addr, allowed)):
            raise ApiError("forbidden", detail="/metrics n'est lisible que depuis la machine de l'instance ou les "
                                               "adresses de SANDBOX_METRICS_FROM.")
    body, content_type = sandbox.metrics.render()
    return Response(body, 200, content_type=content_type)
