"""The examples the "try it" page pre-fills (sandbox/tryit/examples.py), read from /openapi.yml as
Swagger UI reads them: sent as they are, they answer 200 with the payload the page shows, and
each error status shows the body the sandbox really sends."""
from __future__ import annotations

import pytest
import yaml

from .conftest import token_for

FAULTS = (404, 409, 500, 502, 503, 504, 429)  # asked with `Prefer: code=<status>`


@pytest.fixture(scope="module")
def spec(app):
    return yaml.load(app.test_client().get("/openapi.yml").get_data(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _api_operations(spec):
    for path, item in spec["paths"].items():
        op = item.get("get")
        if op and path.startswith(("/api/v2/", "/v3/", "/v4/", "/v5/")) and "200" in map(str, op["responses"]):
            yield path, op


def _query(op) -> list:
    query = []
    for param in op.get("parameters", []):
        assert "$ref" not in param, "each operation carries its own copy of its parameters"
        if param["in"] == "query" and "example" in param:
            value = param["example"]
            query += [(param["name"], v) for v in (value if isinstance(value, list) else [value])]
    return query


def _example(op, status):
    response = op["responses"].get(str(status), op["responses"].get(status))
    return response["content"]["application/json"].get("example") if response else None


def _headers(path, token):
    return {"Authorization": f"Bearer {token}"} if path.startswith("/v") else {"X-Api-Key": token}


def test_every_route_sent_with_its_examples_answers_200_with_the_example_payload(app, spec):
    client = app.test_client()
    gone = {op.path for op in app.extensions["sandbox"].operations.values() if op.gone}
    checked, failures = 0, []
    for path, op in _api_operations(spec):
        if path in gone:
            assert _example(op, 200) is None, f"{path} answers 410: no persona is shown"
            continue
        payload = _example(op, 200)
        assert payload, f"{path}: no 200 example"
        if path.endswith("/france_connect"):
            continue  # the bearer's FranceConnect identity picks the case, not the parameters
        answer = client.get(path, query_string=_query(op), headers=_headers(path, token_for()))
        checked += 1
        if answer.status_code != 200 or answer.get_json() != payload:
            failures.append((path, _query(op), answer.status_code))
    assert checked > 30 and not failures, failures


def test_the_official_well_known_keys_come_first(spec):
    assert _query(spec["paths"]["/v3/france_travail/statut/identifiant"]["get"]) == [
        ("recipient", "13002526500013"), ("identifiant", "default")]
    assert _query(spec["paths"]["/api/v2/situations-pole-emploi"]["get"]) == [("identifiant", "default")], \
        "v2's optional recipient is not pre-filled"
    assert _query(spec["paths"]["/v3/mesri/statut_etudiant/ine"]["get"])[-1] == ("ine", "1234567890A")


@pytest.mark.parametrize("path", ["/api/v2/situations-pole-emploi", "/v3/france_travail/statut/identifiant",
                                  "/v3/dss/quotient_familial/identite"])
def test_each_error_example_is_the_body_the_sandbox_sends(app, spec, path):
    client = app.test_client()
    op = spec["paths"][path]["get"]
    query = _query(op)
    token = token_for()
    seen = {401: client.get(path, query_string=query)}
    for status in FAULTS:
        seen[status] = client.get(path, query_string=query, headers={**_headers(path, token), "Prefer": f"code={status}"})
    # the first required parameter other than recipient, left out
    required = next(p["name"] for p in op["parameters"] if p.get("required") and p["name"] != "recipient")
    invalid = 422 if path.startswith("/v") else 400
    seen[invalid] = client.get(path, query_string=[(k, v) for k, v in query if k != required],
                               headers=_headers(path, token))
    if path.startswith("/v"):
        # a valid token whose only scope is another route's
        seen[403] = client.get(path, query_string=query, headers=_headers(path, token_for(["dsnj_statut_service_national"])))
    for status, answer in seen.items():
        assert answer.status_code == status, (status, answer.get_data(as_text=True))
        assert _example(op, status) == answer.get_json(), status


def test_the_loaded_spec_itself_is_left_as_it_was(app, spec):
    """Examples go into the copy served; the document the sandbox was built from keeps its own."""
    document = app.extensions["sandbox"].specs.document
    assert document["paths"]["/api/v2/situations-pole-emploi"]["get"]["parameters"] != \
        spec["paths"]["/api/v2/situations-pole-emploi"]["get"]["parameters"]
    loaded = document["paths"]["/api/v2/situations-pole-emploi"]["get"]["responses"]
    served = spec["paths"]["/api/v2/situations-pole-emploi"]["get"]["responses"]
    assert "$ref" in loaded["404"] and "example" in served["404"]["content"]["application/json"]


def test_what_the_page_marks_required_is_what_production_requires(app, spec):
    """One truth, production's (its validation organizers, production/validation_rules.py): a
    parameter the page marks required is refused when left out of a call that otherwise
    answers (CNAV's prenoms[] and sexeEtatCivil are not: siade/app/interactors/cnav/
    validate_prenoms.rb, validate_sexe_etat_civil.rb). The other way does not hold: a parameter
    needed only in some cases (a birthplace in France, v2 civil status without FranceConnect)
    is marked optional, its description says when it is needed."""
    client = app.test_client()
    gone = {op.path for op in app.extensions["sandbox"].operations.values() if op.gone}
    wrong, checked = [], 0
    for path, op in _api_operations(spec):
        if path in gone or path.endswith("/france_connect"):
            continue
        query, headers = _query(op), _headers(path, token_for())
        if client.get(path, query_string=query, headers=headers).status_code != 200:
            continue
        invalid = 422 if path.startswith("/v") else 400
        for param in op.get("parameters", []):
            if not param.get("required") or param["in"] != "query" or not any(k == param["name"] for k, _ in query):
                continue
            left_out = client.get(path, query_string=[(k, v) for k, v in query if k != param["name"]], headers=headers)
            checked += 1
            if left_out.status_code != invalid:
                wrong.append((path, param["name"], left_out.status_code))
    assert checked > 100 and not wrong, wrong
