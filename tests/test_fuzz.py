"""Contract fuzzing: schemathesis over every operation of the bundled spec and of the upstream
specs, against a real gunicorn server (`python -m sandbox serve`) on 127.0.0.1.

What must hold, whatever the input:
- no 5xx of the sandbox's own: a 5xx is only ever a fixture's deliberate provider error (the
  served case, named in `X-Sandbox-Case`, has a 5xx status) or a fault the call asked for
  (`X-Sandbox-Fault` / `Prefer: code=`), and the server logs no traceback;
- every answer conforms to the spec: status declared, body schema, headers, content type
  (bundled spec; for the upstream specs, which do not declare every status the sandbox answers,
  the body schema where one is declared, see docs/robustness.md);
- every error body is the route's own format (v2 `{error, reason, message}`, v3
  `{errors: [{code, title, detail, source, meta}]}`);
- invalid inputs (wrong types, over-long strings, unicode, missing and doubled parameters, bad
  tokens) get the route's 400/401/422.

Runs are reproducible: schemathesis' seed and Hypothesis' `derandomize`, no example database,
phases named explicitly, no shrinking (a failure prints the `curl` that reproduces it). Rate
limits are off on these servers: the fuzzer sends more than 20 calls a second with one token,
and 429s are tested in test_ratelimit.py.
"""
from __future__ import annotations

import json
import os
import re
import sys

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    unsupported_method,
)

from sandbox.population import fixtures as fixture_module
from sandbox.api import transport
from sandbox.production.scopes import ScopeCatalogue
from sandbox.settings import BUNDLED_FIXTURES
from sandbox.production.spec import load_specs

from .conftest import RECIPIENT, REFERENCE, ROOT, SECRET, Server, free_port, require_reference, token_for

BUNDLED = ROOT / "spec" / "open-api.yml"
UPSTREAM = {"v2": REFERENCE / "openapi" / "api-particulier-v2.yaml",
            "v3": REFERENCE / "openapi" / "api-particulier-v3.yaml"}
TOKEN = token_for(ttl=6 * 3600)          # every scope; the servers below sign with SECRET
FC_TOKEN = "tout"                        # fixtures/france_connect/tout.yml: a case on every FC route
# tout is 36: the DSNJ checks the identity's age (16-25) on its FranceConnect route as production
# does, so a young person's token is the baseline there (fixtures/france_connect/divers_1.yml)
FC_TOKEN_FOR = {"api_particulier_v3_dsnj_service_national_with_france_connect": "divers_1"}
SEED = 20240515
SESSION = requests.Session()
TIMEOUT = 30

# Hypothesis side of "seeded, explicit phases, no shrinking": schemathesis' examples and
# coverage phases run as Hypothesis explicit examples, its fuzzing phase as `generate`.
RUN = settings(derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
               suppress_health_check=list(HealthCheck), print_blob=False)


# --- who answers: the case statuses of the bundled fixtures -----------------------------------
def _case_statuses() -> dict:
    operations = load_specs([BUNDLED]).by_operation_id()
    loaded = fixture_module.load([BUNDLED_FIXTURES], operations)
    return {case.id: case.status for cases in loaded.ordered.values() for case in cases}


CASE_STATUS = _case_statuses()


# --- servers -----------------------------------------------------------------------------------
def _serve(tmp_path_factory, name, *args) -> Server:
    tmp = tmp_path_factory.mktemp(name)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env.update(SANDBOX_TOKEN_SECRET=SECRET, SANDBOX_DATA_DIR=str(tmp / "data"), SANDBOX_PORT=str(port),
               SANDBOX_HOST="127.0.0.1", SANDBOX_SANDBOX_RATE_LIMIT="off")
    command = [sys.executable, "-m", "sandbox", "serve", "--workers", "1", "--rate-limit", "off",
               "--ip-rate-limit", "off", *args]
    server = Server(command, env, port, open(tmp / "server.log", "w+"))
    return server.wait_ready()


