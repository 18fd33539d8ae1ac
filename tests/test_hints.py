"""X-Sandbox-Hint: a refused call (v2 400, v3 422) is told which parameter, what was received and the
format production expects, while the body stays production's, byte for byte."""
from __future__ import annotations

import datetime
import json

import pytest

from sandbox.api.pipeline import HINT_LIMIT
from sandbox.production import clock

from .conftest import RECIPIENT, token_for, v2_headers, v3_headers

DAY = datetime.date(2031, 3, 15)  # the clock is frozen: years and months in the hints are this day's
CIVILITY = {"nomNaissance": "DUPONT", "prenoms[]": ["Jean"], "anneeDateNaissance": "1990",
            "moisDateNaissance": "4", "jourDateNaissance": "12", "sexeEtatCivil": "M",
            "codeCogInseePaysNaissance": "99100", "codeCogInseeCommuneNaissance": "75115"}
UUID = "123e4567-e89b-12d3-a456-426614174000"


@pytest.fixture
def frozen(monkeypatch):
    monkeypatch.setattr(clock, "_FROZEN", DAY)


def _call(client, path, query, v3=True, headers=None):
    token = token_for()
    sent = {**(v3_headers(token) if v3 else v2_headers(token)), "X-Request-Id": UUID, **(headers or {})}
    return client.get(path, query_string=query, headers=sent)


def _hint(response) -> dict:
    raw = response.headers["X-Sandbox-Hint"]
    raw.encode("ascii")  # plain ASCII: any HTTP stack carries it
    return json.loads(raw)


def _by_code(hint, code):
    return next(item for item in hint["refused"] if item["code"] == code)


def test_v3_civil_status_malformed_birth_year_and_sex(client, frozen):
    query = {**CIVILITY, "anneeDateNaissance": "abc", "sexeEtatCivil": "Homme", "recipient": RECIPIENT}
    response = _call(client, "/v3/dss/quotient_familial/identite", query)
    assert response.status_code == 422
    body = response.get_json()
    # production's texts say "manquant" although something was sent
    assert {e["code"] for e in body["errors"]} == {"00363", "00427"}
    hint = _hint(response)
    assert [item["code"] for item in hint["refused"]] == [e["code"] for e in body["errors"]]
    sexe = _by_code(hint, "00427")
    assert sexe["parameters"] == {"sexeEtatCivil": "Homme"} and sexe["expected"].startswith("M ou F")
    date = _by_code(hint, "00363")
    assert date["parameters"] == {"anneeDateNaissance": "abc", "moisDateNaissance": "4", "jourDateNaissance": "12"}
    assert "2031-03-14" in date["expected"]  # up to yesterday, on the frozen day


def test_v3_prenoms_without_brackets_names_the_value_and_the_list_form(client, frozen):
    query = {k: v for k, v in CIVILITY.items() if k != "prenoms[]"}
    response = _call(client, "/v3/gip_mds/service_civique/identite",
                     {**query, "prenoms": "Jean", "recipient": RECIPIENT})
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["detail"] == "Le(s) prenom(s) est manquant"
    item = _by_code(_hint(response), "00421")
    assert item["parameters"] == {"prenoms": "Jean"}
    assert "prenoms[]=Jean&prenoms[]=Pierre" in item["expected"]


def test_v3_malformed_ine_and_recipient(client, frozen):
    response = _call(client, "/v3/mesri/statut_etudiant/ine", {"ine": "12345", "recipient": RECIPIENT})
    assert response.status_code == 422
    item = _by_code(_hint(response), "00360")
    assert item["parameters"] == {"ine": "12345"} and "1234567890A" in item["expected"]

    response = _call(client, "/v3/mesri/statut_etudiant/ine", {"ine": "1234567890A", "recipient": "13002526500012"})
    assert response.status_code == 422 and response.get_json()["errors"][0]["code"] == "00210"
    item = _by_code(_hint(response), "00210")
    assert item["parameters"] == {"recipient": "13002526500012"} and "Luhn" in item["expected"]

    response = _call(client, "/v3/mesri/statut_etudiant/ine", {"ine": "1234567890A"})  # no recipient at all
    assert _by_code(_hint(response), "00210")["parameters"] == {"recipient": None}


