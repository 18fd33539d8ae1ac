"""The spec as the "try it" page shows it: every operation pre-filled with a persona that answers.

For each API operation, a 200 case of the fixtures becomes the `example` of its parameters (so
"Try it out" then "Execute" answers 200 at once), its payload the "Example Value" of the 200
answer, and each error status shows the body the sandbox really sends (rendered by errors.py).
Worked out once, on first use, and again only when the fixtures have been reloaded or the day
has changed (relative dates in payloads).
"""
from __future__ import annotations

import copy
import threading

import yaml
from werkzeug.datastructures import MultiDict

from ..population import dates
from ..production import errors
from ..production.errors import ApiError
from ..population.calls import RECIPIENT, sent_params
from ..population.lookup import request_key
from ..production import clock
from ..production.retired import RETIRED

# The official staging's well-known keys: integrators already know them, so they come first.
WELL_KNOWN = {"identifiant": "default", "ine": "1234567890a", "numeroallocataire": "0000354", "codepostal": "99148"}
# Status -> the error that answers with it, when no fixture case is involved.
API_ERROR_BY_STATUS = {401: "missing_token", 403: "insufficient_scopes", 410: "gone", 413: "payload_too_large",
                       429: "rate_limited"}


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    def ignore_aliases(self, data):  # one persona's payload may show twice: write it out, no &id001
        return True


class DocsSpec:
    """The merged spec with examples, for /openapi.yml and the /docs page."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self._lock = threading.Lock()
        self._built_for = None
        self._document = self._yaml = None  # built on first use: the first API answer need not wait for it

    def document(self) -> dict:
        with self._lock:
            current = self.sandbox.population.current
            built_for = (current, clock.today())  # payloads' relative dates move with the day
            if self._built_for != built_for:  # first use, the fixtures were reloaded, or a new day
                self._document = with_examples(self.sandbox.specs.document, self.sandbox.operations, current,
                                               self.sandbox.catalogue, self.sandbox.settings.serve_retired)
                self._built_for, self._yaml = built_for, None
            return self._document

    def yaml(self) -> bytes:
        document = self.document()
        with self._lock:
            if self._yaml is None:  # dumped on first use: a start-up need not pay for it
                self._yaml = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True).encode()
            return self._yaml


def with_examples(document: dict, operations: dict, fixtures, catalogue, serve_retired: bool = False) -> dict:
    """A copy of `document` whose API operations carry examples, and whose retired routes say so
    and come last; `document` is left as it is."""
    out = {**document, "paths": dict(document.get("paths") or {})}
    for op in operations.values():
        item = out["paths"].get(op.path)
        if not isinstance(item, dict) or not isinstance(item.get(op.method.lower()), dict):
            continue
        item = out["paths"][op.path] = dict(item)
        raw = item[op.method.lower()] = dict(item[op.method.lower()])
        case = None if op.gone else persona(op, fixtures)
        params = query_params(op, case) if case is not None else {}
        # Path-level parameters are copied into the operation (an operation's parameter overrides
        # the path's of the same name), so the examples of one method do not reach another.
        own = {(q.get("name"), q.get("in")): q for q in map(lambda n: _resolve(n, document),
                                                            item.get("parameters") or []) if isinstance(q, dict)}
        own.update({(q.get("name"), q.get("in")): q for q in map(lambda n: _resolve(n, document),
                                                                 raw.get("parameters") or []) if isinstance(q, dict)})
        if own:
            raw["parameters"] = [_param(q, params) for q in own.values()]
        if "responses" in raw:
            raw["responses"] = {status: _response(response, _body(op, status, case, catalogue), document)
                                for status, response in raw["responses"].items()}
        retired = retirement(op, serve_retired)
        if retired:
            _mark_retired(raw, retired)
    return _retired_last(out, [op for op in operations.values() if op.gone])


def retirement(op, serve_retired: bool) -> dict | None:
    """None for a route production serves; else {"answer": the text of its 410 or None when this
    sandbox serves it anyway (--serve-retired)}. Also the persona catalogue's (docs.py)."""
    if op is None or not op.gone:
        return None
    if op.path in RETIRED:  # production's text, or served here (`--serve-retired`: api/transport.py)
        text, may_serve = RETIRED[op.path]
        return {"answer": None if serve_retired and may_serve else text}
    return {"answer": "Route retirée"}  # a loaded spec's own 410-only route: errors.py's "gone"


def _mark_retired(raw: dict, retired: dict):
    """The operation's line and text say it is retired (Swagger UI also strikes it through)."""
    raw["deprecated"] = True
    raw["summary"] = f"Route retirée — {raw.get('summary') or ''}".rstrip(" —")
    if retired["answer"]:
        notice = f"**Route retirée** par la production : chaque appel y répond 410 « {retired['answer']} »."
    else:
        notice = ("**Route retirée** par la production (qui y répond 410) ; ce bac à sable la sert encore, "
                  "lancé avec `--serve-retired`.")
    raw["description"] = notice + ("\n\n" + raw["description"] if raw.get("description") else "")


