"""Load the OpenAPI specs once and compile, per operation, what a request is checked against.

Nothing here runs per request except the compiled checkers: the spec is parsed, its $refs
resolved and each parameter's schema turned into a small closure at start-up.
"""
from __future__ import annotations

import copy
import datetime
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import validation_rules
from .validation_rules import is_siret  # noqa: F401  (production's SIRET check, also known from here)
from .errors import ApiError
from .requests import bearer_token
from .retired import RETIRED
from ..settings import ConfigError

try:
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
# Routes production has removed; they answer 410 whatever a loaded spec says (transport.py
# has production's texts, and the setting that keeps serving the CAF v1 route).
REMOVED_PATHS = frozenset(RETIRED)
CIVIL_STATUS_NAMES = {"nom", "nomNaissance", "nomUsage", "prenom", "prenoms", "dateDeNaissance",
                      "lieuDeNaissance", "sexe", "anneeDateDeNaissance", "moisDateDeNaissance",
                      "jourDateDeNaissance", "codeInseeLieuDeNaissance", "codePaysLieuDeNaissance"}


def read_yaml(path: Path):
    with open(path, "rb") as f:
        return yaml.load(f, Loader=_Loader)


def resolve_refs(node, root, _seen=()):
    """A copy of `node` with every local $ref replaced by what it points to."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            if ref in _seen:
                return {}
            target = root
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return resolve_refs(target, root, _seen + (ref,))
        return {k: resolve_refs(v, root, _seen) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_refs(v, root, _seen) for v in node]
    return node


class ParamError(ValueError):
    pass


def _is_date(value: str) -> bool:
    try:
        datetime.date.fromisoformat(value)
        return len(value) == 10
    except ValueError:
        return False


def _coerce(schema):
    kind = schema.get("type")
    if kind == "integer":
        def coerce(raw):
            if not re.fullmatch(r"-?\d+", raw):
                raise ParamError("doit être un nombre entier")
            return int(raw)
    elif kind == "number":
        def coerce(raw):
            if not re.fullmatch(r"-?\d+(\.\d+)?", raw):
                raise ParamError("doit être un nombre")
            return float(raw) if "." in raw else int(raw)
    elif kind == "boolean":
        def coerce(raw):
            if raw not in ("true", "false"):
                raise ParamError("doit valoir true ou false")
            return raw == "true"
    else:
        def coerce(raw):
            return raw
    return coerce


def compile_scalar(schema):
    """A closure raw string -> value, raising ParamError with a reason a person can read."""
    coerce = _coerce(schema)
    checks = []
    if "enum" in schema:
        allowed = [v for v in schema["enum"] if v is not None]
        checks.append(lambda v: v in allowed or f"doit valoir l'une des valeurs {', '.join(map(str, allowed))}")
    if "pattern" in schema:
        pattern = re.compile(schema["pattern"])
        checks.append(lambda v: not isinstance(v, str) or bool(pattern.search(v))
                      or f"ne respecte pas le format attendu ({schema['pattern']})")
    # Each bound is bound as a default argument: a closure over one shared `n` would check
    # minLength against maxLength (found by tests/test_fuzz.py: "69" refused for minLength 2).
    if "minLength" in schema:
        checks.append(lambda v, n=schema["minLength"]: not isinstance(v, str) or len(v) >= n
                      or f"doit compter au moins {n} caractères")
    if "maxLength" in schema:
        checks.append(lambda v, n=schema["maxLength"]: not isinstance(v, str) or len(v) <= n
                      or f"doit compter au plus {n} caractères")
    if "minimum" in schema:
        checks.append(lambda v, n=schema["minimum"]: isinstance(v, str) or v >= n or f"doit être au moins {n}")
    if "maximum" in schema:
        checks.append(lambda v, n=schema["maximum"]: isinstance(v, str) or v <= n or f"doit être au plus {n}")
    if schema.get("format") == "date" and schema.get("type") == "string":
        checks.append(lambda v: _is_date(v) or "doit être une date AAAA-MM-JJ")

    def check(raw):
        value = coerce(raw)
        for rule in checks:
            verdict = rule(value)
            if verdict is not True:
                raise ParamError(verdict)
        return value
    return check


def compile_array(schema):
    item = compile_scalar(schema.get("items") or {})
    min_items, max_items = schema.get("minItems"), schema.get("maxItems")

    def check(raws):
        if min_items is not None and len(raws) < min_items:
            raise ParamError(f"doit compter au moins {min_items} valeur(s)")
        if max_items is not None and len(raws) > max_items:
            raise ParamError(f"doit compter au plus {max_items} valeurs")
        return [item(r) for r in raws]
    return check


@dataclass
class Param:
    name: str
    location: str
    required: bool
    schema: dict
    is_array: bool
    check: object  # compiled closure
    allow_empty: bool = False  # the parameter's allowEmptyValue (OpenAPI: false unless stated)

    @property
    def key(self) -> str:
        """The name without the `[]` suffix arrays carry in the query."""
        return self.name.removesuffix("[]")


@dataclass
class Operation:
    method: str
    path: str
    operation_id: str
    v3: bool
    params: list
    auth: frozenset  # {"api_key", "bearer", "france_connect", "query_token"}; empty: open route
    france_connect: bool
    france_connect_only: bool
    gone: bool
    responses: dict  # status (int or "default") -> resolved JSON schema of the body, or None
    raw: dict = field(repr=False, default_factory=dict)

    def __post_init__(self):
        self.keys = frozenset(p.key for p in self.params)  # asked on every call: worked out once

    @property
    def is_api(self) -> bool:
        return self.path.startswith(("/api/v", "/v")) and not self.path.startswith("/v1/")

    def validate(self, args, headers, civility: dict | None = None) -> dict:
        """Check the request's parameters as production does. Raises ApiError.

        Production's code never reads its OpenAPI spec: on the routes it governs, its own rules
        (validation_rules.py) are the whole check. A route no production rule knows (one of a
        spec a user loads) keeps the spec's compiled checkers; returns their typed values.
        `civility`: a FranceConnect call's identity as production's organizers read it
        (population.lookup.france_connect_civility)."""
        if self.is_api:
            france_connect = self.france_connect and bearer_token(headers) is not None  # a Bearer there is a FranceConnect call
            if validation_rules.check(self.operation_id, self.v3, args, headers, france_connect,
                                      civility if france_connect else None):
                return {}
        return self.check_spec(args, headers)

    def check_spec(self, args, headers) -> dict:
        """The spec's compiled checkers; returns the typed values. Raises ApiError."""
        values = {}
        for p in self.params:
            if p.location == "query":
                raws = args.getlist(p.name) or (args.getlist(p.key) if p.is_array else [])
                if len(raws) > 1 and not p.is_array:  # which one would count? refuse, do not guess
                    raise ApiError("invalid_parameter", parameter=p.name,
                                   detail=f"Le paramètre {p.name} ne peut figurer qu'une fois")
            elif p.location == "header":
                raws = [headers[p.name]] if p.name in headers else []
            else:
                continue
            if not raws or (not p.is_array and raws[0] == ""):
                if p.required:
                    raise ApiError("invalid_parameter", parameter=p.name,
                                   detail=f"Le paramètre {p.name} est obligatoire")
                if raws and p.location == "query" and not p.allow_empty:  # as openapi-core reads OpenAPI
                    raise ApiError("invalid_parameter", parameter=p.name,
                                   detail=f"Le paramètre {p.name} ne peut pas être vide : omettez-le")
                continue
            try:
                values[p.key] = p.check(raws) if p.is_array else p.check(raws[0])
            except ParamError as exc:
                raise ApiError("invalid_parameter", parameter=p.name,
                               detail=f"Le paramètre {p.name} {exc}") from None
        self.check_rules(args, values)
        return values

    def check_rules(self, args, values):
        """Cross-parameter rules production applies on top of the schema."""
        if "ine" in self.keys and "ine" in values:
            mixed = sorted(CIVIL_STATUS_NAMES & set(values) - {"ine"})
            if mixed:
                raise ApiError("invalid_parameter", parameter="ine",
                               detail="Le paramètre ine ne peut pas être combiné avec des paramètres "
                                      f"d'état civil ({', '.join(mixed)}) : choisissez l'un des deux modes")


