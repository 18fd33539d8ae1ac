"""Masking as production's serializers do it (siade/app/serializers/api_particulier/).

The examples mirror production's serializer specs (siade/spec/serializers/api_particulier/): a
set of scopes -> the keys that must show and the keys that must not. Each runs on a bundled case
of the operation that carries every key of the example, through the sandbox's own mask
(sandbox/production/scopes.py, rules in sandbox/production/data/operations.yml).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sandbox.production.scopes import ScopeCatalogue

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CATALOGUE = ScopeCatalogue()
SPEC = "siade/spec/serializers/api_particulier/"
SER = "siade/app/serializers/api_particulier/"


def _has(payload, key):
    """`key` ('a' or 'a.b') present in `payload`."""
    for part in key.split("."):
        if not isinstance(payload, dict) or part not in payload:
            return False
        payload = payload[part]
    return True


def case_with(operation_id, keys, where=None, preferred=()):
    """The payload of a bundled 200 case of `operation_id` holding every key (and `where`), and
    as many of the `preferred` keys as one case has (a key the schema lacks is in none)."""
    root = "data" if not operation_id.startswith("api_particulier_v2_") else None
    found = []
    for path in sorted((FIXTURES / operation_id).glob("*.y*ml")):
        data = yaml.safe_load(path.read_text())
        if data.get("status") != 200:
            continue
        payload = data["payload"]
        body = payload[root] if root else payload
        if all(_has(body, k) for k in keys) and (where is None or where(body)):
            found.append((-sum(_has(body, k) for k in preferred), len(found), payload))
    assert found, f"no bundled 200 case of {operation_id} holds {keys}"
    return min(found)[2]


def masked(operation_id, scopes, keys, where=None, preferred=()):
    payload = case_with(operation_id, keys, where, preferred)
    out = CATALOGUE.get(operation_id).mask(payload, frozenset(scopes))
    return out["data"] if not operation_id.startswith("api_particulier_v2_") else out


CNOUS_V2 = ["cnous_identite", "cnous_email", "cnous_statut_boursier", "cnous_echelon_bourse", "cnous_statut_bourse",
            "cnous_periode_versement", "cnous_ville_etudes"]
CNOUS_V2_KEYS = {"cnous_identite": ["nom", "prenom", "prenom2", "dateNaissance", "lieuNaissance", "sexe"],
                 "cnous_email": ["email"], "cnous_statut_boursier": ["boursier"], "cnous_echelon_bourse": ["echelonBourse"],
                 "cnous_statut_bourse": ["statut", "statutLibelle"],
                 "cnous_periode_versement": ["dateDeRentree", "dureeVersement"],
                 "cnous_ville_etudes": ["villeEtudes", "etablissement"]}
CNOUS_V3_KEYS = {"cnous_identite": "identite", "cnous_email": "email", "cnous_statut_boursier": "est_boursier",
                 "cnous_echelon_bourse": "echelon_bourse", "cnous_periode_versement": "periode_versement_bourse",
                 "cnous_ville_etudes": "etablissement_etudes"}
FT_V2_KEYS = {"pole_emploi_identite": ["identifiant", "civilite", "nom", "nomUsage", "prenom", "sexe", "dateNaissance"],
              "pole_emploi_inscription": ["codeCertificationCNAV", "libelleCategorieInscription", "dateInscription",
                                          "dateCessationInscription", "codeCategorieInscription"],
              "pole_emploi_contact": ["email", "telephone", "telephone2"], "pole_emploi_adresse": ["adresse"]}
FT_V3_KEYS = {"pole_emploi_identifiant": "identifiant", "pole_emploi_identite": "identite",
              "pole_emploi_contact": "contact", "pole_emploi_inscription": "inscription", "pole_emploi_adresse": "adresse"}
MEN_V3_KEYS = {"men_statut_identite": "identite", "men_statut_scolarite": "est_scolarise",
               "men_statut_etablissement": "etablissement",
               "men_statut_module_elementaire_formation": "module_elementaire_formation",
               "men_statut_boursier": "est_boursier", "men_echelon_bourse": "echelon_bourse"}
V2, V3 = "api_particulier_v2_", "api_particulier_v3_"


def _singles(spec, operation_id, table):
    """One example per scope: that scope's keys show, every other scope's keys do not."""
    out = []
    for scope, keys in table.items():
        keys = [keys] if isinstance(keys, str) else keys
        others = [k for s, ks in table.items() if s != scope for k in ([ks] if isinstance(ks, str) else ks)]
        out.append(pytest.param(spec, operation_id, [scope], keys, others, id=f"{operation_id[17:]}-{scope}"))
    return out


def _all(spec, operation_id, table):
    keys = [k for ks in table.values() for k in ([ks] if isinstance(ks, str) else ks)]
    return pytest.param(spec, operation_id, list(table), keys, [], id=f"{operation_id[17:]}-all")


# (production spec, operation, scopes held, keys that show, keys that do not)
EXAMPLES = [
    ("cnav/allocation_adulte_handicape/v2_spec.rb", V2 + "cnav_allocation_adulte_handicape",
     ["allocation_adulte_handicape"], ["status", "dateDebut"], []),
    ("cnav/allocation_adulte_handicape/v3_spec.rb", V3 + "cnav_allocation_adulte_handicape_with_civility",
     ["allocation_adulte_handicape"], ["est_beneficiaire", "date_debut_droit"], []),
    ("cnav/allocation_soutien_familial/v2_spec.rb", V2 + "cnav_allocation_soutien_familial",
     ["allocation_soutien_familial"], ["status", "dateDebut", "dateFin"], []),
    ("cnav/allocation_soutien_familial/v3_spec.rb", V3 + "cnav_allocation_soutien_familial_with_civility",
     ["allocation_soutien_familial"], ["est_beneficiaire", "date_debut_droit"], []),
    ("cnav/complementaire_sante_solidaire/v2_spec.rb", V2 + "cnav_complementaire_sante_solidaire",
     ["complementaire_sante_solidaire"], ["status", "dateDebut", "dateFin"], []),
    ("cnav/complementaire_sante_solidaire/v3_spec.rb", V3 + "cnav_complementaire_sante_solidaire_with_civility",
     ["complementaire_sante_solidaire"], ["est_beneficiaire", "avec_participation", "date_debut_droit"], []),
    ("cnav/prime_activite/v2_spec.rb", V2 + "cnav_prime_activite", ["prime_activite", "prime_activite_majoration"],
     ["status", "majoration", "dateDebut", "dateFin"], []),
    ("cnav/prime_activite/v3_spec.rb", V3 + "cnav_prime_activite_with_civility", ["prime_activite"],
     ["est_beneficiaire", "date_debut_droit"], ["avec_majoration"]),
    ("cnav/prime_activite/v3_spec.rb", V3 + "cnav_prime_activite_with_civility",
     ["prime_activite", "prime_activite_majoration"], ["est_beneficiaire", "date_debut_droit", "avec_majoration"], []),
    ("cnav/revenu_solidarite_active/v2_spec.rb", V2 + "cnav_revenu_solidarite_active",
     ["revenu_solidarite_active", "revenu_solidarite_active_majoration"], ["status", "majoration", "dateDebut", "dateFin"], []),
    ("cnav/revenu_solidarite_active/v3_spec.rb", V3 + "cnav_revenu_solidarite_active_with_civility",
     ["revenu_solidarite_active"], ["est_beneficiaire", "date_debut_droit"], ["avec_majoration"]),
    ("cnav/revenu_solidarite_active/v3_spec.rb", V3 + "cnav_revenu_solidarite_active_with_civility",
     ["revenu_solidarite_active", "revenu_solidarite_active_majoration"],
     ["est_beneficiaire", "date_debut_droit", "avec_majoration"], []),
    ("cnav/quotient_familial/v3_spec.rb", V3 + "cnav_quotient_familial_with_civility", ["cnaf_quotient_familial"],
     ["quotient_familial"], ["allocataires", "enfants", "adresse"]),
    ("cnav/quotient_familial/v3_spec.rb", V3 + "cnav_quotient_familial_with_civility",
     ["cnaf_quotient_familial", "cnaf_allocataires", "cnaf_enfants", "cnaf_adresse"],
     ["quotient_familial", "allocataires", "enfants", "adresse"], []),
    ("cnav/quotient_familial_v2/v2_spec.rb", V2 + "cnav_quotient_familial_v2",
     ["cnaf_quotient_familial", "cnaf_allocataires", "cnaf_enfants", "cnaf_adresse"], ["enfants"], []),
    ("cnav/quotient_familial_v2/v2_spec.rb", V2 + "cnav_quotient_familial_v2",
     ["cnaf_quotient_familial", "cnaf_allocataires", "cnaf_adresse"], ["allocataires"], ["enfants"]),
    _all("cnous/etudiant_boursier/v3_spec.rb", V3 + "cnous_etudiant_boursier_with_ine", CNOUS_V3_KEYS),
    *_singles("cnous/etudiant_boursier/v3_spec.rb", V3 + "cnous_etudiant_boursier_with_ine", CNOUS_V3_KEYS),
    ("cnous/etudiant_boursier/v4_spec.rb", "api_particulier_v4_cnous_etudiant_boursier_with_ine",
     ["cnous_statut_boursier"], ["statut_boursier"], ["est_boursier"]),
    ("cnous/etudiant_boursier/v4_spec.rb", "api_particulier_v4_cnous_etudiant_boursier_with_ine",
     ["cnous_identite"], ["identite"], ["statut_boursier", "est_boursier"]),
    _all("cnous/student_scholarship/v2_spec.rb", V2 + "cnous_student_scholarship", CNOUS_V2_KEYS),
    *_singles("cnous/student_scholarship/v2_spec.rb", V2 + "cnous_student_scholarship", CNOUS_V2_KEYS),
    ("france_travail/indemnites_serializer/v3_spec.rb", V3 + "france_travail_indemnites_with_identifiant",
     ["pole_emploi_paiements"], ["identifiant", "paiements"], []),
    ("france_travail/indemnites_serializer/v3_spec.rb", V3 + "france_travail_indemnites_with_identifiant",
     [], ["identifiant"], ["paiements"]),
    _all("france_travail/statut_serializer/v3_spec.rb", V3 + "france_travail_statut_with_identifiant", FT_V3_KEYS),
    *_singles("france_travail/statut_serializer/v3_spec.rb", V3 + "france_travail_statut_with_identifiant", FT_V3_KEYS),
    ("men/scolarites/v2_spec.rb", V2 + "men_scolarites", ["men_statut_scolarite", "men_statut_boursier",
                                                          "men_echelon_bourse"],
     ["est_scolarise", "est_boursier", "niveau_bourse"], []),
    ("men/scolarites/v2_spec.rb", V2 + "men_scolarites", ["men_statut_scolarite", "men_echelon_bourse"],
     ["est_scolarise"], ["est_boursier", "niveau_bourse"]),
    ("men/scolarites/v2_spec.rb", V2 + "men_scolarites", ["men_statut_boursier"], ["est_boursier"],
     ["est_scolarise", "niveau_bourse"]),
    _all("men/scolarites_serializer/v3_spec.rb", V3 + "men_scolarites_with_civility", MEN_V3_KEYS),
    *_singles("men/scolarites_serializer/v3_spec.rb", V3 + "men_scolarites_with_civility", MEN_V3_KEYS),
    ("men/scolarites_serializer/v5_spec.rb", "api_particulier_v5_men_scolarites_with_civility",
     ["men_statut_scolarite"], ["est_scolarise"], ["regime_pensionnat"]),
    ("mesri/statut_etudiant_serializer/v3_spec.rb", V3 + "mesri_statut_etudiant_with_ine", ["mesri_identite"],
     ["identite"], ["admissions"]),
    ("pole_emploi/indemnites/v2_spec.rb", V2 + "pole_emploi_indemnites", ["pole_emploi_paiements"],
     ["identifiant", "paiements"], []),
    ("pole_emploi/indemnites/v2_spec.rb", V2 + "pole_emploi_indemnites", [], ["identifiant"], ["paiements"]),
    _all("pole_emploi/statut/v2_spec.rb", V2 + "pole_emploi_statut", FT_V2_KEYS),
    *_singles("pole_emploi/statut/v2_spec.rb", V2 + "pole_emploi_statut", FT_V2_KEYS),
]


@pytest.mark.parametrize("spec, operation_id, scopes, shown, hidden", EXAMPLES)
def test_serializer_spec_example(spec, operation_id, scopes, shown, hidden):
    """Mirrors the example of siade/spec/serializers/api_particulier/<spec> (named in the test id)."""
    body = masked(operation_id, scopes, shown, preferred=hidden)
    assert [k for k in shown if not _has(body, k)] == [], f"{SPEC}{spec}: missing"
    assert [k for k in hidden if _has(body, k)] == [], f"{SPEC}{spec}: shown without its scope"


def test_men_v5_regime_pensionnat_alone():
    """siade/spec/serializers/api_particulier/men/scolarites_serializer/v5_spec.rb: men_regime_pensionnat
    alone shows exactly `regime_pensionnat`."""
    body = masked("api_particulier_v5_men_scolarites_with_civility", ["men_regime_pensionnat"], ["regime_pensionnat"])
    assert list(body) == ["regime_pensionnat"]


MESRI_V3 = V3 + "mesri_statut_etudiant_with_ine"
ADMISSION_DETAILS = {"mesri_admission_inscrit": "est_inscrit", "mesri_admission_regime_formation": "regime_formation",
                     "mesri_admission_commune_etudes": "code_cog_insee_commune",
                     "mesri_admission_etablissement_etudes": "etablissement_etudes"}


@pytest.mark.parametrize("detail", [None, *ADMISSION_DETAILS])
def test_mesri_v3_admission_details_come_with_mesri_admissions(detail):
    """siade/spec/serializers/api_particulier/mesri/statut_etudiant_serializer/v3_spec.rb: with
    mesri_admissions, each admission has its dates, plus only the detail whose scope is held."""
    scopes = ["mesri_admissions"] + ([detail] if detail else [])
    body = masked(MESRI_V3, scopes, ["admissions"], where=lambda b: b["admissions"])
    for admission in body["admissions"]:
        expected = {"date_debut", "date_fin"} | ({ADMISSION_DETAILS[detail]} if detail else set())
        assert set(admission) == expected


@pytest.mark.parametrize("detail", list(ADMISSION_DETAILS))
def test_mesri_v3_admission_detail_without_its_parent_shows_nothing(detail):
    """siade/app/serializers/api_particulier/mesri/statut_etudiant_serializer/v3.rb: `admissions`
    shows only with mesri_admissions; a detail scope alone reveals nothing."""
    body = masked(MESRI_V3, ["mesri_identite", detail], ["identite", "admissions"], where=lambda b: b["admissions"])
    assert "admissions" not in body and "identite" in body


MESRI_V2 = V2 + "mesri_student_status"


def _inscrit_initiale(body):
    return any(i.get("statut") == "inscrit" and i.get("regime") == "formation initiale" and i.get("etablissement")
               for i in body.get("inscriptions") or [])


def test_mesri_v2_inscription_etudiant_keeps_formation_initiale_with_its_establishment():
    """siade/spec/serializers/api_particulier/mesri/student_status/v2_spec.rb ('has formation initiale regime')."""
    scopes = ["mesri_identifiant", "mesri_identite", "mesri_inscription_etudiant", "mesri_etablissements"]
    body = masked(MESRI_V2, scopes, ["inscriptions"], where=_inscrit_initiale)
    kept = [i for i in body["inscriptions"] if i]
    assert kept and all(i["regime"] == "formation initiale" and "uai" in i["etablissement"] for i in kept)


def test_mesri_v2_inscription_not_admitted_by_the_scopes_is_an_empty_object():
    """siade/spec/serializers/api_particulier/mesri/student_status/v2_spec.rb ('filters out
    inscriptions when scope is not correct'): the inscription is `{}`, the answer still a 200 body."""
    scopes = ["mesri_identifiant", "mesri_identite", "mesri_inscription_autre", "mesri_etablissements"]
    payload = case_with(MESRI_V2, ["inscriptions"], where=lambda b: all(
        i.get("statut") == "inscrit" and i.get("regime") == "formation initiale" for i in b["inscriptions"]))
    body = CATALOGUE.get(MESRI_V2).mask(payload, frozenset(scopes))
    assert body["inscriptions"] == [{} for _ in payload["inscriptions"]]


def test_mesri_v2_etablissements_alone_gives_empty_inscriptions_not_a_404():
    """siade/app/serializers/api_particulier/mesri/student_status/v2.rb: the establishment is only
    added to an inscription another held scope admitted; `inscriptions` still shows."""
    payload = case_with(MESRI_V2, ["inscriptions"], where=lambda b: b["inscriptions"])
    body = CATALOGUE.get(MESRI_V2).mask(payload, frozenset(["mesri_etablissements"]))
    assert body == {"inscriptions": [{} for _ in payload["inscriptions"]]}


def test_men_v2_code_etablissement_has_no_scope():
    """siade/app/serializers/api_particulier/men/scolarites/v2.rb: `code_etablissement` has no condition."""
    body = masked(V2 + "men_scolarites", ["men_statut_boursier"], ["code_etablissement", "est_boursier"])
    assert "code_etablissement" in body and "eleve" not in body


def test_qf_v2_regime_is_never_shown():
    """siade/app/serializers/api_particulier/cnav/quotient_familial_v2/v2.rb emits no `regime`."""
    scopes = ["cnaf_quotient_familial", "cnaf_allocataires", "cnaf_enfants", "cnaf_adresse"]
    body = masked(V2 + "cnav_quotient_familial_v2", scopes, ["regime", "quotientFamilial"])
    assert "regime" not in body and "quotientFamilial" in body


def test_cnous_v3_statut_bourse_reveals_nothing():
    """siade/app/serializers/api_particulier/cnous/etudiant_boursier/v3.rb has no attribute behind
    cnous_statut_bourse (v2 shows statut/statutLibelle with it)."""
    body = masked(V3 + "cnous_etudiant_boursier_with_ine", ["cnous_statut_bourse"], ["echelon_bourse"])
    assert body == {}


def test_ants_identite_particulier_has_no_scope():
    """siade/app/serializers/api_particulier/ants/extrait_immatriculation_vehicule_serializer/v3.rb."""
    operation_id = V3 + "ants_extrait_immatriculation_vehicule_with_france_connect"
    body = masked(operation_id, ["ants_extrait_immatriculation_vehicule_adresse_particulier"],
                  ["identite_particulier", "adresse_particulier", "statut_rattachement"])
    assert "identite_particulier" in body and "adresse_particulier" in body and "statut_rattachement" not in body


GIP = V3 + "gip_mds_service_civique_with_civility"
GIP_FULL = ["statut_actuel.contrat_trouve", "statut_actuel.organisme_accueil", "statut_passe.date_debut_contrat"]


@pytest.mark.parametrize("scopes, expected", [
    (["gip_mds_service_civique_statut_actuel"], {"statut_actuel": {"contrat_trouve"}}),
    (["gip_mds_service_civique_statut_actuel", "gip_mds_service_civique_organisme_accueil"],
     {"statut_actuel": {"contrat_trouve", "organisme_accueil"}}),
    (["gip_mds_service_civique_statut_passe", "gip_mds_service_civique_dates"],
     {"statut_passe": {"contrat_trouve", "date_debut_contrat", "date_fin_contrat"}}),
    (["gip_mds_service_civique_organisme_accueil", "gip_mds_service_civique_dates"], {}),
])
def test_gip_mds_details_show_only_inside_a_held_statut(scopes, expected):
    """siade/app/serializers/api_particulier/gip_mds/service_civique_serializer/v3.rb#build_statut."""
    body = masked(GIP, scopes, GIP_FULL)
    assert {k: set(v) for k, v in body.items()} == expected


def test_v3_links_and_meta_are_not_masked():
    """siade/spec/serializers/api_particulier/v3_and_more/base_serializer_spec.rb: the scopes act on
    `data` only; `links` and `meta` come out whatever the scopes."""
    payload = case_with(V3 + "france_travail_statut_with_identifiant", ["identite"])
    out = CATALOGUE.get(V3 + "france_travail_statut_with_identifiant").mask(payload, frozenset(["pole_emploi_contact"]))
    assert {k: v for k, v in out.items() if k != "data"} == {k: v for k, v in payload.items() if k != "data"}
