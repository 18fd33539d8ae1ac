"""Parameter validation as production's code does it (sandbox/production/validation_rules.py).

Each test names, in its docstring, the production file it mirrors (path under siade/ of
datagouv/apistration); the examples come from production's own specs of those files
(siade/spec/interactors/..., siade/spec/controllers/api_particulier/...).
"""
from __future__ import annotations

import datetime

import pytest

from sandbox.production import clock

from ..conftest import RECIPIENT, token_for, v2_headers, v3_headers

QF = "/v3/dss/quotient_familial/identite"
AAH_V2 = "/api/v2/allocation-adulte-handicape"
MESRI = "/v3/mesri/statut_etudiant/identite"
CNAV_OK = {"recipient": RECIPIENT, "nomNaissance": "DUPONT", "prenoms[]": ["MARIE", "CLAIRE"],
           "anneeDateNaissance": "1990", "moisDateNaissance": "03", "jourDateNaissance": "15",
           "sexeEtatCivil": "F", "codeCogInseePaysNaissance": "99123", "codeCogInseeCommuneNaissance": "75056"}
CIVIL_OK = {"recipient": RECIPIENT, "nomNaissance": "ELDENRING", "prenoms[]": ["Loic", "Samuel", "Thomas"],
            "anneeDateNaissance": "1980", "moisDateNaissance": "8", "jourDateNaissance": "16", "sexeEtatCivil": "F"}


@pytest.fixture(autouse=True)
def frozen_day(monkeypatch):
    monkeypatch.setattr(clock, "today", lambda: datetime.date(2026, 4, 28))


@pytest.fixture
def call(client):
    token = token_for()

    def get(path, query, v2=False, headers=None):
        base = v2_headers(token) if v2 else v3_headers(token)
        return client.get(path, query_string=query, headers={**base, **(headers or {})})
    return get


def codes(response):
    assert response.status_code == 422, response.get_data(as_text=True)
    return [e["code"] for e in response.get_json()["errors"]]


def passes(response):
    """Validation passed: the fixtures answered (a case, or production's 404)."""
    assert response.status_code in (200, 404), response.get_data(as_text=True)


def test_cnav_controller_spec_examples(call):
    """spec/controllers/api_particulier/v3_and_more/cnav/abstract_civility_controller_spec.rb:
    valid without transcogage, valid with transcogage, 422 without the birth departement."""
    passes(call(QF, CNAV_OK))
    transcogage = {k: v for k, v in CNAV_OK.items() if k != "codeCogInseeCommuneNaissance"}
    transcogage |= {"codeCogInseePaysNaissance": "99100", "nomCommuneNaissance": "LYON",
                    "codeCogInseeDepartementNaissance": "69", "anneeDateNaissance": "1985"}
    passes(call(QF, transcogage))
    assert codes(call(QF, {k: v for k, v in transcogage.items() if k != "codeCogInseeDepartementNaissance"})) == ["00365"]


@pytest.mark.parametrize("nom,ok", [("ELDENRING", True), ("", False), (None, False), ("Elden Ring (2022)", False),
                                    ("Elden Ring [2022]", False), ("Elden Ring / 2022", False), ("D4RAND", False),
                                    ("D'ARC-LÉON", True)])
def test_birth_name(call, nom, ok):
    """app/interactors/civility/validate_nom_naissance.rb (spec/interactors/civility/validate_nom_naissance_spec.rb):
    present, letters (accented), apostrophe, space and hyphen only; 00420."""
    query = CIVIL_OK | {"nomNaissance": nom}
    if nom is None:
        del query["nomNaissance"]
    response = call(MESRI, query)
    if ok:
        passes(response)
    else:
        assert codes(response) == ["00420"]


@pytest.mark.parametrize("pays,ok", [("99345", True), ("90345", False), ("92352", True), ("12345", False),
                                     ("123456", False), ("1234", False), ("9953A", False), (None, False)])
def test_birth_country(call, pays, ok):
    """app/interactors/civility/validate_code_cog_insee_pays_naissance.rb (its spec's examples):
    5 digits starting with 99, or French Algeria 92352; required; 00400."""
    query = CNAV_OK | {"codeCogInseePaysNaissance": pays}
    if pays is None:
        del query["codeCogInseePaysNaissance"]
    response = call(QF, query)
    if ok:
        passes(response)
    else:
        assert "00400" in codes(response)


@pytest.mark.parametrize("commune,ok", [("12345", True), ("123456", False), ("1234", False), ("9953A", False),
                                        ("2A004", True), (None, True)])
def test_birth_commune_format(call, commune, ok):
    """app/interactors/civility/validate_code_cog_insee_commune_naissance.rb (its spec's examples): optional, 00365."""
    query = CIVIL_OK | {"codeCogInseeCommuneNaissance": commune}
    if commune is None:
        del query["codeCogInseeCommuneNaissance"]
    response = call(MESRI, query)
    if ok:
        passes(response)
    else:
        assert codes(response) == ["00365"]