def _retired_last(out: dict, gone: list) -> dict:
    """Retired routes after the others, and the sections (tags) holding nothing else last, saying so."""
    gone_paths = {op.path for op in gone}
    if not gone_paths:
        return out
    paths = out["paths"]
    out["paths"] = {**{p: v for p, v in paths.items() if p not in gone_paths},
                    **{p: v for p, v in paths.items() if p in gone_paths}}
    live_tags, retired_tags = set(), set()
    for path, item in paths.items():
        for op in (item or {}).values() if isinstance(item, dict) else ():
            if isinstance(op, dict):
                (retired_tags if path in gone_paths else live_tags).update(op.get("tags") or ())
    only_retired = retired_tags - live_tags
    tags = list(out.get("tags") or [])
    if only_retired and tags:
        marked = [{**t, "description": "Retirée. " + (t.get("description") or "")}
                  for t in tags if t.get("name") in only_retired]
        out["tags"] = [t for t in tags if t.get("name") not in only_retired] + marked
    return out


def persona(op, fixtures):
    """The 200 case "Execute" shows: one a request with its params alone really selects."""
    index = fixtures.cases.get(op.operation_id, {})
    answered = [c for c in fixtures.ordered.get(op.operation_id, []) if c.status == 200]
    if op.france_connect_only:  # the bearer's identity picks the case: any answered one shows the payload
        return next((c for c in answered if not c.problem), None)
    names = {p.key for p in op.params if p.location == "query"}
    ranked = sorted((c for c in answered if index.get(c.key) is c and set(c.params) <= names | {"recipient"}),
                    key=lambda c: (-_well_known(c), "officiel" not in c.file.name))
    for case in ranked:
        if case.problem:  # checked against the schema here only: the first good one ends the search
            continue
        args = MultiDict(_pairs(op, query_params(op, case)))
        try:
            op.validate(args, {})
        except ApiError:
            continue
        if fixtures.match(op.operation_id, args, request_key(op.operation_id, args)) is case:
            return case
    return None


def query_params(op, case) -> dict:
    """{spec parameter name: value} of the request that selects `case`."""
    spec_name = {p.key: p.name for p in op.params}
    params = {spec_name.get(name.removesuffix("[]"), name): value
              for name, value in sent_params(op, case.params).items()}
    if op.v3 and "recipient" in op.keys:
        params.setdefault("recipient", RECIPIENT)
    return params


def _well_known(case) -> int:
    return sum(str(v).lower() == WELL_KNOWN.get(k.lower()) for k, v in case.params.items())


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pairs(op, params: dict) -> list:
    return [(name, _text(item)) for name, value in params.items()
            for item in (value if isinstance(value, list) else [value])]


def _resolve(node, document):
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        target = document
        for part in node["$ref"][2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def _param(param: dict, params: dict) -> dict:
    if param.get("in") != "query":
        return param
    param = {k: v for k, v in param.items() if k not in ("example", "examples")}
    if isinstance(param.get("schema"), dict) and "example" in param["schema"]:
        param["schema"] = {k: v for k, v in param["schema"].items() if k != "example"}
    # A parameter the persona does not send gets no example: Swagger UI would send it, and a
    # request with an extra parameter matches no case.
    if param.get("name") in params:
        value = params[param["name"]]
        param["example"] = [_text(v) for v in value] if isinstance(value, list) else _text(value)
    return param


def _body(op, status, case, catalogue):
    """The body the sandbox answers with this status on this operation, or None."""
    code = int(status) if str(status).isdigit() else None
    if code == 200:
        if case is None:
            return None
        payload = case.payload_on(clock.today())
        scopes = catalogue.get(op.operation_id)
        if scopes is not None:  # what a token holding every scope of the route receives
            payload = scopes.mask(payload, frozenset(scopes.scopes))
        return copy.deepcopy(payload)
    if code is None or code < 400:
        return None
    if code in errors.FAULT_BY_STATUS:  # the provider failure `Prefer: code=<status>` asks for
        scopes = catalogue.get(op.operation_id)
        body = errors.provider_fault(errors.FAULT_BY_STATUS[code], op.v3, scopes.provider if scopes else "fournisseur",
                                     scopes.code_prefix if scopes else "00", op.operation_id)
        return body[1] if body[0] == code else None
    if code in (400, 422):
        error = _invalid(op, case)
        if error is None:
            return None
    elif code in API_ERROR_BY_STATUS:
        error = ApiError(API_ERROR_BY_STATUS[code])
    else:
        return None
    rendered_status, body = errors.render(error, op.v3)
    return body if rendered_status == code else None


def _invalid(op, case):
    """The error the persona's request gets without its first required parameter, as the
    sandbox's own validation words it."""
    if case is None:
        return None
    params = query_params(op, case)
    missing = next((p.name for p in op.params if p.required and p.name != "recipient" and p.name in params), None)
    if missing is None:
        return None
    try:
        op.validate(MultiDict(_pairs(op, {k: v for k, v in params.items() if k != missing})), {})
    except ApiError as error:
        return error
    return None


def _response(node, body, document):
    if body is None:
        return node
    response = _resolve(node, document)
    content = response.get("content") if isinstance(response, dict) else None
    if not isinstance(content, dict):
        return node
    media_type = "application/json" if "application/json" in content else next(iter(content))
    media = {k: v for k, v in (content[media_type] or {}).items() if k != "examples"}
    return {**response, "content": {**content, media_type: {**media, "example": body}}}
