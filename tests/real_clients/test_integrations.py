"""Real clients' habits, against the bundled population (Flask test client: no server needed).

Production's staging finds a case by the provider's mock key (siade/app/services/mock_service.rb,
each provider's MakeRequest#mocking_params): what the route reads, lower-cased. A client that
works in production must get the same case here whatever else it sends.
"""
from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from sandbox.cli import main

from ..conftest import RECIPIENT, token_for, v2_headers, v3_headers

CNAV_QF = "/v3/dss/quotient_familial/identite"
AICHA = [("nomNaissance", "DEMO"), ("prenoms[]", "Aïcha"), ("prenoms[]", "Nour"), ("anneeDateNaissance", "1994"),
         ("moisDateNaissance", "2"), ("jourDateNaissance", "28"), ("sexeEtatCivil", "F"),
         ("codeCogInseePaysNaissance", "99350"), ("recipient", RECIPIENT)]
CAMILLE_CNOUS = [("nomNaissance", "BACASABLE"), ("prenoms[]", "Camille"), ("prenoms[]", "Marie"),
                 ("anneeDateNaissance", "1990"), ("moisDateNaissance", "4"), ("jourDateNaissance", "12"),
                 ("sexeEtatCivil", "F"), ("codeCogInseeCommuneNaissance", "75115"), ("recipient", RECIPIENT)]
LEA = [("nom", "ESSAI"), ("prenom", "Léa"), ("dateDeNaissance", "2004-03-18"), ("sexe", "F"),
       ("lieuDeNaissance", "69387")]


def _get(client, path, query, headers=None):
    return client.get(path, query_string=query, headers=headers or v3_headers(token_for()))


def test_a_web_app_forwarding_its_tracking_parameters_gets_the_same_answer(client):
    plain = _get(client, CNAV_QF, AICHA)
    tracked = _get(client, CNAV_QF, AICHA + [("utm_source", "newsletter"), ("utm_campaign", "rentree")])
    assert plain.status_code == tracked.status_code == 200
    assert tracked.headers["X-Sandbox-Case"] == plain.headers["X-Sandbox-Case"] \
        == "api_particulier_v3_cnav_quotient_familial_with_civility/200_demo_aicha.yaml"
    assert tracked.get_json() == plain.get_json()


def test_a_client_building_one_civil_status_for_every_route_sends_the_birth_country_to_cnous(client):
    # Cnous v4 does not declare codeCogInseePaysNaissance; production's controller reads it
    # (concerns/api_particulier/civility_parameters.rb) and its provider ignores it
    # (cnous/student_scholarship_with_civility/make_request.rb)
    path = "/v4/cnous/etudiant_boursier/identite"
    answer = _get(client, path, CAMILLE_CNOUS + [("codeCogInseePaysNaissance", "99100")])
    assert answer.status_code == 200
    assert answer.headers["X-Sandbox-Case"] == \
        "api_particulier_v4_cnous_etudiant_boursier_with_civility/200_etat_civil_bacasable_camille.yaml"


def test_a_form_posting_an_empty_birth_commune_for_a_person_born_abroad(client):
    # the commune field of a form left empty: `codeCogInseeCommuneNaissance=`
    answer = _get(client, CNAV_QF, AICHA + [("codeCogInseeCommuneNaissance", ""), ("nomUsage", "")])
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["X-Sandbox-Case"].endswith("/200_demo_aicha.yaml")


def test_a_client_sending_names_as_the_user_typed_them(client):
    typed = [(k, v.lower() if k in ("nomNaissance", "prenoms[]") else v) for k, v in AICHA]
    shouted = [(k, v.upper() if k in ("nomNaissance", "prenoms[]") else v) for k, v in AICHA]
    first, second = _get(client, CNAV_QF, typed), _get(client, CNAV_QF, shouted)
    assert first.status_code == second.status_code == 200
    assert first.headers["X-Sandbox-Case"] == second.headers["X-Sandbox-Case"]


def test_a_client_zero_padding_the_birth_month_and_day(client):
    # CNAV reads the date parts as integers (cnav/make_request.rb: int_or_nil)
    padded = [(k, {"moisDateNaissance": "02"}.get(k, v)) for k, v in AICHA]
    answer = _get(client, CNAV_QF, padded)
    assert answer.status_code == 200 and answer.headers["X-Sandbox-Case"].endswith("/200_demo_aicha.yaml")


def test_a_university_app_sending_the_ine_with_the_civil_status_on_v2(client):
    # v2/mesri/student_status_controller.rb: an INE outside FranceConnect selects the INE search;
    # the civil status sent with it is not read (here it even names someone else)
    query = [("ine", "999000003CC")] + LEA
    answer = client.get("/api/v2/etudiants", query_string=query, headers=v2_headers(token_for()))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["X-Sandbox-Case"] == \
        "api_particulier_v2_mesri_student_status/200_ine_999000003CC_demo_ines.yaml"
    body = answer.get_json()
    assert body["ine"] == "999000003CC" and body["nom"] == "DÉMO"


