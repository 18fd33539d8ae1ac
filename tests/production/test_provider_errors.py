"""A data provider's failure answered as production answers it: status per version, code, title,
detail and meta per provider (rules: sandbox/production/data/provider_errors.yml).

Production files mirrored (paths under siade/): the status mapping of
app/controllers/concerns/organizers_methods_helpers.rb (v3) and
app/controllers/api_particulier/v2/base_controller.rb (v2), the error classes of app/errors/,
config/errors.yml, the per-provider texts of app/interactors/*/validate_response.rb, and the
controller specs under spec/controllers/api_particulier/.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from werkzeug.datastructures import Headers

from sandbox.production import errors, provider_errors

from sandbox.api import faults
from sandbox.production.scopes import ScopeCatalogue

from ..conftest import RECIPIENT, token_for, v2_headers, v3_headers

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CATALOGUE = ScopeCatalogue()
SUFFIX = " Veuillez vérifier que votre recherche est couverte par le périmètre de l'API."

# kind -> (v3 status, v2 status, v2 `error`)
STATUSES = {
    "not_found": (404, 404, "not_found"),
    "conflict": (409, 409, "conflict"),
    "internal": (502, 503, "data_provider_error"),
    "unavailable": (502, 503, "data_provider_error"),
    "provider_error": (502, 503, "provider_unknown_error"),
    "rate_limited": (502, 503, "data_provider_error"),
    "timeout": (504, 504, "timeout_error"),
    "maintenance": (503, 503, "maintenance"),
    "network_error": (502, 502, "network_error"),
}


@pytest.mark.parametrize("kind", sorted(STATUSES))
def test_v3_status_of_each_kind(kind):
    """siade/app/controllers/concerns/organizers_methods_helpers.rb#extract_http_code: provider,
    unknown and network errors 502, timeout 504, maintenance 503 (the only 503)."""
    status, body = errors.provider_fault(kind, True, "CNAV", "37")  # CNAV reads a 429 as a throttle
    assert status == STATUSES[kind][0]
    [error] = body["errors"]
    assert error["code"] == ("00501" if kind == "network_error" else "37" + provider_errors.KINDS[kind]["subcode"])


@pytest.mark.parametrize("kind", sorted(STATUSES))
def test_v2_status_and_error_of_each_kind(kind):
    """siade/app/controllers/api_particulier/v2/base_controller.rb#extract_http_code and #format_error:
    provider errors 503 (`data_provider_error`; an unknown answer keeps its kind as `error`)."""
    status, body = errors.provider_fault(kind, False, "CNAV", "37")
    assert (status, body["error"]) == STATUSES[kind][1:]
    assert set(body) == {"error", "reason", "message"}


@pytest.mark.parametrize("provider, prefix", [("France Travail", "24"), ("MESRI", "25"), ("CNOUS", "26"), ("MEN", "30"),
                                              ("GIP-MDS", "31"), ("DSNJ", "39"), ("SDH", "41")])
def test_a_throttle_of_a_provider_whose_code_has_no_429_case_is_an_unknown_answer(provider, prefix):
    """siade/app/interactors/france_travail/{statut,indemnites}/validate_response.rb (and the
    validate_response.rb of MESRI, CNOUS, MEN, GIP-MDS, DSNJ, SDH): a 429 is not 200, so it ends in
    unknown_provider_response! (ProviderUnknownError, 999): v3 502, v2 503 `provider_unknown_error`.
    Only CNAV's code turns a 429 into ProviderRateLimitingError (008)."""
    assert errors.provider_fault("rate_limited", True, provider, prefix) == \
        errors.provider_fault("provider_error", True, provider, prefix)
    status, body = errors.provider_fault("rate_limited", True, provider, prefix)
    assert status == 502 and body["errors"][0]["code"] == prefix + "999"
    assert body["errors"][0]["meta"] == {"provider": provider}
    status, body = errors.provider_fault("rate_limited", False, provider, prefix)
    assert (status, body["error"]) == (503, "provider_unknown_error")
    status, body = errors.provider_fault("rate_limited", True, "CNAF & MSA", "35")
    assert status == 502 and body["errors"][0]["code"] == "35008"


def test_v2_not_found_and_provider_error_bodies():
    """siade/spec/controllers/api_particulier/v2/base_controller_errors_rendering_spec.rb: reason and
    message are the error's detail; a not-found detail ends with the perimeter sentence."""
    status, body = errors.provider_fault("not_found", False, "DSNJ", "39")
    assert status == 404 and body["reason"] == body["message"] and body["message"].endswith(SUFFIX)
    status, body = errors.provider_fault("internal", False, "DSNJ", "39")
    assert status == 503 and body == {"error": "data_provider_error", "reason": provider_errors.KINDS["internal"]["detail"],
                                      "message": provider_errors.KINDS["internal"]["detail"]}