@pytest.fixture(scope="module")
def bundled_server(tmp_path_factory):
    server = _serve(tmp_path_factory, "fuzz-bundled")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream_server(tmp_path_factory):
    require_reference()
    specs = [arg for path in UPSTREAM.values() for arg in ("--spec", str(path))]
    server = _serve(tmp_path_factory, "fuzz-upstream", *specs)
    yield server
    server.stop()


# --- the credential each route expects -----------------------------------------------------------
def _needs_auth(operation) -> bool:
    security = operation.definition.raw.get("security", operation.schema.raw_schema.get("security"))
    return bool(security)


class SandboxAuth:
    """A real credential where the route looks for one: v2 and sandbox routes `X-Api-Key`, v3+
    a bearer JWT, FranceConnect-only routes a FranceConnect test token. Schemathesis leaves
    the credential out (or garbled) on the cases that test a missing or bad one."""

    def get(self, case, context):
        return TOKEN

    def set(self, case, data, context):
        if not _needs_auth(case.operation):
            return
        headers = case.headers = dict(case.headers or {})
        path = case.operation.path
        if path.startswith(("/api/", "/sandbox/")):
            headers.pop("Authorization", None)  # a generated bearer would win over the key
            headers["X-Api-Key"] = data
        elif path.endswith("/france_connect"):
            headers["Authorization"] = f"Bearer {FC_TOKEN}"
        else:
            headers["Authorization"] = f"Bearer {data}"


def _load(path, *, modes, max_examples, phases=("examples", "coverage", "fuzzing")):
    schema = schemathesis.openapi.from_path(path)
    schema.config.seed = SEED
    schema.config.generation.update(modes=list(modes), max_examples=max_examples, no_shrink=True,
                                    database="none")
    schema.config.phases.update(phases=list(phases))
    # The coverage phase sends each boundary value, each missing parameter, each wrong type; and,
    # asked for here, each query parameter twice.
    schema.config.phases.coverage.generate_duplicate_query_parameters = True
    schema.auth(refresh_interval=None)(SandboxAuth)
    return schema


# --- checks ---------------------------------------------------------------------------------------
def _header(response, name):
    values = response.headers.get(name.lower()) or []
    return values[0] if values else None


def no_own_server_error(ctx, response, case):
    """Replaces schemathesis' not_a_server_error: a 5xx is allowed only when a fixture or a
    fault asked for it."""
    if response.status_code < 500:
        return None
    sent = response.request.headers
    if "X-Sandbox-Fault" in sent or "Prefer" in sent:
        return None
    served = _header(response, "X-Sandbox-Case")
    if served and CASE_STATUS.get(served, 0) >= 500:
        return None
    raise AssertionError(f"{response.status_code} of the sandbox's own (case {served!r}, no fault asked): "
                         f"{response.content[:300]!r}")


PRODUCTION_TEXTS = {transport.unknown_route_answer()[1].decode()} | {text for text, _ in transport.RETIRED.values()}


def errors_in_the_routes_format(ctx, response, case):
    """Every 4xx/5xx body is the called route's own error format, or one of the plain-text
    answers production gives before any route runs (an unknown route or method: 404; a retired
    route: 410; sandbox/api/transport.py)."""
    if response.status_code < 400:
        return None
    if not (_header(response, "Content-Type") or "").startswith(("application/json", "application/vnd.api+json")):
        assert response.status_code in (404, 410) and response.content.decode() in PRODUCTION_TEXTS, response.content[:300]
        return None
    body = json.loads(response.content)
    path = case.operation.path
    if re.fullmatch(r"/api/[^/]+/ping", path):  # production's pings: 502 with the ping's body, 404 `{}`
        assert body == {} if response.status_code == 404 else body.get("status") == "bad_gateway", body
        return None
    if path.startswith(("/api/", "/sandbox/")):
        if response.status_code == 429:
            assert isinstance(body.get("errors"), list) and body["errors"], body
        else:
            assert set(body) == {"error", "reason", "message"}, body
            assert all(isinstance(v, str) and v for v in body.values()), body
    else:
        # production lists every invalid parameter, and sets `source` only where its catalogue does
        assert set(body) == {"errors"} and len(body["errors"]) >= 1, body
        for error in body["errors"]:
            assert {"code", "title", "detail", "meta"} <= set(error) <= {"code", "title", "detail", "source", "meta"}, body
            assert re.fullmatch(r"\d{5}", error["code"]), body
    return None


