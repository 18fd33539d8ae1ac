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


def _v2_bad_request(response, detail):
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "reason", "message"}
    assert body["error"] == "bad_request"
    assert detail in body["reason"]


def _v3_unprocessable(response, code, source=None):
    """Production sets `source` only where its catalogue names one (siade/config/errors.yml)."""
    assert response.status_code == 422, response.get_data(as_text=True)
    (error,) = response.get_json()["errors"]
    assert set(error) == {"code", "title", "detail", "meta"} | ({"source"} if source else set())
    assert error["code"] == code
    assert error.get("source") == source


# Production's code, not the spec, decides (siade/app/organizers, app/interactors): these
# tests were rewritten for issue 16; tests/production/ holds one test per production rule.
CNAV_V2 = {"nomNaissance": "DURAND", "prenoms[]": "ANNE", "anneeDateDeNaissance": "1990",
           "moisDateDeNaissance": "1", "jourDateDeNaissance": "1", "codePaysLieuDeNaissance": "99100",
           "codeInseeLieuDeNaissance": "75056", "sexe": "F"}
CNOUS_V3 = {"recipient": RECIPIENT, "nomNaissance": "DURAND", "prenoms[]": "ANNE", "anneeDateNaissance": "1990",
            "moisDateNaissance": "1", "jourDateNaissance": "1", "sexeEtatCivil": "F"}


def test_missing_required_parameter(api):
    _v2_bad_request(api.v2("/api/v2/situations-pole-emploi"), "L'identifiant est manquant")
    _v3_unprocessable(api.v3(V3_FT, {"recipient": RECIPIENT}), "00380")


def test_pattern(api):
    _v2_bad_request(api.v2("/api/v2/etudiants", {"ine": "short"}), "INE")
    _v3_unprocessable(api.v3("/v3/mesri/statut_etudiant/ine", {"recipient": RECIPIENT, "ine": "short"}), "00360")


def test_wrong_type(api):
    _v2_bad_request(api.v2("/api/v2/allocation-adulte-handicape", CNAV_V2 | {"anneeDateDeNaissance": "mil-neuf-cent"}),
                    "La date de naissance")
    _v3_unprocessable(api.v3("/v3/cnous/etudiant_boursier/identite", CNOUS_V3 | {"anneeDateNaissance": "x190"}),
                      "00422")


def test_enum(api):
    _v2_bad_request(api.v2("/api/v2/allocation-adulte-handicape", CNAV_V2 | {"sexe": "X"}), "sexe")
    _v3_unprocessable(api.v3("/v3/mesri/statut_etudiant/identite", CNOUS_V3 | {"sexeEtatCivil": "X"}), "00427")


def test_length_and_array_size(api):
    _v2_bad_request(api.v2("/api/v2/allocation-adulte-handicape", CNAV_V2 | {"codePaysLieuDeNaissance": "991000"}),
                    "code pays")
    # production sets no upper bound on the number of first names (the spec says 3)
    query = [(k, v) for k, v in CNOUS_V3.items() if k != "prenoms[]"] + [("prenoms[]", p) for p in "ABCD"]
    assert api.v3("/v3/cnous/etudiant_boursier/identite", query).status_code == 404


def test_ine_selects_the_ine_search_on_v2(api):
    """Production's v2 etudiants / etudiants-boursiers search by INE when one is given and
    ignore the civil status (controllers/api_particulier/v2/mesri/student_status_controller.rb)."""
    response = api.v2("/api/v2/etudiants", {"ine": "1234567890A", "nom": "D4RAND"})
    assert response.status_code != 400, response.get_data(as_text=True)
    _v2_bad_request(api.v2("/api/v2/etudiants-boursiers", {"ine": "12", "prenoms": "ANNE"}), "INE")


@pytest.mark.parametrize("recipient", [None, "", "1300252650001", "13002526500014", "abcdefghijklmn"])
def test_v3_recipient_must_be_a_siret(api, recipient):
    """A missing recipient is 00210 too (concerns/recipient_management.rb)."""
    query = {"identifiant": "default"} | ({} if recipient is None else {"recipient": recipient})
    _v3_unprocessable(api.v3(V3_FT, query), "00210", {"parameter": "recipient"})


def test_v3_recipient_valid_siret_passes(api):
    response = api.v3(V3_FT, {"identifiant": "nobody-here", "recipient": RECIPIENT})
    assert response.status_code == 404  # validation passed: the fixture lookup answered


NOT_FOUND_TEXT = "Cette URL n'existe pas sur Api particulier, veuillez vérifier votre URL."


def test_unknown_route_is_production_s_plain_text_404(api):
    """siade/app/controllers/errors_controller.rb: the catch-all route, before any token check."""
    for response in (api.v2("/api/v2/nothing-here"), api.v3("/v3/nothing/here/identite")):
        assert response.status_code == 404
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.get_data(as_text=True) == NOT_FOUND_TEXT


def test_a_wrong_method_is_an_unknown_route_as_in_production(client):
    """Production routes GET only; any other method falls to the catch-all 404 (no 405)."""
    for response in (client.post("/api/v2/situations-pole-emploi", headers=v2_headers(token_for())),
                     client.delete(V3_FT)):
        assert response.status_code == 404
        assert response.get_data(as_text=True) == NOT_FOUND_TEXT


def test_removed_dgfip_route_answers_410(api):
    """siade/config/routes/api_particulier.rb (svair_gone): plain text, before any token check."""
    response = api.v2("/api/v2/avis-imposition", {"numeroFiscal": "1234567890123", "referenceAvis": "1234567890123"})
    assert response.status_code == 410
    assert "8 janvier 2024" in response.get_data(as_text=True)


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