def _auth_kinds(requirements, schemes) -> frozenset:
    kinds = set()
    for requirement in requirements or []:
        for name in requirement:
            scheme = schemes.get(name, {})
            if scheme.get("type") == "apiKey":
                kinds.add("api_key")
            elif scheme.get("type") == "http" and "franceconnect" in (
                    name + str(scheme.get("bearerFormat", ""))).lower():
                kinds.add("france_connect")
            elif scheme.get("type") == "http":
                kinds.add("bearer")
    return frozenset(kinds)


def _compile_params(raw_params) -> list:
    params = []
    for p in raw_params:
        if p.get("in") not in ("query", "header", "path") or p.get("name") in ("X-Api-Key", "Authorization"):
            continue
        schema = p.get("schema") or {}
        is_array = schema.get("type") == "array"
        check = compile_array(schema) if is_array else compile_scalar(schema)
        params.append(Param(p["name"], p["in"], bool(p.get("required")), schema, is_array, check,
                            allow_empty=bool(p.get("allowEmptyValue"))))
    return params


def _operation_id(op, method, path):
    for response in (op.get("responses") or {}).values():
        if isinstance(response, dict) and response.get("x-operationId"):
            return response["x-operationId"]
    return op.get("operationId") or f"{method.upper()} {path}"