# Rules OpenAPI 3.0 cannot state, so schemathesis calls a request "valid" that production
# refuses: the SIRET's Luhn key (v3 `recipient`, 00210) and an INE excluding the civil-status
# parameters. A refusal on these grounds, in the route's format, is right.
NOT_EXPRESSIBLE = ("00210", "ne peut pas être combiné avec des paramètres d'état civil")


def _production_refusal(response) -> bool:
    """A refusal by one of production's own parameter rules (sandbox/production/validation_rules.py, tested
    against production's specs in tests/production/): its code's text, in the route's format."""
    from sandbox.production.validation_rules import PARAMETER_ERRORS
    details = {e["detail"] for e in PARAMETER_ERRORS.values()}
    body = json.loads(response.content)
    if "errors" in body and isinstance(body["errors"], list) and body["errors"]:
        return all(isinstance(e, dict) and e.get("detail") in details for e in body["errors"])
    return body.get("reason") in details


def valid_requests_accepted(ctx, response, case):
    """schemathesis' positive_data_acceptance, minus the rules above, and minus the routes
    production removed: they answer 410 whatever is sent (their only declared answer)."""
    if response.status_code in (400, 422) and (any(rule in response.content.decode() for rule in NOT_EXPRESSIBLE)
                                               or _production_refusal(response)):
        return None
    if response.status_code == 410 and (set(case.operation.definition.raw.get("responses", {})) == {"410"}
                                        or case.operation.path in transport.RETIRED):
        return None
    if (case.operation.path == "/sandbox/personas" and response.status_code == 422
            and json.loads(response.content)["reason"].startswith("$.")):
        return None  # a persona is checked against its operation's own schema: no OpenAPI can state that
    if case.operation.path == "/sandbox/tokens/{jti}" and response.status_code == 403:
        return None  # a token revokes itself only: the jti generated is not the sending token's
    return positive_data_acceptance(ctx, response, case)


@pytest.mark.slow
def test_the_5xx_check_tells_deliberate_errors_from_the_sandboxs_own(bundled_server):
    """no_own_server_error passes a fixture's 503 and an asked-for fault, and fails the same
    answer once nothing asked for it."""
    from schemathesis.core.transport import Response

    def answer(path, **headers):
        sent = SESSION.get(bundled_server.url + path, headers={"X-Api-Key": TOKEN, **headers}, timeout=TIMEOUT)
        return Response.from_any(sent)
    fixture = answer("/api/v2/allocation-adulte-handicape?nomNaissance=ERREUR-FOURNISSEUR&prenoms[]=Jean"
                     "&anneeDateDeNaissance=1980&moisDateDeNaissance=1&jourDateDeNaissance=1&sexe=M"
                     "&codeInseeLieuDeNaissance=00503&codePaysLieuDeNaissance=99100")
    assert fixture.status_code == 503
    assert _header(fixture, "X-Sandbox-Case") == "api_particulier_v2_cnav_allocation_adulte_handicape/503_erreur_fournisseur.yaml"
    faulted = answer("/api/v2/situations-pole-emploi?identifiant=default", **{"X-Sandbox-Fault": "timeout"})
    assert faulted.status_code == 504
    assert no_own_server_error(None, fixture, None) is None
    assert no_own_server_error(None, faulted, None) is None
    del faulted.request.headers["X-Sandbox-Fault"]
    fixture.headers["x-sandbox-case"] = ["api_particulier_v2_cnaf_quotient_familial/200_allocataire_exemple.yaml"]
    for own in (faulted, fixture):
        with pytest.raises(AssertionError, match="of the sandbox's own"):
            no_own_server_error(None, own, None)