@pytest.mark.parametrize("provider, operation_id, reason, detail", [
    ("MESRI", None, "Student not found", "Aucun étudiant n'a pu être trouvé avec les critères de recherche fournis"),
    ("CNOUS", None, "Scholarship not found",
     "Aucun étudiant boursier n'a pu être trouvé avec les critères de recherche fournis"),
    ("France Travail", "api_particulier_v2_pole_emploi_statut", "Situation not found",
     "Aucune situation France Travail n'a pu être trouvée avec les critères de recherche fournis"),
])
def test_v2_not_found_bodies_of_the_controller_specs(provider, operation_id, reason, detail):
    """siade/spec/controllers/api_particulier/v2/{mesri/student_status,cnous/student_scholarship,
    pole_emploi/statut}_controller_spec.rb ('when it is a 404'): the exact body."""
    status, body = errors.provider_fault("not_found", False, provider, "00", operation_id)
    assert status == 404
    assert body == {"error": "not_found", "reason": reason, "message": detail + SUFFIX}


@pytest.mark.parametrize("operation_id", [o for o in CATALOGUE.operations
                                          if "quotient_familial_v2" in o or "_cnav_" in o])
def test_a_cnav_not_found_names_the_regime_not_cnav(operation_id):
    """siade/app/interactors/cnav/validate_response.rb#regime_not_found_error: the 404 names the
    fund holding the file (CNAF 23003; MSA 10003 is a variant), never CNAV."""
    op = CATALOGUE.get(operation_id)
    status, body = errors.provider_fault("not_found", True, op.provider, op.code_prefix)
    assert status == 404
    assert body["errors"][0] | {"detail": None} == {"code": "23003", "title": "Dossier allocataire absent CNAF",
                                                    "detail": None, "meta": {"provider": "CNAF"}}
    msa = provider_errors.render(provider_errors.variant("msa_not_found", op.provider), True, op.provider)[1]
    assert msa["errors"][0]["code"] == "10003"


def test_a_cnav_404_without_regime_is_now_an_unknown_provider_response():
    """siade/app/interactors/cnav/validate_response.rb (newer than the snapshot, 0af229a7):
    resource_not_found! without the X-APISECU-FD regime -> unknown_provider_response!(..., subcode: '998')."""
    rule = provider_errors.variant("cnav_unexpected", "Sécurité sociale")
    v3_status, v3 = provider_errors.render(rule, True, "Sécurité sociale")
    assert v3_status == 502
    assert v3["errors"][0]["code"] == "36998"
    assert v3["errors"][0]["detail"] == "Une erreur inattendue est survenue lors de la collecte des données"
    assert provider_errors.render(rule, False, "Sécurité sociale")[0] == 503


@pytest.mark.parametrize("operation_id, provider, prefix", [
    ("api_particulier_v3_cnav_prime_activite_with_civility", "Sécurité sociale", "36"),
    ("api_particulier_v3_cnav_quotient_familial_with_civility", "CNAF & MSA", "35"),
    ("api_particulier_v3_sdh_statut_sportif_with_identifiant", "SDH", "41"),
    ("api_particulier_v3_gip_mds_service_civique_with_civility", "GIP-MDS", "31"),
])
def test_provider_and_prefix_are_production_s(operation_id, provider, prefix):
    """siade/app/organizers/{cnav/*,sdh/statut_sportif,gip_mds/service_civique}.rb#provider_name and
    siade/app/services/errors_backend.rb#provider_hash."""
    op = CATALOGUE.get(operation_id)
    assert (op.provider, op.code_prefix) == (provider, prefix)
    status, body = errors.provider_fault("timeout", True, op.provider, op.code_prefix)
    assert status == 504 and body["errors"][0]["code"] == prefix + "002"
    assert body["errors"][0]["meta"] == {"provider": provider}


def test_v3_provider_error_has_no_source():
    """siade/app/serializers/errors_serializer.rb#json_api compacts a null `source` away."""
    _, body = errors.provider_fault("unavailable", True, "CNOUS", "26")
    assert set(body["errors"][0]) == {"code", "title", "detail", "meta"}