def _response_schemas(op) -> dict:
    schemas = {}
    for status, response in (op.get("responses") or {}).items():
        content = (response or {}).get("content") or {}
        media = content.get("application/json") or next(iter(content.values()), {})
        key = int(status) if str(status).isdigit() else str(status)
        schemas[key] = (media or {}).get("schema")
    return schemas


def build_operations(document: dict) -> list:
    resolved = resolve_refs(document, document)
    schemes = (resolved.get("components") or {}).get("securitySchemes") or {}
    global_security = resolved.get("security")
    operations = []
    for path, item in (resolved.get("paths") or {}).items():
        shared = item.get("parameters") or []
        for method in HTTP_METHODS:
            op = item.get(method)
            if not op:
                continue
            by_key = {(p.get("name"), p.get("in")): p for p in shared}
            by_key.update({(p.get("name"), p.get("in")): p for p in op.get("parameters") or []})
            auth = _auth_kinds(op.get("security", global_security), schemes)
            v3 = not path.startswith("/api/")
            if not v3 and "api_key" in auth:
                auth |= {"bearer", "query_token"}  # production's v2 also takes Bearer and ?token=
            fc_only = v3 and path.endswith("/france_connect")
            responses = _response_schemas(op)
            gone = path in REMOVED_PATHS or (op.get("deprecated") and set(responses) <= {410})
            operations.append(Operation(
                method=method.upper(), path=path, operation_id=_operation_id(op, method, path),
                v3=v3, params=_compile_params(by_key.values()), auth=auth,
                france_connect=fc_only or "france_connect" in auth, france_connect_only=fc_only,
                gone=bool(gone), responses=responses, raw=op))
    return operations


@dataclass
class SpecSet:
    """Every loaded spec: its operations, and the merged document /openapi.yml serves."""
    operations: list
    document: dict

    def by_operation_id(self) -> dict:
        return {op.operation_id: op for op in self.operations if op.is_api}


_LOADED: dict = {}  # the files' signatures -> SpecSet: an app built again (tests, a reload) reuses it


def load_specs(paths) -> SpecSet:
    """The specs of `paths`, merged. A SpecSet is never changed once built, so a process that
    builds several apps on unchanged files (a test suite) loads them once."""
    try:
        key = tuple((str(Path(p).resolve()), os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths)
    except OSError:
        key = None  # a missing file: load_specs says so below
    if key is not None and key in _LOADED:
        return _LOADED[key]
    loaded = _load_specs(paths)
    if key is not None:
        _LOADED[key] = loaded
    return loaded


def _load_specs(paths) -> SpecSet:
    operations, documents = [], []
    seen = {}
    for path in paths:
        try:
            document = read_yaml(path)
        except FileNotFoundError:
            raise ConfigError(f"{path}: spec file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(document, dict) or "paths" not in document:
            raise ConfigError(f"{path}: not an OpenAPI document (no `paths`)")
        documents.append(document)
        for op in build_operations(document):
            seen[(op.method, op.path)] = op  # a later spec overrides an earlier one's route
    operations = list(seen.values())
    return SpecSet(operations, merge_documents(documents))


def merge_documents(documents) -> dict:
    merged = {"openapi": "3.0.3", "info": {}, "servers": [{"url": "/"}], "paths": {},
              "components": {}, "tags": []}
    tags = {}
    for document in documents:
        document = copy.deepcopy(document)
        merged["info"] = merged["info"] or document.get("info", {})
        for path, item in document.get("paths", {}).items():
            if "security" in document and isinstance(item, dict):
                for method in HTTP_METHODS:  # keep each spec's global security on its own routes
                    if method in item and "security" not in item[method]:
                        item[method]["security"] = document["security"]
            merged["paths"].setdefault(path, {}).update(item)
        for section, entries in document.get("components", {}).items():
            merged["components"].setdefault(section, {}).update(entries)
        for tag in document.get("tags", []):
            tags.setdefault(tag.get("name"), tag)
    merged["tags"] = list(tags.values())
    merged["info"] = {"title": "API Particulier (bac à sable)", "version": "sandbox",
                      **{k: v for k, v in merged["info"].items() if k not in ("title", "version")}}
    return merged