def _call(case, server):
    before = len(server.output())
    response = case.call(base_url=server.url, session=SESSION, timeout=TIMEOUT)
    return response, before


def _no_traceback_since(server, before, case):
    logged = server.output()[before:]
    assert "Traceback" not in logged and "unexpected error" not in logged, (
        f"the server logged an error for\n    {case.as_curl_command(base_url=server.url)}\n{logged[-3000:]}")


# --- the bundled spec: every operation, positive and negative data, every default check --------
bundled = _load(BUNDLED, modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=10)


@pytest.mark.slow
@bundled.parametrize()
@RUN
def test_bundled_spec_contract(case, bundled_server):
    response, before = _call(case, bundled_server)
    if case.operation.path in transport.RETIRED and case.method.upper() == "GET":  # 410, token or not
        assert response.status_code == 410, response.text
        return
    # unsupported_method expects a 405; production has none: an undeclared method is an unknown
    # route, 404 plain text (errors_in_the_routes_format checks that text)
    case.validate_response(response, excluded_checks=[not_a_server_error, positive_data_acceptance,
                                                       unsupported_method],
                           additional_checks=[no_own_server_error, errors_in_the_routes_format,
                                              valid_requests_accepted],
                           transport_kwargs={"base_url": bundled_server.url, "session": SESSION})
    _no_traceback_since(bundled_server, before, case)


# --- schemathesis' negative ("unsatisfying") mode alone: only data the spec forbids ---------------
def _has_inputs(ctx) -> bool:
    """Data can only be invalid where the spec forbids some: routes without parameters or body are
    left out, and so are those whose only input is a free path segment (`/api/{provider}/ping`:
    any string is a provider, unknown ones answer production's 404 `{}`)."""
    raw = ctx.operation.definition.raw
    if raw.get("requestBody"):
        return True
    params = [p for p in raw.get("parameters") or () if "$ref" not in p]
    free = [p for p in params if p.get("in") == "path" and set(p.get("schema") or {}) <= {"type", "example"}]
    return bool(raw.get("parameters")) and len(free) < len(raw.get("parameters"))


negative = _load(BUNDLED, modes=[GenerationMode.NEGATIVE], max_examples=8, phases=("fuzzing",)).include(
    func=_has_inputs)


@pytest.mark.slow
@negative.parametrize()
@RUN
def test_bundled_spec_negative_mode_is_refused_in_the_routes_format(case, bundled_server):
    response, before = _call(case, bundled_server)
    if case.operation.path in transport.RETIRED and case.method.upper() == "GET":  # 410 to anything
        assert response.status_code == 410, response.text
        return
    case.validate_response(response, checks=[no_own_server_error, errors_in_the_routes_format,
                                             negative_data_rejection, response_schema_conformance],
                           transport_kwargs={"base_url": bundled_server.url, "session": SESSION})
    _no_traceback_since(bundled_server, before, case)


# --- the upstream specs, served with `--spec`: no 5xx of our own, body schema where declared ---
def _upstream(name):
    if not UPSTREAM[name].is_file():
        return None
    # No coverage phase here: the bundled spec has the same parameters, and gets it above.
    return _load(UPSTREAM[name], modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=8,
                 phases=("examples", "fuzzing"))


