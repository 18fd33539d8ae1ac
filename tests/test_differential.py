"""The compiled parameter checkers (Operation.check_spec, sandbox/production/spec.py) accept and reject
exactly what openapi-core accepts and rejects, on generated requests for every API operation
of the bundled spec.

Since issue 16 these checkers serve only the routes no production rule governs (a spec a user
loads); the bundled routes are checked by production's own rules (sandbox/production/validation_rules.py,
tests/production/). They stay tested here on every bundled operation, the widest input there is.

openapi-core is the independent reading of the spec. The sandbox adds two cross-parameter
rules of production that no schema states; the test works them out itself (`cross_rules_ok`)
rather than asking the code under test. Where the sandbox parts with openapi-core on purpose,
the exception is written out below with its reason (`sandbox_leniency`).
"""
from __future__ import annotations

import re
import string
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import Headers, MultiDict

from sandbox.production import validation_rules
from sandbox.production.errors import ApiError
from sandbox.production.spec import CIVIL_STATUS_NAMES, is_siret, load_specs

from .conftest import ROOT

SPEC = ROOT / "spec" / "open-api.yml"
AUTH = {"Authorization": "Bearer x", "X-Api-Key": "x"}
UNKNOWN = "parametreInconnu"


@lru_cache(maxsize=1)
def openapi():
    from openapi_core import OpenAPI
    return OpenAPI.from_file_path(str(SPEC))


@lru_cache(maxsize=1)
def operations():
    return [op for op in load_specs([SPEC]).operations if op.is_api and not op.gone]


def oracle_accepts(op, query, headers) -> bool:
    from openapi_core.testing import MockRequest
    from werkzeug.datastructures import ImmutableMultiDict
    request = MockRequest("http://localhost", op.method.lower(), op.path, args=ImmutableMultiDict(query),
                          headers={**AUTH, **headers})
    return not openapi().unmarshal_request(request).errors


def sandbox_accepts(op, query, headers) -> bool:
    try:
        validation_rules.check_recipient(op.v3, validation_rules.rails_params(MultiDict(query)), False)
        op.check_spec(MultiDict(query), Headers({**AUTH, **headers}))
    except ApiError:
        return False
    return True


# --- the cross-parameter rules, worked out independently of sandbox/production/spec.py -------------------
def luhn_siret(value: str) -> bool:
    if not re.fullmatch(r"[0-9]{14}", value):
        return False
    if value.startswith("356000000"):  # La Poste's: accepted whatever the key (siret_format_validator.rb)
        return True
    digits = [int(c) for c in value]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return total % 10 == 0


def first(query, name):
    return next((v for k, v in query if k == name), None)


def cross_rules_ok(op, query) -> bool:
    """The sandbox's rules that no schema states, which openapi-core cannot know:
    - v3: `recipient` is present once and is a SIRET (production's 00203 / 00210), on every
      v3 route that has the parameter, even where the spec marks it optional;
    - a scalar parameter given twice is refused: the spec says nothing of which one would
      count (openapi-core silently keeps one);
    - INE routes: `ine` may not come with civil-status parameters."""
    names = {p.name.removesuffix("[]") for p in op.params}
    if op.v3 and "recipient" in names:
        recipients = [v for k, v in query if k == "recipient"]  # production keeps the last one
        if not recipients or not luhn_siret(recipients[-1]):
            return False
    if not op.v3:  # v2 checks a recipient only when one is given (v2/base_controller.rb)
        recipients = [v for k, v in query if k == "recipient"]
        if recipients and recipients[-1].strip() and not luhn_siret(recipients[-1]):
            return False
    for p in op.params:
        if p.location == "query" and not p.is_array and sum(1 for k, _ in query if k == p.name) > 1:
            return False
    if "ine" in names and first(query, "ine"):
        present = {k.removesuffix("[]") for k, v in query if v != ""}
        if present & (CIVIL_STATUS_NAMES & names) - {"ine"}:
            return False
    return True


