"""Request validation against the spec, in each version's own error format."""
from __future__ import annotations

import pytest

from .conftest import RECIPIENT, token_for, v2_headers, v3_headers

V3_FT = "/v3/france_travail/statut/identifiant"


@pytest.fixture
def api(client):
    token = token_for()

    class Api:
        def v2(self, path, query=None, **kw):
            return client.get(path, query_string=query, headers=v2_headers(token), **kw)

        def v3(self, path, query=None, **kw):
            return client.get(path, query_string=query, headers=v3_headers(token), **kw)
    return Api()


def _v2_bad_request(response, parameter):
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "reason", "message"}
    assert body["error"] == "bad_request"
    assert parameter in body["reason"]


def _v3_unprocessable(response, parameter, code):
    assert response.status_code == 422, response.get_data(as_text=True)
    (error,) = response.get_json()["errors"]
    assert set(error) == {"code", "title", "detail", "source", "meta"}
    assert error["code"] == code
    assert error["source"] == {"parameter": parameter}


def test_missing_required_parameter(api):
    _v2_bad_request(api.v2("/api/v2/composition-familiale", {"numeroAllocataire": "0000354"}), "codePostal")
    _v3_unprocessable(api.v3(V3_FT, {"recipient": RECIPIENT}), "identifiant", "00380")


def test_pattern(api):
    _v2_bad_request(api.v2("/api/v2/composition-familiale", {"numeroAllocataire": "12345678", "codePostal": "75001"}),
                    "numeroAllocataire")
    _v3_unprocessable(api.v3("/v3/mesri/statut_etudiant/ine", {"recipient": RECIPIENT, "ine": "short"}),
                      "ine", "00360")


def test_wrong_type(api):
    query = {"nomNaissance": "DURAND", "prenoms[]": "ANNE", "anneeDateDeNaissance": "mil-neuf-cent"}
    _v2_bad_request(api.v2("/api/v2/allocation-adulte-handicape", query), "anneeDateDeNaissance")
    query = {"recipient": RECIPIENT, "nomNaissance": "DURAND", "prenoms[]": "ANNE", "anneeDateNaissance": "19x0",
             "moisDateNaissance": "1", "jourDateNaissance": "1", "sexeEtatCivil": "F"}
    _v3_unprocessable(api.v3("/v3/cnous/etudiant_boursier/identite", query), "anneeDateNaissance", "00422")


def test_enum(api):
    query = {"nomNaissance": "DURAND", "prenoms[]": "ANNE", "sexe": "X"}
    _v2_bad_request(api.v2("/api/v2/allocation-adulte-handicape", query), "sexe")
    query = {"recipient": RECIPIENT, "nomNaissance": "DURAND", "prenoms[]": "ANNE", "anneeDateNaissance": "1990",
             "moisDateNaissance": "1", "jourDateNaissance": "1", "sexeEtatCivil": "X"}
    _v3_unprocessable(api.v3("/v3/cnous/etudiant_boursier/identite", query), "sexeEtatCivil", "00427")


def test_length_and_array_size(api):
    query = {"nomNaissance": "DURAND", "prenoms[]": "ANNE", "codePaysLieuDeNaissance": "991000"}
    _v2_bad_request(api.v2("/api/v2/allocation-adulte-handicape", query), "codePaysLieuDeNaissance")
    query = [("recipient", RECIPIENT), ("nomNaissance", "DURAND"), ("anneeDateNaissance", "1990"),
             ("moisDateNaissance", "1"), ("jourDateNaissance", "1"), ("sexeEtatCivil", "F")]
    query += [("prenoms[]", p) for p in ("A", "B", "C", "D")]  # at most 3 first names
    _v3_unprocessable(api.v3("/v3/cnous/etudiant_boursier/identite", query), "prenoms[]", "00421")


def test_ine_and_civil_status_are_exclusive(api):
    _v2_bad_request(api.v2("/api/v2/etudiants", {"ine": "1234567890A", "nom": "DURAND"}), "ine")
    _v2_bad_request(api.v2("/api/v2/etudiants-boursiers", {"ine": "1234567890A", "prenoms": "ANNE"}), "ine")


@pytest.mark.parametrize("recipient,code", [(None, "00203"), ("", "00203"), ("1300252650001", "00210"),
                                            ("13002526500014", "00210"), ("abcdefghijklmn", "00210")])
def test_v3_recipient_must_be_a_siret(api, recipient, code):
    query = {"identifiant": "default"} | ({} if recipient is None else {"recipient": recipient})
    _v3_unprocessable(api.v3(V3_FT, query), "recipient", code)


def test_v3_recipient_valid_siret_passes(api):
    response = api.v3(V3_FT, {"identifiant": "nobody-here", "recipient": RECIPIENT})
    assert response.status_code == 404  # validation passed: the fixture lookup answered


def test_unknown_route_is_404_in_the_routes_format(api):
    response = api.v2("/api/v2/nothing-here")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    response = api.v3("/v3/nothing/here/identite")
    assert response.status_code == 404 and "errors" in response.get_json()


def test_wrong_method_is_405_with_allow(client):
    response = client.post("/api/v2/composition-familiale", headers=v2_headers(token_for()))
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.get_json()["error"] == "method_not_allowed"
    response = client.delete(V3_FT)
    assert response.status_code == 405 and "GET" in response.headers["Allow"]
    assert "errors" in response.get_json()


def test_removed_dgfip_route_answers_410(api):
    response = api.v2("/api/v2/avis-imposition", {"numeroFiscal": "1234567890123", "referenceAvis": "1234567890123"})
    assert response.status_code == 410
    assert response.get_json()["error"] == "gone"


def test_upstream_spec_quirk_either_scheme_is_enough(make_app):
    """The published v2 spec lists X-Api-Key and the FranceConnect bearer in ONE requirement;
    production (and the sandbox) accept either one."""
    from .conftest import require_reference
    reference = require_reference()
    app = make_app(specs=(reference / "openapi" / "api-particulier-v2.yaml",
                          reference / "openapi" / "api-particulier-v3.yaml"),
                   fixtures=(reference / "staging-payloads",))
    client = app.test_client()
    query = {"nomUsage": "DUPONT", "nomNaissance": "MARTIN", "prenoms[]": ["PIERRE", "RICHARD"],
             "anneeDateDeNaissance": "1987", "moisDateDeNaissance": "12", "jourDateDeNaissance": "1",
             "codeInseeLieuDeNaissance": "08480", "codePaysLieuDeNaissance": "99100", "sexe": "M"}
    by_key = client.get("/api/v2/allocation-adulte-handicape", query_string=query, headers=v2_headers(token_for()))
    assert by_key.status_code == 200 and by_key.get_json()["status"] == "beneficiaire"
    by_france_connect = client.get("/api/v2/allocation-adulte-handicape", query_string={"recipient": RECIPIENT},
                                   headers={"Authorization": "Bearer all_fc"})
    assert by_france_connect.status_code == 200
    assert by_france_connect.headers["X-Sandbox-Case"].endswith("fake_france_connect_cnaf_2.yml")
    # the official `cnaf_css` FranceConnect token was consented for the C2S only
    no_consent = client.get("/api/v2/allocation-adulte-handicape", query_string={"recipient": RECIPIENT},
                            headers={"Authorization": "Bearer cnaf_css"})
    assert no_consent.status_code == 401 and no_consent.get_json()["error"] == "access_denied"
