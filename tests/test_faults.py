"""Fault injection: `X-Sandbox-Fault`, `Prefer: code=`, latency, per-case `latency_ms`, `--faults off`.

Each fault is asked of a v2 route (France Travail statut) and a v3 route (France Travail statut
by identifiant): the answer must have the route's own format, the provider's code prefix (24)
and a body that the spec's response schema for that status accepts.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests
from openapi_schema_validator import OAS30Validator

from sandbox import Settings, create_app

from .conftest import RECIPIENT, SECRET, token_for

PERSONAS = Path(__file__).parent / "example_downstream" / "personas"
V2 = "/api/v2/situations-pole-emploi"
V3 = "/v3/france_travail/statut/identifiant"
V2_OPERATION = "api_particulier_v2_pole_emploi_statut"
V3_OPERATION = "api_particulier_v3_france_travail_statut_with_identifiant"

# kind -> (v2 status, v2 `error` slug, v3 status, v3 code): France Travail's prefix is 24. Statuses
# as production maps them (siade/app/controllers/concerns/organizers_methods_helpers.rb for v3,
# siade/app/controllers/api_particulier/v2/base_controller.rb for v2).
EXPECTED = {
    "timeout": (504, "timeout_error", 504, "24002"),
    "unavailable": (503, "data_provider_error", 502, "24001"),
    "provider_error": (503, "provider_unknown_error", 502, "24999"),
    # France Travail's code reads its provider's 429 as an unknown answer (validate_response.rb)
    "rate_limited": (503, "provider_unknown_error", 502, "24999"),
    "not_found": (404, "not_found", 404, "24003"),
    "conflict": (409, "conflict", 409, "24015"),
    "internal": (503, "data_provider_error", 502, "24000"),
    "maintenance": (503, "maintenance", 503, "24020"),
    "network_error": (502, "network_error", 502, "00501"),
}


@pytest.fixture
def personas(tmp_path) -> Path:
    folder = tmp_path / "personas"
    shutil.copytree(PERSONAS, folder)
    return folder


@pytest.fixture(scope="module")
def sandbox_app(tmp_path_factory):
    """One app for the module (building one costs about a second); each test has its own token,
    hence its own journal and rate-limit window."""
    root = tmp_path_factory.mktemp("faults")
    shutil.copytree(PERSONAS, root / "personas")
    return create_app(Settings(token_secret=SECRET, data_dir=root / "data", reload_interval=0,
                               fixtures=(root / "personas",), cors_origins="http://localhost:3000"))


@pytest.fixture
def call(sandbox_app):
    """call(version, headers={...}, identifiant=...) -> response, with a fresh all-scopes token."""
    client = sandbox_app.test_client()
    token = token_for()

    def run(version, headers=None, identifiant="camille.exemple", **params):
        if version == "v2":
            return client.get(V2, query_string={"identifiant": identifiant, **params},
                              headers={"X-Api-Key": token, **(headers or {})})
        return client.get(V3, query_string={"identifiant": identifiant, "recipient": RECIPIENT, **params},
                          headers={"Authorization": f"Bearer {token}", **(headers or {})})
    run.client, run.token = client, token
    return run


def schema_accepts(app, operation_id, status, body):
    op = app.extensions["sandbox"].operations[operation_id]
    schema = op.responses[status]
    errors = list(OAS30Validator(schema).iter_errors(body))
    assert not errors, f"{operation_id} {status}: {errors[0].message}"


def journal(call):
    return call.client.get("/sandbox/requests", headers={"X-Api-Key": call.token}).get_json()["requests"]


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_fault_on_v2_has_the_v2_format_and_the_provider(call, sandbox_app, kind):
    status, slug, _, _ = EXPECTED[kind]

    answer = call("v2", {"X-Sandbox-Fault": kind})

    assert answer.status_code == status
    body = answer.get_json()
    assert set(body) == {"error", "reason", "message"}
    assert body["error"] == slug
    assert body["message"]  # production's v2 body carries the error's detail, not the provider's name
    schema_accepts(sandbox_app, V2_OPERATION, status, body)
    assert journal(call)[0]["fault"] == kind
    assert journal(call)[0]["status"] == status


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_fault_on_v3_has_the_v3_format_and_the_provider_prefix(call, sandbox_app, kind):
    _, _, status, code = EXPECTED[kind]

    answer = call("v3", {"X-Sandbox-Fault": kind})

    assert answer.status_code == status
    [error] = answer.get_json()["errors"]
    assert set(error) == {"code", "title", "detail", "meta"}  # production drops a null source
    assert error["code"] == code
    assert error["meta"] == ({"retry_in": 10} if kind == "network_error" else {"provider": "France Travail"})
    schema_accepts(sandbox_app, V3_OPERATION, status, answer.get_json())
    assert journal(call)[0]["fault"] == kind


def test_a_fault_replaces_a_matching_case_and_carries_no_case_header(call):
    assert call("v2").status_code == 200
    answer = call("v2", {"X-Sandbox-Fault": "timeout"})
    assert answer.status_code == 504
    assert "X-Sandbox-Case" not in answer.headers
    assert journal(call)[0]["case"] is None


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_api_rate_limited_is_the_api_own_429_with_retry_after(call, version):
    answer = call(version, {"X-Sandbox-Fault": "api_rate_limited"})

    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) >= 1
    assert answer.headers["RateLimit-Remaining"] == "0"
    assert answer.headers["RateLimit-Limit"] == "20"
    if version == "v2":
        assert answer.get_json() == {"errors": ["Vous avez effectué trop de requêtes"]}
    else:
        assert answer.get_json()["errors"][0]["code"] == "00429"
    assert journal(call)[0] | {"at": None, "id": None} == {"id": None,
        "method": "GET", "path": V2 if version == "v2" else V3, "status": 429, "at": None, "case": None,
        "fault": "api_rate_limited",
        "query": {"identifiant": "camille.exemple"} | ({"recipient": RECIPIENT} if version == "v3" else {})}


@pytest.mark.parametrize("prefer, v2_status, v3_code", [
    ("code=503", 503, "24020"),
    ("code=504", 504, "24002"),
    ("code=404", 404, "24003"),
    ("return=minimal, code=502", 502, "00501"),
    ('code="500"; strict', 500, "00500"),
    ("code=429", 429, "00429"),
])
def test_prefer_code_answers_that_status_on_v2_and_v3(call, prefer, v2_status, v3_code):
    v2 = call("v2", {"Prefer": prefer})
    v3 = call("v3", {"Prefer": prefer})

    assert v2.status_code == v2_status
    assert v3.status_code == v2_status
    assert v3.get_json()["errors"][0]["code"] == v3_code


def test_prefer_without_code_changes_nothing(call):
    answer = call("v2", {"Prefer": "return=representation"})
    assert answer.status_code == 200
    assert answer.get_json()["identifiant"] == "camille.exemple"
    assert "fault" not in journal(call)[0]


@pytest.fixture
def slept(monkeypatch):
    """The pauses the sandbox makes in this thread, recorded rather than waited: a latency is
    checked as what was asked of the clock, never as a wall-clock measurement."""
    pauses, real, caller = [], time.sleep, threading.get_ident()

    def sleep(seconds):
        if threading.get_ident() == caller:
            pauses.append(seconds)
        else:
            real(seconds)
    monkeypatch.setattr(time, "sleep", sleep)
    return pauses


def test_latency_delays_the_real_answer(call, slept):
    answer = call("v2", {"X-Sandbox-Fault": "latency=400"})

    assert slept == [0.4]
    assert answer.status_code == 200
    assert answer.get_json()["prenom"] == "CAMILLE"
    assert journal(call)[0]["fault"] == "latency=400"


def test_latency_and_a_fault_together(call, slept):
    answer = call("v3", {"X-Sandbox-Fault": "Timeout, latency=200"})

    assert slept == [0.2]
    assert answer.status_code == 504
    assert journal(call)[0]["fault"] == "timeout,latency=200"


def test_a_case_latency_ms_is_honoured(call, slept):
    answer = call("v2", identifiant="bruno.exemple")
    assert answer.status_code == 200 and answer.get_json()["prenom"] == "BRUNO"
    assert slept == [0.3]

    call("v2", identifiant="camille.exemple")
    assert slept == [0.3], "a case without latency_ms answers at once"


@pytest.mark.parametrize("headers, mentioned", [
    ({"X-Sandbox-Fault": "explode"}, "explode"),
    ({"X-Sandbox-Fault": "latency=abc"}, "latency=abc"),
    ({"X-Sandbox-Fault": "latency=-5"}, "latency=-5"),
    ({"X-Sandbox-Fault": "latency=999999"}, "latency=999999"),
    ({"X-Sandbox-Fault": "timeout=1"}, "timeout=1"),
    ({"X-Sandbox-Fault": "timeout,unavailable"}, "une seule panne"),
    ({"Prefer": "code=418"}, "code=418"),
    ({"Prefer": "code=5031"}, "code=5031"),
    ({"Prefer": "code=abc"}, "code=abc"),
    ({"Prefer": "code=503", "X-Sandbox-Fault": "timeout"}, "Prefer demande maintenance"),
])
def test_a_fault_request_that_is_not_understood_is_refused_clearly(call, headers, mentioned):
    v2 = call("v2", headers)
    v3 = call("v3", headers)

    assert v2.status_code == 400
    assert v2.get_json()["error"] == "bad_request"
    assert mentioned in v2.get_json()["reason"]
    assert v3.status_code == 422
    [error] = v3.get_json()["errors"]
    assert mentioned in error["detail"]
    assert error["source"] == {"parameter": "Prefer" if "Prefer" in headers else "X-Sandbox-Fault"}


def test_a_fault_never_skips_authentication_or_validation(call):
    assert call.client.get(V2, query_string={"identifiant": "x"},
                           headers={"X-Sandbox-Fault": "timeout"}).status_code == 401
    missing = call.client.get(V2, headers={"X-Api-Key": call.token, "X-Sandbox-Fault": "timeout"})
    assert missing.status_code == 400


def test_faults_off_ignores_the_headers(make_app, personas, slept):
    client = make_app(fixtures=(personas,), faults=False).test_client()
    token = token_for()
    for headers in ({"X-Sandbox-Fault": "timeout"}, {"Prefer": "code=503"}, {"X-Sandbox-Fault": "explode"},
                    {"X-Sandbox-Fault": "latency=2000"}):
        answer = client.get(V2, query_string={"identifiant": "camille.exemple"},
                            headers={"X-Api-Key": token, **headers})
        assert answer.status_code == 200, headers
    assert slept == [], "no latency either"
    entries = client.get("/sandbox/requests", headers={"X-Api-Key": token}).get_json()["requests"]
    assert all("fault" not in e for e in entries)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_serve_faults_off_under_gunicorn(start_server, personas, how):
    if how == "flag":
        server = start_server("--fixtures", str(personas), "--faults", "off")
    else:
        server = start_server(env={"SANDBOX_FIXTURES": str(personas), "SANDBOX_FAULTS": "off"})
    token = token_for()
    answer = requests.get(server.url + V2, params={"identifiant": "camille.exemple"},
                          headers={"X-Api-Key": token, "X-Sandbox-Fault": "unavailable"}, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["identifiant"] == "camille.exemple"


def test_cors_lets_a_browser_send_the_fault_headers(sandbox_app):
    """An origin opened with SANDBOX_CORS_ORIGINS may send the sandbox's own headers."""
    answer = sandbox_app.test_client().options(V2, headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-sandbox-fault, prefer"})
    allowed = {h.strip().lower() for h in answer.headers.get("Access-Control-Allow-Headers", "").split(",")}
    assert {"x-sandbox-fault", "prefer"} <= allowed


def test_near_miss_header_is_json_and_the_body_stays_production_s(call):
    answer = call("v2", identifiant="camille.exempel")

    assert answer.status_code == 404
    near_miss = json.loads(answer.headers["X-Sandbox-Near-Miss"])
    assert near_miss.pop("case").startswith(f"{V2_OPERATION}/200_")  # both personas are one value away
    assert near_miss == {"missing": [], "unexpected": [], "different": ["identifiant"]}
    assert set(answer.get_json()) == {"error", "reason", "message"}
    assert answer.get_json()["error"] == "not_found"