def _upstream_test(schema):
    if schema is None:
        @pytest.mark.slow
        def test(upstream_server):  # pragma: no cover - the fixture skips (or fails under CI)
            pytest.fail("unreachable")
        return test

    @pytest.mark.slow
    @schema.parametrize()
    @RUN
    def test(case, upstream_server):
        # status_code_conformance and content-type/header checks are left out on purpose: the
        # upstream specs do not declare 400 on v2, 404 on some v4 routes, 429/503 on most
        # (docs/robustness.md lists the differences). What a client parses is checked.
        response, before = _call(case, upstream_server)
        case.validate_response(response, checks=[no_own_server_error, response_schema_conformance,
                                                 errors_in_the_routes_format],
                               transport_kwargs={"base_url": upstream_server.url, "session": SESSION})
        _no_traceback_since(upstream_server, before, case)
    return test


test_upstream_v2_spec_contract = _upstream_test(_upstream("v2"))
test_upstream_v3_spec_contract = _upstream_test(_upstream("v3"))


# --- invalid inputs, one by one, on every API operation ------------------------------------------
OPERATIONS = [op for op in load_specs([BUNDLED]).operations if op.is_api and not op.gone]


def _raw_params(op) -> dict:
    return {p.get("name"): p for p in op.raw.get("parameters", [])}


# What production's own rules require beyond the spec (sandbox/production/validation_rules.py): a birth
# name, first names, a birth date of someone 16 to 25 (DSNJ), a birth country, a digits-only
# SDH identifiant, a school year and an establishment (MEN).
PRODUCTION_BASELINE = {
    "nomNaissance": "DURAND", "nom": "DURAND", "prenom": "ANNE", "prenoms": "ANNE", "prenoms[]": ["ANNE"],
    "dateDeNaissance": "2008-01-01", "sexe": "F", "sexeEtatCivil": "F", "codePaysLieuDeNaissance": "99123",
    "codeCogInseePaysNaissance": "99123", "anneeDateNaissance": "2008", "moisDateNaissance": "1",
    "jourDateNaissance": "1", "anneeScolaire": "2025", "codeEtablissement": "0751234A", "identifiant": "12345",
}


def _baseline(op) -> dict:
    """A query that passes validation: the v3 recipient, every required parameter and what
    production's rules require."""
    raw = _raw_params(op)
    query = {}
    for p in op.params:
        if p.location == "query" and (p.required or p.key == "recipient"):
            query[p.name] = _valid_value(p, raw.get(p.name))
        if p.location == "query" and p.name in PRODUCTION_BASELINE:
            query[p.name] = PRODUCTION_BASELINE[p.name]
    return query


def _valid_value(p, raw):
    """The parameter's example in the spec, else a value of its type."""
    schema = p.schema.get("items", p.schema) if p.is_array else p.schema
    if p.key == "recipient":
        value = RECIPIENT
    elif raw and raw.get("example") is not None:
        value = raw["example"]
    elif "enum" in schema:
        value = next(v for v in schema["enum"] if v is not None)
    elif schema.get("type") == "integer":
        value = max(schema.get("minimum", 1), 1)
    elif "pattern" in schema or "format" in schema:
        pytest.fail(f"{p.name}: give the spec an example that matches {schema}")
    else:
        value = "A" * max(schema.get("minLength", 1), 1)
    if p.is_array:
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return str(value)


def _mutations(op):
    """(what, parameter, query) for each invalid input this operation can be sent."""
    base = _baseline(op)
    raw = _raw_params(op)
    for p in op.params:
        if p.location != "query":
            continue
        schema = p.schema.get("items", p.schema) if p.is_array else p.schema
        if p.required:
            yield "missing", p.name, {k: v for k, v in base.items() if k != p.name}
        if not p.is_array:
            yield "doubled", p.name, {**base, p.name: [_valid_value(p, raw.get(p.name))] * 2}
        wrap = (lambda v: [v]) if p.is_array else (lambda v: v)
        if schema.get("type") in ("integer", "number"):
            yield "wrong type", p.name, {**base, p.name: wrap("douze")}
        if "maxLength" in schema:
            yield "over-long", p.name, {**base, p.name: wrap("9" * (schema["maxLength"] + 1))}
        if "pattern" in schema or "enum" in schema or schema.get("format") == "date":
            yield "unicode", p.name, {**base, p.name: wrap("é\u202e😀\u0301ß")}