def test_maintenance_names_the_window_and_when_to_retry():
    """siade/app/errors/maintenance_error.rb with siade/config/maintenances.yml (MEN 01:10-02:30)."""
    status, body = errors.provider_fault("maintenance", True, "MEN", "30")
    assert status == 503
    assert body["errors"][0] == {"code": "30020", "title": "Maintenance du fournisseur de données",
                                 "detail": "Le fournisseur de données est en maintenance de 01:10 à 02:30",
                                 "meta": {"provider": "MEN", "retry_in": 80 * 60}}
    _, body = errors.provider_fault("maintenance", True, "CNOUS", "26")
    assert body["errors"][0]["detail"] == "Le fournisseur de données semble être en maintenance"


def test_network_error_is_the_api_s_own_code():
    """siade/app/errors/network_error.rb: code 00501, meta {retry_in: 10}, no provider."""
    _, body = errors.provider_fault("network_error", True, "MEN", "30")
    assert body["errors"][0]["code"] == "00501" and body["errors"][0]["meta"] == {"retry_in": 10}


@pytest.mark.parametrize("status, kind", [(404, "not_found"), (409, "conflict"), (500, "api_internal"),
                                          (502, "network_error"), (503, "maintenance"), (504, "timeout"),
                                          (429, "api_rate_limited")])
def test_prefer_code_picks_a_kind_with_that_status_on_both_versions(status, kind):
    """siade/app/controllers/concerns/organizers_methods_helpers.rb and v2/base_controller.rb: the kind
    chosen for `Prefer: code=N` answers N on v2 and on v3."""
    fault = faults.from_request(Headers({"Prefer": f"code={status}"}))
    assert fault.kind == kind
    if kind != "api_rate_limited":
        assert errors.provider_fault(kind, True, "MEN", "30")[0] == status
        assert errors.provider_fault(kind, False, "MEN", "30")[0] == status


def _error_cases():
    for folder in sorted(FIXTURES.iterdir()):
        op = CATALOGUE.get(folder.name)
        if op is None:
            continue
        for path in sorted(folder.glob("*.y*ml")):
            data = yaml.safe_load(path.read_text())
            if isinstance(data, dict) and data.get("status") in (404, 409, 500, 502, 503, 504):
                yield pytest.param(folder.name, data, id=f"{folder.name[17:]}/{path.stem}")


BY_SUBCODE = {rule["subcode"]: kind for kind, rule in provider_errors.KINDS.items() if "subcode" in rule}
BY_SUBCODE.update({"004": "not_found", "005": "not_found"})


@pytest.mark.parametrize("operation_id, case", list(_error_cases()))
def test_bundled_error_case_has_production_s_status(operation_id, case):
    """siade/app/controllers/concerns/organizers_methods_helpers.rb (v3) and
    siade/app/controllers/api_particulier/v2/base_controller.rb (v2): each bundled provider-error
    case carries the status production gives its kind, and the provider production names."""
    payload, status = case["payload"], case["status"]
    if operation_id.startswith("api_particulier_v2_"):
        slugs = {404: {"not_found"}, 409: {"conflict"}, 503: {"data_provider_error", "provider_unknown_error",
                                                              "maintenance"}, 504: {"timeout_error"}}
        assert payload["error"] in slugs.get(status, set()), (status, payload["error"])
        return
    [error] = payload["errors"]
    kind = BY_SUBCODE[error["code"][2:]]
    assert status == STATUSES[kind][0]
    assert provider_errors.PROVIDERS[error["meta"]["provider"]] == error["code"][:2]
    assert "source" not in error


def test_every_v3_provider_error_status_is_one_production_can_give():
    """siade/app/controllers/concerns/organizers_methods_helpers.rb: no provider error is a v3 500,
    and 503 is a provider in maintenance only."""
    for param in _error_cases():
        operation_id, case = param.values
        if not operation_id.startswith("api_particulier_v2_"):
            assert case["status"] != 500, param.id
            if case["status"] == 503:
                assert case["payload"]["errors"][0]["code"].endswith("020"), param.id


def test_fault_injection_over_http_answers_production_s_statuses(client):
    """siade/app/controllers/concerns/organizers_methods_helpers.rb and v2/base_controller.rb, through
    the pipeline: `X-Sandbox-Fault: unavailable` is 502 on v3 and 503 `data_provider_error` on v2."""
    token = token_for()
    v3 = client.get("/v3/france_travail/statut/identifiant",
                    query_string={"identifiant": "default", "recipient": RECIPIENT},
                    headers={**v3_headers(token), "X-Sandbox-Fault": "unavailable"})
    assert v3.status_code == 502 and v3.get_json()["errors"][0]["code"] == "24001"
    v2 = client.get("/api/v2/situations-pole-emploi", query_string={"identifiant": "default"},
                    headers={**v2_headers(token), "X-Sandbox-Fault": "unavailable"})
    assert v2.status_code == 503 and v2.get_json()["error"] == "data_provider_error"