def test_birth_commune_required_when_born_in_france(call):
    """app/interactors/cnav/validate_code_cog_insee_commune_naissance_or_transcogage_params.rb:
    born in France (99100) without a commune code nor the transcogage triple: 00365."""
    query = {k: v for k, v in CNAV_OK.items() if k != "codeCogInseeCommuneNaissance"} | {"codeCogInseePaysNaissance": "99100"}
    assert codes(call(QF, query)) == ["00365"]
    abroad = {k: v for k, v in CNAV_OK.items() if k != "codeCogInseeCommuneNaissance"}
    passes(call(QF, abroad))


def test_a_failing_birthplace_check_drops_the_errors_found_before_it(call):
    """cnav/validate_code_cog_insee_commune_naissance_or_transcogage_params.rb replaces the errors
    gathered so far (context.errors = validator.errors): a bad sexe is not reported with it."""
    query = CNAV_OK | {"sexeEtatCivil": "X", "codeCogInseeCommuneNaissance": "1234"}
    assert codes(call(QF, query)) == ["00365"]


@pytest.mark.parametrize("annee,mois,jour,code", [(None, "8", "16", "00422"), ("1980", None, "16", "00423"),
                                                  ("1980", "8", None, "00424"), ("-1980", "8", "16", "00422"),
                                                  ("1980", "13", "16", "00423"), ("1980", "8", "32", "00424"),
                                                  ("1981", "2", "29", "00425"), ("1980", "2", "29", None)])
def test_birth_date(call, annee, mois, jour, code):
    """app/interactors/civility/validate_date_naissance.rb (spec/interactors/civility/validate_date_naissance_spec.rb):
    year, month, day, then an impossible date (00422, 00423, 00424, 00425)."""
    query = CIVIL_OK | {"anneeDateNaissance": annee, "moisDateNaissance": mois, "jourDateNaissance": jour}
    query = {k: v for k, v in query.items() if v is not None}
    response = call(MESRI, query)
    if code is None:
        passes(response)
    else:
        assert codes(response) == [code]


@pytest.mark.parametrize("annee,mois,jour,ok", [("1899", "12", "31", False), ("1900", "1", "1", True),
                                                ("2026", "4", "27", True), ("2026", "4", "28", False),
                                                ("1990", "2", "30", False), (None, None, None, True)])
def test_cnav_birth_date_range(call, annee, mois, jour, ok):
    """app/interactors/cnav/validate_date_naissance.rb: optional, but a full date must be real and
    between 1900-01-01 and yesterday (Paris); 00363."""
    query = CNAV_OK | {"anneeDateNaissance": annee, "moisDateNaissance": mois, "jourDateNaissance": jour}
    response = call(QF, {k: v for k, v in query.items() if v is not None})
    if ok:
        passes(response)
    else:
        assert codes(response) == ["00363"]


@pytest.mark.parametrize("sexe,mesri_ok,cnav_ok", [("F", True, True), ("m", True, True), ("f", True, True),
                                                   ("X", False, False), (None, False, True)])
def test_sexe_letter_case(call, sexe, mesri_ok, cnav_ok):
    """app/interactors/civility/validate_sexe_etat_civil.rb (required) and cnav/validate_sexe_etat_civil.rb
    (optional): M or F in any case; 00427."""
    for path, base, ok in ((MESRI, CIVIL_OK, mesri_ok), (QF, CNAV_OK, cnav_ok)):
        query = base | {"sexeEtatCivil": sexe}
        response = call(path, {k: v for k, v in query.items() if v is not None})
        if ok:
            passes(response)
        else:
            assert codes(response) == ["00427"], path


@pytest.mark.parametrize("prenoms,civility_ok,cnav_ok", [
    ([("prenoms[]", "MARIE")], True, True), ([("prenoms", "MARIE")], False, False), ([], False, True),
    ([("prenoms[]", "MAR1E")], True, False)])
def test_prenoms(call, prenoms, civility_ok, cnav_ok):
    """app/interactors/concerns/validate_prenoms_format.rb, civility/validate_prenoms.rb (00421) and
    cnav/validate_prenoms.rb (optional, letters only, 00367): `prenoms` without [] is no list."""
    for path, base, ok, code in ((MESRI, CIVIL_OK, civility_ok, "00421"), (QF, CNAV_OK, cnav_ok, "00367")):
        query = [(k, v) for k, v in base.items() if k != "prenoms[]"] + prenoms
        response = call(path, query)
        if ok:
            passes(response)
        else:
            assert codes(response) == [code], path