CASES = [(op, what, name, query) for op in OPERATIONS for what, name, query in _mutations(op)]


def _auth_headers(op):
    if not op.v3:
        return {"X-Api-Key": TOKEN}
    fc_token = FC_TOKEN_FOR.get(op.operation_id, FC_TOKEN)
    return {"Authorization": f"Bearer {fc_token if op.france_connect_only else TOKEN}"}


@pytest.mark.slow
@pytest.mark.parametrize(("op", "what", "name", "query"), CASES,
                         ids=[f"{op.path}-{what}-{name}" for op, what, name, _ in CASES])
def test_each_invalid_input_gets_the_routes_error(bundled_server, op, what, name, query):
    """Input the spec calls invalid gets a clean answer: production's refusal in the route's
    format where one of production's rules refuses it, else the answer production gives (its
    code does not read the spec: a repeated parameter keeps its last value, lengths are free).
    Each production rule has its own test in tests/production/test_validation_rules.py."""
    response = SESSION.get(bundled_server.url + op.path, params=query, headers=_auth_headers(op), timeout=TIMEOUT)
    body = response.json()
    assert response.status_code < 500 or response.headers.get("X-Sandbox-Case"), (what, name, response.text)
    if response.status_code in (400, 422):
        assert response.status_code == (422 if op.v3 else 400), (what, name, response.text)
        assert _production_refusal(response), (what, name, body)


def test_the_mutation_table_covers_every_kind_of_invalid_input():
    kinds = {what for _, what, _, _ in CASES}
    assert kinds == {"missing", "doubled", "wrong type", "over-long", "unicode"}
    assert {op.path for op, *_ in CASES} == {op.path for op in OPERATIONS if op.params}


@pytest.mark.slow
def test_each_baseline_query_is_accepted(bundled_server):
    """The mutations above prove something only if the unmutated query passes validation."""
    for op in OPERATIONS:
        response = SESSION.get(bundled_server.url + op.path, params=_baseline(op), headers=_auth_headers(op),
                               timeout=TIMEOUT)
        assert response.status_code not in (400, 422), (op.path, response.text)


TOKEN_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")


@pytest.mark.slow
@settings(RUN, max_examples=40)
@given(garbage=st.one_of(st.text(TOKEN_CHARS, max_size=64), st.text(TOKEN_CHARS, min_size=2000, max_size=6000),
                         st.builds(lambda a, b, c: f"{a}.{b}.{c}", *[st.text("abcXYZ019-_", max_size=40)] * 3)))
def test_bad_tokens_get_the_routes_401(bundled_server, garbage):
    v2 = SESSION.get(bundled_server.url + "/api/v2/situations-pole-emploi", params={"identifiant": "default"},
                     headers={"X-Api-Key": garbage.encode("latin-1")}, timeout=TIMEOUT)
    v3 = SESSION.get(bundled_server.url + "/v3/france_travail/statut/identifiant",
                     params={"identifiant": "default", "recipient": RECIPIENT},
                     headers={"Authorization": b"Bearer " + garbage.encode("latin-1")}, timeout=TIMEOUT)
    assert v2.status_code == 401 and v2.json()["error"] == "access_denied", v2.text
    assert v3.status_code == 401 and v3.json()["errors"][0]["code"] in ("00101", "00103"), v3.text


def test_the_spec_lists_exactly_the_scopes_a_token_may_hold():
    """`POST /sandbox/tokens` refuses unknown scopes; the spec's enum says which are known."""
    spec = load_specs([BUNDLED]).document
    enum = spec["components"]["schemas"]["V2SandboxTokenRequest"]["properties"]["scopes"]["items"]["enum"]
    assert sorted(enum) == sorted(ScopeCatalogue().all_scopes())
