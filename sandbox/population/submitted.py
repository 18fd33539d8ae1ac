"""A persona as a client submits it (`POST /sandbox/personas`): checked as a case file is.

Field by field, with the json path of the field at fault in a 422 (InvalidPersona): the
operation, `like` (a case to copy, deep-merged with what is sent), the parameters (the route's
own validation), the status, the payload (against the response schema of its status once its
relative dates are resolved), the description, `global`, `ttl`. What comes out is the document
runtime.py keeps in the store; the store's quotas are runtime.py's.
"""
from __future__ import annotations

import json
import secrets

from . import dates
from .calls import client_query
from .lookup import IDENTITY_PARAMS
from ..production import clock
from ..production.errors import ApiError, ParameterErrors

MAX_BODY = 1 << 20  # as a case file; the store's persona_bytes bound is usually lower
FIELDS = ("operation", "like", "params", "status", "payload", "description", "global", "ttl")


class InvalidPersona(ApiError):
    """A persona that would not load as a fixture file: 422, the v2 sandbox error body, whose
    reason starts with the json path of the field at fault (`$.payload.data.mois: ...`)."""
    status = 422

    def __init__(self, where: str, message: str, more: list = ()):
        text = f"{where}: {message}"
        if more:
            text += " ; " + " ; ".join(f"{w}: {m}" for w, m in more)
        super().__init__("invalid_parameter", parameter=where, detail=text)


def merge(base, over):
    """`over` deep-merged into `base`: mappings key by key, anything else (lists too) replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return over


def document(body, identity, personas) -> dict:
    """The document the store keeps for `body` (POST /sandbox/personas), or InvalidPersona / 403.

    `personas`: the RuntimePersonas it goes to (the operations, `like`'s case, the schema
    checker, the bounds and the store's clock)."""
    if not isinstance(body, dict):
        raise InvalidPersona("$", 'le corps doit être un objet JSON {"operation", "params", "status", "payload"}')
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidPersona(f"$.{unknown[0]}", f"champ inconnu (champs acceptés : {', '.join(FIELDS)})")
    base = None
    if body.get("like") is not None:
        if not isinstance(body["like"], str):
            raise InvalidPersona("$.like", "un cas, comme X-Sandbox-Case le nomme : <operation>/<fichier> ou runtime/<id>")
        base = personas.get(body["like"], identity)
        if base is None:
            raise InvalidPersona("$.like", f"aucun cas {body['like'][:200]!r} (liste : GET /sandbox/personas)")
    op = operation_named(personas.operations, body["operation"], "$.operation") if body.get("operation") is not None else None
    if base is not None and op is not None and op.operation_id != base.operation_id:
        raise InvalidPersona("$.operation", f"le cas de like appartient à {base.operation_id}")
    if op is None and base is None:
        raise InvalidPersona("$.operation", "obligatoire : un x-operationId ou une route, ou like")
    op = op or personas.operations[base.operation_id]

    params = _params(body.get("params"), base)
    status = body.get("status", base.status if base is not None else 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise InvalidPersona("$.status", "un code HTTP (entier de 100 à 599)")
    if "payload" in body:
        payload = merge(base.payload, body["payload"]) if base is not None else body["payload"]
    elif base is not None:
        payload = base.payload
    else:
        raise InvalidPersona("$.payload", "obligatoire (le corps de la réponse)")
    description = body.get("description")
    if description is None:
        description = f"{base.description} (copie)" if base is not None else f"Persona créé à l'exécution ({op.path})"
    if not isinstance(description, str):
        raise InvalidPersona("$.description", "une chaîne")
    shared = body.get("global", False)
    if not isinstance(shared, bool):
        raise InvalidPersona("$.global", "true ou false")
    if shared and not personas.allow_global:
        raise ApiError("forbidden", detail="$.global: une instance publique ne sert pas de persona global (il "
                                           "changerait les réponses de tous) ; le persona sans global ne répond "
                                           "qu'à votre jeton.")
    ttl = body.get("ttl")
    longest = personas.bounds.persona_ttl
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= longest):
        raise InvalidPersona("$.ttl", f"un entier de 1 à {longest} secondes (SANDBOX_PERSONA_TTL)")

    _check_params(op, params)
    payload = json.loads(json.dumps(payload, default=str))  # as every worker will read it back
    wrong = dates.problems(payload) + dates.problems(description, "$.description")
    if not wrong:
        wrong = personas.checker.problems(op.operation_id, status, dates.resolve(payload, clock.today()))
    if wrong:
        raise InvalidPersona(*wrong[0], more=wrong[1:])

    now = personas.store.clock()
    expires_at = now + (ttl or longest)
    if not shared and identity.expires_at is not None:  # no one else could see it after
        expires_at = min(expires_at, float(identity.expires_at))
    doc = {"id": secrets.token_hex(8), "operation_id": op.operation_id, "params": params, "status": status,
           "payload": payload, "description": description, "global": shared, "owner": identity.key,
           "created_at": now, "expires_at": expires_at, "like": base.id if base is not None else None}
    return doc


def operation_named(operations, wanted, where: str):
    from .scaffold import ScaffoldError, find_operation
    if not isinstance(wanted, str):
        raise InvalidPersona(where, "un x-operationId ou une route (/v3/...)")
    try:
        return find_operation(operations, wanted.strip())
    except ScaffoldError as exc:
        raise InvalidPersona(where, str(exc)) from None

def _params(params, base) -> dict:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidPersona("$.params", "un objet paramètre -> valeur")
    merged = json.loads(json.dumps(base.params, default=str)) if base is not None else {}
    for name, value in params.items():
        scalar = (str, int, float, bool)
        if value is None and base is not None:
            merged.pop(name, None)  # `like` with a parameter set to null: the copy goes without it
            continue
        if not (isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))):
            raise InvalidPersona(f"$.params.{name}", "une valeur (chaîne, nombre, booléen) ou une liste de valeurs")
        merged[name] = value
    return merged

def _check_params(op, params: dict):
    """The parameters as the route checks a request that carries them (a FranceConnect-only
    route's params describe the identity behind the token: nothing is sent to check)."""
    from werkzeug.datastructures import Headers, MultiDict

    names = {p.key for p in op.params if p.location == "query"}
    if op.france_connect_only:  # the params name the identity the FranceConnect token carries
        names |= IDENTITY_PARAMS
    for name in params:
        if name.removesuffix("[]") not in names:
            raise InvalidPersona(f"$.params.{name}", f"n'est pas un paramètre de {op.method} {op.path} "
                                 f"(paramètres : {', '.join(sorted(names)) or 'aucun'})")
    if op.france_connect_only:
        return
    try:
        op.validate(MultiDict(client_query(op, params)), Headers())
    except ParameterErrors as error:
        items = [((e.get("source") or {}).get("parameter"), e["detail"]) for e in error.items]
        found = [(f"$.params.{name}" if name else "$.params", detail) for name, detail in items]
        raise InvalidPersona(*found[0], more=found[1:]) from None
    except ApiError as error:
        name = (error.parameter or "").removesuffix("[]")
        raise InvalidPersona(f"$.params.{name}" if name else "$.params", error.detail or error.kind) from None