@pytest.mark.parametrize("annee,mois,expected", [("2026", "4", []), ("2024", "1", []), ("2023", "12", ["00356"]),
                                                 ("2027", None, ["00356"]), ("26", None, ["00356"]),
                                                 ("2026", "5", ["00354"]), ("2025", "13", ["00354"]),
                                                 ("2026", "13", ["00354", "00354"]), (None, "0", ["00354"])])
def test_quotient_familial_year_and_month(call, annee, mois, expected):
    """app/interactors/cnav/quotient_familial_v2/validate_year.rb (N, N-1 or N-2: 00356) and
    validate_month.rb (1-12 and not to come: 00354, twice for a month both over 12 and to come)."""
    query = CNAV_OK | {"annee": annee, "mois": mois}
    response = call(QF, {k: v for k, v in query.items() if v is not None})
    if expected:
        assert codes(response) == expected
    else:
        passes(response)


def test_every_invalid_parameter_at_once_on_v3_and_the_first_on_v2(call):
    """app/organizers/validate_params_organizer.rb (wait_to_fail: all errors) and
    app/controllers/api_particulier/v2/base_controller.rb (render_errors: errors.first)."""
    query = CIVIL_OK | {"nomNaissance": "D4RAND", "sexeEtatCivil": "X", "moisDateNaissance": "13"}
    assert codes(call(MESRI, query)) == ["00420", "00423", "00427"]
    v2 = {"nom": "D4RAND", "prenom": "ANNE", "dateDeNaissance": "1990-13-01", "sexe": "X"}
    response = call("/api/v2/etudiants", v2, v2=True)
    assert response.status_code == 400
    assert response.get_json() == {"error": "bad_request", "reason": "Le nom de naissance est manquant",
                                   "message": "Le nom de naissance est manquant"}


@pytest.mark.parametrize("ine,ok", [("123456789AB", True), ("1234567890A", True), ("ABCDEFGHIJ1", True),
                                    ("1234A12345B", True), ("1234567890a", True), ("123456789AI", False),
                                    ("1234567890I", False), ("short", False), ("", False)])
def test_ine_formats(call, ine, ok):
    """app/interactors/service_user/validate_ine.rb: RNIE, BEA, base 36 or SIFA, any letter case; 00360."""
    response = call("/v3/mesri/statut_etudiant/ine", {"recipient": RECIPIENT, "ine": ine})
    if ok:
        passes(response)
    else:
        assert codes(response) == ["00360"]


@pytest.mark.parametrize("recipient,ok", [("13002526500013", True), ("35600000012345", True),
                                          ("35600000000048", True), ("13002526500014", False)])
def test_siret_la_poste_accepted_whatever_its_key(call, recipient, ok):
    """app/validators/siret_format_validator.rb: Luhn key, or any La Poste SIRET (356000000 + 5 digits); 00210."""
    response = call("/v3/france_travail/statut/identifiant", {"identifiant": "default", "recipient": recipient})
    if ok:
        passes(response)
    else:
        assert codes(response) == ["00210"]


@pytest.mark.parametrize("query,status", [({}, 200), ({"recipient": ""}, 200), ({"recipient": RECIPIENT}, 200),
                                          ({"recipient": "invalid"}, 400)])
def test_v2_recipient_checked_when_present(call, query, status):
    """spec/controllers/api_particulier/v2/base_controller_recipient_spec.rb (v2/base_controller.rb):
    optional on v2, but a present recipient must be a SIRET (400 bad_request)."""
    response = call("/api/v2/situations-pole-emploi", {"identifiant": "default"} | query, v2=True)
    assert response.status_code == status, response.get_data(as_text=True)
    if status == 400:
        assert response.get_json()["reason"] == "Le paramètre recipient n'est pas un siret valide"


def test_v3_missing_recipient_is_00210(call):
    """app/controllers/concerns/recipient_management.rb: production's v3 answers a missing recipient
    with 00210 (00203 belongs to API Entreprise's mandatory parameters)."""
    assert codes(call("/v3/france_travail/statut/identifiant", {"identifiant": "default"})) == ["00210"]


@pytest.mark.parametrize("request_id,ok", [("0c7b6f3e-2a1d-4c55-9a8e-4f2b1c3d5e6f", True), (None, True),
                                           ("my-trace-42", False)])
def test_cnav_request_id_must_be_a_uuid(call, request_id, ok):
    """app/interactors/cnav/validate_request_id.rb: CNAV sends Rails' request id (the client's
    X-Request-Id when given) to the provider, and refuses one that is not a UUID; 00401."""
    headers = {"X-Request-Id": request_id} if request_id else {}
    response = call(QF, CNAV_OK, headers=headers)
    if ok:
        passes(response)
    else:
        assert codes(response) == ["00401"]


@pytest.mark.parametrize("campaign,ok", [("2021", True), ("2025", True), ("2026", False), ("2020", False),
                                         ("25", False)])