def test_v3_quotient_familial_year_and_month(client, frozen):
    response = _call(client, "/v3/dss/quotient_familial/identite",
                     {**CIVILITY, "annee": "2027", "mois": "13", "recipient": RECIPIENT})
    assert response.status_code == 422
    hint = _hint(response)
    year = _by_code(hint, "00356")
    assert year["parameters"] == {"annee": "2027"} and "2029, 2030 ou 2031" in year["expected"]
    month = _by_code(hint, "00354")
    assert month["parameters"] == {"mois": "13", "annee": "2027"} and "au plus 3" in month["expected"]


def test_v2_names_the_v2_parameter_and_keeps_production_body(client, frozen):
    query = {"nomNaissance": "DUPONT", "prenoms[]": "Jean", "anneeDateDeNaissance": "1990", "moisDateDeNaissance": "4",
             "jourDateDeNaissance": "12", "sexe": "M", "codePaysLieuDeNaissance": "99100",
             "codeInseeLieuDeNaissance": "7511", "annee": "2020", "mois": "3"}
    response = _call(client, "/api/v2/composition-familiale-v2", query, v3=False)
    assert response.status_code == 400
    body = response.get_json()
    assert body == {"error": "bad_request", "reason": body["reason"], "message": body["reason"]}
    hint = _hint(response)
    # production's CNAV birthplace check replaces the errors found before it (the year's among them)
    assert [item["code"] for item in hint["refused"]] == ["00365"]
    assert body["reason"] == "Le lieu de naissance n'est pas correctement formaté"
    place = hint["refused"][0]
    assert place["parameters"]["codeInseeLieuDeNaissance"] == "7511" and "75115" in place["expected"]

    response = _call(client, "/api/v2/composition-familiale-v2", {**query, "codeInseeLieuDeNaissance": "75115"}, v3=False)
    assert response.status_code == 400
    assert response.get_json()["reason"] == "L'année demandée doit être l'année en cours (N), N-1 ou N-2."
    year = _hint(response)["refused"][0]  # the first: the one v2's body tells
    assert year["code"] == "00356" and year["parameters"] == {"annee": "2020"}
    assert "2029, 2030 ou 2031" in year["expected"]


def test_v2_student_status_date_read_from_one_parameter(client, frozen):
    query = {"nom": "DUPONT", "prenom": "Jean", "dateDeNaissance": "12/04/1990", "sexe": "M", "lieuDeNaissance": "75115"}
    response = _call(client, "/api/v2/etudiants", query, v3=False)
    assert response.status_code == 400
    item = _hint(response)["refused"][0]
    assert item["parameters"] == {"dateDeNaissance": "12/04/1990"}

    response = _call(client, "/api/v2/etudiants", {"ine": "12"}, v3=False)
    assert response.status_code == 400
    assert _hint(response)["refused"] == [{"code": "00360", "parameters": {"ine": "12"},
                                           "expected": _hint(response)["refused"][0]["expected"]}]


def test_non_ascii_values_are_escaped_and_long_values_cut(client, frozen):
    query = {**CIVILITY, "nomNaissance": "Dupont☃" + "x" * 500, "recipient": RECIPIENT}
    response = _call(client, "/v3/gip_mds/service_civique/identite", query)
    assert response.status_code == 422
    raw = response.headers["X-Sandbox-Hint"]
    assert "\\u2603" in raw and len(raw) <= HINT_LIMIT + 100
    item = _by_code(_hint(response), "00420")
    assert item["parameters"]["nomNaissance"].startswith("Dupont☃xx") and item["parameters"]["nomNaissance"].endswith("...")
    assert "lettres (accentuées comprises)" in item["expected"]


def test_the_body_is_byte_identical_with_or_without_the_hint(client, frozen):
    """The hint is only a header: the body of every refused call is what production's texts make."""
    from sandbox.production import errors, validation_rules
    from werkzeug.datastructures import MultiDict
    calls = [("/v3/dss/quotient_familial/identite", "api_particulier_v3_cnav_quotient_familial_with_civility",
              {**CIVILITY, "anneeDateNaissance": "abc", "annee": "1999", "recipient": RECIPIENT}, True),
             ("/v3/dsnj/service_national/identite", "api_particulier_v3_dsnj_service_national_with_civility",
              {**CIVILITY, "recipient": RECIPIENT}, True),
             ("/api/v2/etudiants", "api_particulier_v2_mesri_student_status", {"ine": "x"}, False)]
    for path, operation_id, query, v3 in calls:
        response = _call(client, path, query, v3=v3)
        assert "X-Sandbox-Hint" in response.headers
        try:
            validation_rules.check(operation_id, v3, MultiDict(query), {"X-Request-Id": UUID})
        except errors.ParameterErrors as error:
            error.hints = []
            status, payload = errors.render(error, v3)
        assert response.status_code == status and response.get_data() == errors.dumps(payload)