def test_v2_etudiants_sends_the_ine_with_mesri_identifiant_only(client):
    # siade/app/serializers/api_particulier/mesri/student_status/v2.rb: attribute :ine, if mesri_identifiant
    both = client.get("/api/v2/etudiants", query_string=LEA, headers=v2_headers(token_for()))
    assert both.status_code == 200 and both.get_json()["ine"] == "999000001AA"
    without = client.get("/api/v2/etudiants", query_string=LEA,
                         headers=v2_headers(token_for(["mesri_identite", "mesri_inscription_etudiant"])))
    assert without.status_code == 200 and "ine" not in without.get_json() and without.get_json()["nom"] == "ESSAI"


def test_v2_etudiants_names_admission_dates_as_production(client):
    # the same serializer: an admission (`admis`) carries dateDebutAdmission / dateFinAdmission
    answer = client.get("/api/v2/etudiants", query_string={"ine": "999000003CC"}, headers=v2_headers(token_for()))
    admitted = [i for i in answer.get_json()["inscriptions"] if i.get("statut") == "admis"]
    assert admitted and all({"dateDebutAdmission", "dateFinAdmission"} <= i.keys() for i in admitted)
    assert not any("dateDebutInscription" in i for i in admitted)


def test_a_client_that_misspells_a_value_is_told_only_about_what_production_reads(client):
    wrong = [(k, "1995" if k == "anneeDateNaissance" else v) for k, v in AICHA] + [("utm_source", "x")]
    answer = _get(client, CNAV_QF, wrong)
    assert answer.status_code == 404
    near = json.loads(answer.headers["X-Sandbox-Near-Miss"])
    assert near["case"].endswith("/200_demo_aicha.yaml")
    assert near["different"] == ["anneeDateNaissance"] and near["unexpected"] == [] and near["missing"] == []


def test_a_ci_pipeline_persona_is_found_as_a_file_is(client):
    token = token_for()
    created = client.post("/sandbox/personas", headers=v2_headers(token), json={
        "operation": "/v3/france_travail/statut/identifiant", "params": {"identifiant": "ci-zoe"},
        "like": "api_particulier_v3_france_travail_statut_with_identifiant/200_default.yaml"})
    assert created.status_code == 201, created.get_data(as_text=True)
    answer = _get(client, "/v3/france_travail/statut/identifiant",
                  [("identifiant", "CI-ZOE"), ("recipient", RECIPIENT), ("utm_source", "ci")], v3_headers(token))
    assert answer.status_code == 200 and answer.headers["X-Sandbox-Case"] == created.get_json()["case"]


def test_a_franceconnect_client_adding_its_own_parameters_still_gets_the_citizen(client):
    # the fake FranceConnect token `tout` names one citizen; the route reads no query but recipient
    path = "/v3/dss/quotient_familial/france_connect"
    plain = _get(client, path, [("recipient", RECIPIENT)], v3_headers("tout"))
    extra = _get(client, path, [("recipient", RECIPIENT), ("utm_source", "x")], v3_headers("tout"))
    assert plain.status_code == extra.status_code == 200
    assert extra.headers["X-Sandbox-Case"] == plain.headers["X-Sandbox-Case"]


def test_an_author_copying_a_case_and_changing_only_what_production_ignores_is_told(tmp_path):
    folder = tmp_path / "fx" / "api_particulier_v3_france_travail_statut_with_identifiant"
    folder.mkdir(parents=True)
    for name, params in (("200_a.yaml", {"identifiant": "Zoe"}), ("200_b.yaml", {"identifiant": "zoe", "utm": "x"})):
        (folder / name).write_text(yaml.safe_dump({"params": params, "status": 200, "payload": {"data": {}}}))
    result = CliRunner().invoke(main, ["fixtures", "check", "--fixtures", str(tmp_path / "fx")])
    assert result.exit_code == 1
    assert "200_b.yaml: $.params: same params as 200_a.yaml as production reads them (identifiant=zoe)" \
        in result.output


def test_a_franceconnect_login_on_v2_etudiants_with_a_stale_ine_in_the_query(client):
    # v2/mesri/student_status_controller.rb: FranceConnect first (`call_with_ine? && !france_connect?`):
    # an INE left in the query by a form is not read on a FranceConnect call
    query = [("recipient", RECIPIENT)]
    plain = client.get("/api/v2/etudiants", query_string=query, headers=v3_headers("tout"))
    stale = client.get("/api/v2/etudiants", query_string=query + [("ine", "999000003CC")], headers=v3_headers("tout"))
    assert plain.status_code == stale.status_code == 200, stale.get_data(as_text=True)
    assert stale.headers["X-Sandbox-Case"] == plain.headers["X-Sandbox-Case"]