def sandbox_leniency(op, query) -> str | None:
    """Requests the sandbox accepts on purpose where openapi-core refuses them, and why."""
    by_key = {p.name.removesuffix("[]"): p for p in op.params if p.location == "query"}
    for name, value in query:
        p = by_key.get(name)
        if p is not None and p.name != name and not any(k == p.name for k, _ in query):
            # `prenoms=ANNE` for `prenoms[]`: the sandbox reads the bare key as the array, as
            # clients that cannot send brackets do; openapi-core only knows `prenoms[]`.
            return "array parameter without brackets"
    return None


# --- generated requests -----------------------------------------------------------------------
TEXT = st.text(alphabet=string.ascii_letters + string.digits + "-' éÉçÇ", min_size=1, max_size=12)
UNICODE = st.text(min_size=1, max_size=8).filter(lambda s: "\x00" not in s)


def valid_scalar(schema):
    kind = schema.get("type", "string")
    if "enum" in schema:
        return st.sampled_from([str(v) for v in schema["enum"] if v is not None])
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum", -10**6), max_value=schema.get("maximum", 10**6)).map(str)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6).map(repr)
    if kind == "boolean":
        return st.sampled_from(["true", "false"])
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: s != "" and "\n" not in s)
    low = max(schema.get("minLength", 1), 1)
    high = schema.get("maxLength", low + 12)
    return st.text(alphabet=string.ascii_letters + string.digits + "-' é", min_size=low, max_size=max(low, high))


def broken_scalar(schema):
    """Values that a schema may refuse: wrong type, empty, too long or short, odd characters."""
    options = [st.just(""), UNICODE, TEXT, st.sampled_from([" 12", "12 ", "+5", "1_000", "1.5", "0x1F", "-0",
                                                             "١٢", "12\n", "null", "true"])]
    if "maxLength" in schema:
        n = schema["maxLength"]
        options.append(st.text(alphabet=string.digits + string.ascii_uppercase, min_size=n + 1, max_size=n + 4))
    if "minLength" in schema and schema["minLength"] > 1:
        n = schema["minLength"]
        options.append(st.text(alphabet=string.digits, min_size=1, max_size=n - 1))
    if "pattern" in schema:
        options.append(st.from_regex(schema["pattern"], fullmatch=True).map(lambda s: s + "x"))
        options.append(st.from_regex(schema["pattern"], fullmatch=True).map(lambda s: s[:-1]))
    if schema.get("type") == "integer":
        options.append(st.integers(min_value=-10**20, max_value=10**20).map(str))
    return st.one_of(options)


SCALAR_MUTATIONS = ["absent", "broken", "empty", "doubled", "doubled_bad"]
ARRAY_MUTATIONS = ["absent", "broken", "empty", "too_many", "bare"]
VALID_RECIPIENT = "13002526500013"


@st.composite
def parameter(draw, p, how):
    """[(name, value)] for one parameter, `how` being "valid" or one of the mutations."""
    schema = p.schema
    if how == "absent":
        return []
    if how == "empty":
        return [(p.name, "")]
    if p.is_array:
        items = schema.get("items") or {}
        low, high = schema.get("minItems", 0), schema.get("maxItems", 4)
        if how == "too_many":
            values = draw(st.lists(valid_scalar(items), min_size=high + 1, max_size=high + 2))
        else:
            values = draw(st.lists(valid_scalar(items), min_size=max(low, 1), max_size=max(low, high, 1)))
        if how == "broken":
            values[draw(st.integers(0, len(values) - 1))] = draw(broken_scalar(items))
        name = p.name.removesuffix("[]") if how == "bare" else p.name
        return [(name, v) for v in values]
    if how == "broken":
        return [(p.name, draw(broken_scalar(schema)))]
    value = VALID_RECIPIENT if p.name == "recipient" else draw(valid_scalar(schema))
    if how == "doubled":
        return [(p.name, value), (p.name, draw(valid_scalar(schema)))]
    if how == "doubled_bad":
        return [(p.name, value), (p.name, draw(broken_scalar(schema)))]
    return [(p.name, value)]