def test_dsnj_age_hint_gives_the_birth_dates_production_accepts(client, frozen):
    response = _call(client, "/v3/dsnj/service_national/identite", {**CIVILITY, "recipient": RECIPIENT})
    assert response.status_code == 422
    item = _by_code(_hint(response), "39400")
    assert "du 2005-03-16 au 2015-03-15" in item["expected"]


def test_an_answered_call_has_no_hint(client):
    response = _call(client, "/v3/france_travail/statut/identifiant", {"identifiant": "default", "recipient": RECIPIENT})
    assert response.status_code == 200 and "X-Sandbox-Hint" not in response.headers


def test_every_error_production_reports_has_a_format_and_every_parameter_is_read_somewhere():
    """The formats are data beside production's error table: one per error, naming parameters the
    route tables read, and validators that exist."""
    from sandbox.production import parameter_checks, validation_rules
    from sandbox.production.parameter_hints import FORMATS, placeholders
    assert set(validation_rules.PARAMETER_ERRORS) <= set(FORMATS)
    read = {name for entry in validation_rules.ROUTES for name in entry[1].names} | {"recipient"}
    for field, entry in FORMATS.items():
        for variant in [entry, *(entry.get("by_rule") or {}).values()]:
            assert set(variant.get("params") or ()) <= read, field
            variant.get("expected", entry["expected"]).format(**placeholders(DAY))
        assert all(hasattr(parameter_checks, rule) for rule in entry.get("by_rule") or {}), field


@pytest.mark.slow
def test_through_a_real_server_four_years_ahead(start_server):
    """A real gunicorn, its day four years ahead (SANDBOX_TODAY): the hint crosses the wire as
    plain ASCII whatever was sent, and a case whose params are relative dates answers that day."""
    import requests
    import yaml

    from .conftest import ROOT
    ahead = clock.today().replace(day=1)
    ahead = ahead.replace(year=ahead.year + 4)
    server = start_server(env={"SANDBOX_TODAY": ahead.isoformat()})
    token = token_for()
    headers = {"Authorization": f"Bearer {token}", "X-Request-Id": UUID}
    path = "/v3/dsnj/service_national/identite"
    anais = yaml.safe_load((ROOT / "fixtures" / "api_particulier_v3_dsnj_service_national_with_civility"
                            / "200_fictif_demo_anais.yaml").read_text())["params"]
    query = {("prenoms[]" if k == "prenoms" else k): v for k, v in anais.items()}
    query.update(anneeDateNaissance=ahead.year - 23, recipient=RECIPIENT)
    answered = requests.get(server.url + path, params=query, headers=headers, timeout=10)
    assert answered.status_code == 200, answered.text[:300]
    assert "X-Sandbox-Hint" not in answered.headers

    refused = requests.get(server.url + path, params={**query, "nomNaissance": "Fictif☃3", "sexeEtatCivil": "Femme"},
                           headers=headers, timeout=10)
    assert refused.status_code == 422
    hint = json.loads(refused.headers["X-Sandbox-Hint"])
    assert _by_code(hint, "00420")["parameters"] == {"nomNaissance": "Fictif☃3"}
    assert _by_code(hint, "00427")["parameters"] == {"sexeEtatCivil": "Femme"}
    assert [e["code"] for e in refused.json()["errors"]] == [item["code"] for item in hint["refused"]]

    v2 = requests.get(server.url + "/api/v2/etudiants", params={"ine": "é" * 20}, headers={"X-Api-Key": token},
                      timeout=10)
    assert v2.status_code == 400 and v2.json()["error"] == "bad_request"
    assert json.loads(v2.headers["X-Sandbox-Hint"])["refused"][0]["parameters"] == {"ine": "é" * 20}