def test_cnous_campaign_year(call, campaign, ok):
    """app/interactors/cnous/validate_campaign_year.rb: 4 digits from 2021 to last year; 00368."""
    response = call("/v4/cnous/etudiant_boursier/ine", {"recipient": RECIPIENT, "ine": "1234567890A",
                                                         "campaignYear": campaign})
    if ok:
        passes(response)
    else:
        assert codes(response) == ["00368"]


@pytest.mark.parametrize("identifiant,ok", [("12345", True), ("12a45", False), ("", False)])
def test_sdh_identifiant_digits_only(call, identifiant, ok):
    """app/interactors/sdh/validate_identifiant.rb: present and digits only; 00380."""
    response = call("/v3/sdh/statut_sportif/identifiant", {"recipient": RECIPIENT, "identifiant": identifiant})
    if ok:
        passes(response)
    else:
        assert codes(response) == ["00380"]


@pytest.mark.parametrize("extra,expected", [({"codeEtablissement": "0751234A"}, []),
                                            ({"codeEtablissement": "075123"}, ["00410"]), ({}, ["00410"]),
                                            ({"degreEtablissement": "2D", "codesBcnRegions[]": "11"}, []),
                                            ({"degreEtablissement": "3D", "codesBcnRegions[]": "11"}, ["00412"]),
                                            ({"degreEtablissement": "2D", "codesBcnRegions[]": "99"}, ["00417"]),
                                            ({"codeEtablissement": "0751234A", "codesBcnRegions[]": "11"}, ["00419"])])
def test_men_search_perimeter(call, extra, expected):
    """app/interactors/men/scolarites/validate_search_params.rb, validate_code_etablissement.rb,
    validate_degre_etablissement.rb, validate_perimetre.rb."""
    query = CIVIL_OK | {"anneeScolaire": "2025"} | extra
    response = call("/v3/men/scolarites/identite", query)
    if expected:
        assert codes(response) == expected
    else:
        passes(response)


def test_dsnj_age_outside_service_national(call):
    """app/interactors/dsnj/service_national/validate_date_naissance.rb: 16 to 25 years old, else 39400."""
    query = CIVIL_OK | {"codeCogInseePaysNaissance": "99100", "sexeEtatCivil": "M"}
    response = call("/v3/dsnj/service_national/identite", query)
    body = response.get_json()
    assert response.status_code == 422 and body["errors"][0]["code"] == "39400"
    assert body["errors"][0]["meta"] == {"provider": "DSNJ"}
    passes(call("/v3/dsnj/service_national/identite", query | {"anneeDateNaissance": "2005"}))


def test_parameter_errors_carry_productions_texts_and_no_source(call):
    """siade/config/errors.yml: 00420 has a title and detail, and no source."""
    error = call(MESRI, CIVIL_OK | {"nomNaissance": ""}).get_json()["errors"][0]
    assert error == {"code": "00420", "title": "Entité non traitable", "detail": "Le nom de naissance est manquant",
                     "meta": {}}


@pytest.mark.parametrize("birthdate, given_name, codes", [
    ("2005-09-03", "jean-baptiste élie", None),   # 20 on 2026-04-28; lower case: the controller capitalises
    ("2010-04-28", "Zoé", None),                  # 16 that day
    ("2010-04-29", "Zoé", ["39400"]),             # 16 the day after
    ("1990-04-12", "Camille Marie", ["39400"]),
    ("2005-09-03", "Jean 2", ["00421"]),          # DSNJ's own first-name characters
])
def test_dsnj_france_connect_judges_the_identity(birthdate, given_name, codes):
    """controllers/api_particulier/v3_and_more/dsnj/service_national_with_france_connect_controller.rb: the
    organizer of the civil-status route (organizers/dsnj/service_national/validate_params.rb) runs on the
    civil status the FranceConnect identity gives (concerns/api_particulier/france_connectable.rb)."""
    from werkzeug.datastructures import Headers, MultiDict

    from sandbox.population.lookup import france_connect_civility
    from sandbox.production import validation_rules
    from sandbox.production.errors import ParameterErrors

    identity = {"given_name": given_name, "family_name": "essai", "birthdate": birthdate, "gender": "male",
                "birthplace": "69383", "birthcountry": "99100"}
    operation = "api_particulier_v3_dsnj_service_national_with_france_connect"
    args, headers = MultiDict({"recipient": RECIPIENT}), Headers({"Authorization": "Bearer fc"})
    # a query checked alone (no identity known) has nothing of the person to judge
    assert validation_rules.check(operation, True, args, headers, True)
    if codes is None:
        assert validation_rules.check(operation, True, args, headers, True, france_connect_civility(identity))
    else:
        with pytest.raises(ParameterErrors) as refused:
            validation_rules.check(operation, True, args, headers, True, france_connect_civility(identity))
        assert [e["code"] for e in refused.value.items] == codes
