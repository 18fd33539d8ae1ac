"""Scope masking as production does it: one route of each provider, v2 and v3, fetched with
all scopes and with each single scope, checking exactly which fields remain."""
from __future__ import annotations

import pytest

from sandbox import Settings, create_app

from sandbox.production import clock

from .conftest import RECIPIENT, SECRET, token_for, v2_headers, v3_headers


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The bundled population; the retired CAF v1 route kept (SANDBOX_SERVE_RETIRED) so that its
    masking is checked for the teams still migrating."""
    return create_app(Settings(token_secret=SECRET, data_dir=tmp_path_factory.mktemp("scopes"),
                               reload_interval=0, ip_rate_limit="off", serve_retired=True))


def _payload(case):
    """What the case answers today (its relative dates resolved)."""
    return case.payload_on(clock.today())

# route -> {scope: the top-level fields (under `data` on v3) that this scope alone leaves}
EXPECTED = {
    "api_particulier_v2_cnaf_quotient_familial": {
        "cnaf_quotient_familial": {"quotientFamilial", "mois", "annee"}, "cnaf_allocataires": {"allocataires"},
        "cnaf_enfants": {"enfants"}, "cnaf_adresse": {"adresse"}},
    "api_particulier_v2_cnav_revenu_solidarite_active": {
        "revenu_solidarite_active": {"status", "dateDebut", "dateFin"}, "revenu_solidarite_active_majoration": {"majoration"}},
    "api_particulier_v2_cnous_student_scholarship": {
        "cnous_statut_boursier": {"boursier"}, "cnous_echelon_bourse": {"echelonBourse"}, "cnous_email": {"email"},
        "cnous_periode_versement": {"dateDeRentree", "dureeVersement"}, "cnous_statut_bourse": {"statut", "statutLibelle"},
        "cnous_ville_etudes": {"villeEtudes", "etablissement"},
        "cnous_identite": {"nom", "prenom", "prenom2", "dateNaissance", "lieuNaissance", "sexe"}},
    "api_particulier_v2_pole_emploi_statut": {
        "pole_emploi_identite": {"identifiant", "civilite", "nom", "nomUsage", "prenom", "sexe", "dateNaissance"},
        "pole_emploi_adresse": {"adresse"}, "pole_emploi_contact": {"email", "telephone", "telephone2"},
        "pole_emploi_inscription": {"dateInscription", "dateCessationInscription", "codeCategorieInscription",
                                    "libelleCategorieInscription", "codeCertificationCNAV"}},
    "api_particulier_v3_cnav_quotient_familial_with_civility": {
        "cnaf_quotient_familial": {"quotient_familial"}, "cnaf_allocataires": {"allocataires"},
        "cnaf_enfants": {"enfants"}, "cnaf_adresse": {"adresse"}},
    "api_particulier_v3_france_travail_statut_with_identifiant": {
        "pole_emploi_identifiant": {"identifiant"}, "pole_emploi_identite": {"identite"},
        "pole_emploi_adresse": {"adresse"}, "pole_emploi_contact": {"contact"}, "pole_emploi_inscription": {"inscription"}},
    "api_particulier_v3_cnous_etudiant_boursier_with_ine": {
        "cnous_statut_boursier": {"est_boursier"}, "cnous_echelon_bourse": {"echelon_bourse"}, "cnous_email": {"email"},
        "cnous_periode_versement": {"periode_versement_bourse"}, "cnous_statut_bourse": set(),
        "cnous_ville_etudes": {"etablissement_etudes"}, "cnous_identite": {"identite"}},
    "api_particulier_v3_mesri_statut_etudiant_with_ine": {
        # a mesri_admission_* detail without mesri_admissions reveals nothing (production's serializer)
        "mesri_identite": {"identite"}, "mesri_admissions": {"admissions"}, "mesri_admission_inscrit": set(),
        "mesri_admission_regime_formation": set(), "mesri_admission_commune_etudes": set(),
        "mesri_admission_etablissement_etudes": set()},
    "api_particulier_v5_men_scolarites_with_civility": {
        "men_statut_identite": {"identite"}, "men_statut_scolarite": {"annee_scolaire", "est_scolarise", "statut_eleve"},
        "men_statut_etablissement": {"etablissement"}, "men_statut_module_elementaire_formation": {"module_elementaire_formation"},
        "men_statut_boursier": {"est_boursier"}, "men_echelon_bourse": {"echelon_bourse"},
        "men_regime_pensionnat": {"regime_pensionnat"}},
    "api_particulier_v3_dsnj_service_national_with_civility": {
        "dsnj_statut_service_national": {"statut_service_national", "commentaires"}},
    "api_particulier_v3_sdh_statut_sportif_with_identifiant": {
        "sdh_statut_sportif_identite": {"identite"}, "sdh_statut_sportif_est_sportif_de_haut_niveau": {"est_sportif_de_haut_niveau"},
        "sdh_statut_sportif_a_ete_sportif_de_haut_niveau": {"a_ete_sportif_de_haut_niveau"},
        "sdh_statut_sportif_informations_statut": {"informations_statut"},
        "sdh_statut_sportif_informations_statuts_precedents": {"informations_statuts_precedents"}},
}
# inside MESRI v3 admissions, each scope (held with mesri_admissions) adds its own fields
MESRI_ADMISSION_FIELDS = {
    "mesri_admissions": {"date_debut", "date_fin"}, "mesri_admission_inscrit": {"est_inscrit"},
    "mesri_admission_regime_formation": {"regime_formation"}, "mesri_admission_commune_etudes": {"code_cog_insee_commune"},
    "mesri_admission_etablissement_etudes": {"etablissement_etudes"}}


def _richest_case(app, operation_id):
    cases = [c for c in app.extensions["sandbox"].population.current.ordered[operation_id] if c.status == 200]
    root = (lambda p: p.get("data", {})) if "_v2_" not in operation_id else (lambda p: p)
    return max(cases, key=lambda c: (len(root(c.payload)), len(str(c.payload))))


def _call(client, app, operation_id, case, token):
    op = app.extensions["sandbox"].operations[operation_id]
    query = []
    for name, value in case.params.items():
        spec_name = next((p.name for p in op.params if p.key == name.removesuffix("[]")), name)
        query += [(spec_name, str(v)) for v in (value if isinstance(value, list) else [value])]
    if op.v3:
        query.append(("recipient", RECIPIENT))
    headers = v3_headers(token) if op.v3 else v2_headers(token)
    return client.get(op.path, query_string=query, headers=headers)


def _visible(body, v3):
    return set((body["data"] if v3 else body).keys())


@pytest.mark.parametrize("operation_id", sorted(EXPECTED))
def test_each_single_scope_leaves_exactly_its_fields(app, client, operation_id):
    v3 = "_v2_" not in operation_id
    case = _richest_case(app, operation_id)
    full = _call(client, app, operation_id, case, token_for(sorted(EXPECTED[operation_id])))
    assert full.status_code == 200 and full.get_json() == _payload(case)  # all scopes: nothing removed
    for scope, fields in EXPECTED[operation_id].items():
        response = _call(client, app, operation_id, case, token_for([scope]))
        assert response.status_code == 200, (scope, response.get_data(as_text=True))
        visible = _visible(response.get_json(), v3)
        assert visible == fields & _visible(_payload(case), v3), (scope, visible)
        if v3:
            assert set(response.get_json()) == set(_payload(case))  # links/meta are not data: kept


def test_v3_nested_masks_inside_lists(app, client):
    operation_id = "api_particulier_v3_mesri_statut_etudiant_with_ine"
    case = _richest_case(app, operation_id)
    for scope, fields in MESRI_ADMISSION_FIELDS.items():
        body = _call(client, app, operation_id, case, token_for(sorted({"mesri_admissions", scope}))).get_json()
        for admission in body["data"]["admissions"]:
            assert set(admission) == fields | MESRI_ADMISSION_FIELDS["mesri_admissions"], (scope, admission)


def test_token_without_any_scope_of_the_route_is_refused(app, client):
    operation_id = "api_particulier_v3_cnav_quotient_familial_with_civility"
    case = _richest_case(app, operation_id)
    response = _call(client, app, operation_id, case, token_for(["pole_emploi_paiements"]))
    assert response.status_code == 403 and response.get_json()["errors"][0]["code"] == "00100"
    operation_id = "api_particulier_v2_cnaf_quotient_familial"
    response = _call(client, app, operation_id, _richest_case(app, operation_id), token_for(["pole_emploi_paiements"]))
    assert response.status_code == 401 and response.get_json()["error"] == "access_denied"


def test_mesri_v2_inscriptions_are_filtered_by_scope(app, client):
    operation_id = "api_particulier_v2_mesri_student_status"
    cases = app.extensions["sandbox"].population.current.ordered[operation_id]
    both = next(c for c in cases if c.status == 200 and
                {i["statut"] for i in c.payload.get("inscriptions", [])} >= {"admis", "inscrit"})
    only_admission = _call(client, app, operation_id, both, token_for(["mesri_admission", "mesri_identite"]))
    # production keeps an inscription no held scope admits as an empty object
    assert {i.get("statut") for i in only_admission.get_json()["inscriptions"]} == {"admis", None}
    assert all("etablissement" not in i for i in only_admission.get_json()["inscriptions"])
    with_places = _call(client, app, operation_id, both, token_for(["mesri_admission", "mesri_etablissements"]))
    # the establishment goes only with an inscription a held scope admitted
    assert all(("etablissement" in i) is (i.get("statut") == "admis") for i in with_places.get_json()["inscriptions"])
    admitted_only = next(c for c in cases if c.status == 200 and c.payload.get("inscriptions") and
                         {i["statut"] for i in c.payload["inscriptions"]} == {"admis"})
    nothing_left = _call(client, app, operation_id, admitted_only, token_for(["mesri_inscription_etudiant"]))
    # siade/app/serializers/api_particulier/mesri/student_status/v2.rb: a 200 with empty objects, not a 404
    assert nothing_left.status_code == 200
    assert nothing_left.get_json()["inscriptions"] == [{} for _ in admitted_only.payload["inscriptions"]]


def test_men_v2_grant_level_needs_both_scopes(app, client):
    operation_id = "api_particulier_v2_men_scolarites"
    cases = app.extensions["sandbox"].population.current.ordered[operation_id]
    case = next(c for c in cases if c.status == 200 and c.payload.get("niveau_bourse") is not None)
    for scopes, shown in ((["men_statut_boursier"], False), (["men_echelon_bourse", "men_statut_scolarite"], False),
                          (["men_statut_boursier", "men_echelon_bourse"], True)):
        body = _call(client, app, operation_id, case, token_for(scopes)).get_json()
        assert ("niveau_bourse" in body) is shown, (scopes, body)


def test_france_connect_token_scopes_are_the_mask(app, client):
    """A FranceConnect call is masked by what the person consented to (the token's scope)."""
    fixtures = app.extensions["sandbox"].population.current
    partial = next(t for t, who in fixtures.france_connect.items()
                   if "cnous_statut_boursier" in who.get("scope", "") and "cnous_email" not in who.get("scope", ""))
    response = client.get(f"/v3/cnous/etudiant_boursier/france_connect?recipient={RECIPIENT}",
                          headers=v3_headers(partial))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "email" not in response.get_json()["data"]


def test_scope_catalogue_lists_meanings(client):
    scopes = client.get("/sandbox/scopes").get_json()["scopes"]
    by_name = {s["name"]: s for s in scopes}
    assert by_name["cnaf_enfants"]["description"]
    assert "api_particulier_v2_cnaf_quotient_familial" in by_name["cnaf_enfants"]["operations"]