@st.composite
def request_for(draw, op):
    """A request that is valid but for zero, one or several mutated parameters, plus at times a
    parameter the spec does not know. Optional parameters are left out half of the time."""
    query_params = [p for p in op.params if p.location == "query"]
    mode = draw(st.sampled_from(["valid", "one", "one", "several"]))
    target = draw(st.sampled_from(query_params)) if query_params and mode == "one" else None
    query, headers = [], {}
    for p in op.params:
        if p.location == "header":
            if draw(st.booleans()):
                headers[p.name] = draw(TEXT)
            continue
        if p.location != "query":
            continue
        mutations = ARRAY_MUTATIONS if p.is_array else SCALAR_MUTATIONS
        if p is target or (mode == "several" and draw(st.integers(0, 2)) == 0):
            how = draw(st.sampled_from(mutations))
        elif p.required or p.name == "recipient" or draw(st.booleans()):
            how = "valid"
        else:
            how = "absent"
        query += draw(parameter(p, how))
    if draw(st.integers(0, 4)) == 0:
        query.append((UNKNOWN, draw(TEXT)))
    return draw(st.permutations(query)), headers


@pytest.mark.slow  # 50 generated requests per route, each also judged by openapi-core: a minute or more
@pytest.mark.parametrize("op", operations(), ids=lambda op: f"{op.method} {op.path}")
def test_compiled_checkers_agree_with_openapi_core(op):
    seen = {"accepted": 0, "refused": 0}

    @settings(max_examples=50, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(request_for(op))
    def check(generated):
        query, headers = generated
        oracle = oracle_accepts(op, query, headers)
        expected = oracle and cross_rules_ok(op, query)
        actual = sandbox_accepts(op, query, headers)
        if actual and not oracle and sandbox_leniency(op, query):
            return
        seen["accepted" if actual else "refused"] += 1
        assert actual == expected, (
            f"{op.method} {op.path} query={query!r} headers={headers!r}: sandbox "
            f"{'accepts' if actual else 'refuses'}, openapi-core {'accepts' if oracle else 'refuses'}"
            f"{'' if oracle == expected else ' (a cross-parameter rule refuses it)'}")

    check()
    # the generator reaches both sides of the check, or the agreement would mean little
    assert seen["accepted"] and seen["refused"], seen


def test_the_oracle_and_the_rules_are_not_vacuous():
    """Hand-picked requests: each side of every exception above is what the test says it is."""
    by_path = {op.path: op for op in operations()}
    v3_ine = by_path["/v3/mesri/statut_etudiant/ine"]
    assert oracle_accepts(v3_ine, [("ine", "1234567890A"), ("recipient", VALID_RECIPIENT)], {})
    assert not oracle_accepts(v3_ine, [("ine", "12345"), ("recipient", VALID_RECIPIENT)], {})
    # a 14-digit recipient with a wrong Luhn key: openapi-core accepts, the sandbox's rule refuses
    assert oracle_accepts(v3_ine, [("ine", "1234567890A"), ("recipient", "13002526500014")], {})
    assert not cross_rules_ok(v3_ine, [("ine", "1234567890A"), ("recipient", "13002526500014")])
    assert not sandbox_accepts(v3_ine, [("ine", "1234567890A"), ("recipient", "13002526500014")], {})
    # a SIRET written in other digits (Arabic-Indic here) is no SIRET, even for a spec whose
    # recipient has no pattern (the bundled one has ^[0-9]{14}$, which refuses it first)
    arabic = "".join(chr(0x660 + int(c)) for c in VALID_RECIPIENT)
    assert int(arabic) == int(VALID_RECIPIENT) and not luhn_siret(arabic) and not is_siret(arabic)
    assert not oracle_accepts(v3_ine, [("ine", "1234567890A"), ("recipient", arabic)], {})
    assert not sandbox_accepts(v3_ine, [("ine", "1234567890A"), ("recipient", arabic)], {})
    v2_etudiants = by_path["/api/v2/etudiants"]
    mixed = [("ine", "1234567890A"), ("nom", "DURAND")]
    assert oracle_accepts(v2_etudiants, mixed, {}) and not cross_rules_ok(v2_etudiants, mixed)
    assert not sandbox_accepts(v2_etudiants, mixed, {})
