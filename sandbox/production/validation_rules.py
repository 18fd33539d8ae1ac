"""Parameter validation as production's code does it, one place for every route.

Production (datagouv/apistration, siade/) never checks a request against its OpenAPI spec: its
controllers map query parameters to a civil status (siade/app/controllers/api_particulier/,
concerns/api_particulier/civility_parameters.rb), then organizers run validators
(siade/app/organizers/**/validate_params.rb, siade/app/interactors/**/validate_*.rb).
This module holds the route table (the validators themselves are in parameter_checks.py);
Operation.validate (spec.py) calls `check` for every route
listed in ROUTES and keeps the spec's checkers for any other route a loaded spec declares.

Semantics carried over:
- a `ValidateParamsOrganizer` collects EVERY error of its validators; an organizer step that
  is a lone interactor stops at its error. ROUTES lists each route's steps as groups: the
  first group with an error answers (v3: all its errors; v2: only the first).
- parameters are read as Rails reads a query: `name[]` gives a list, a repeated `name` keeps
  the last value, an absent one is None (production's nil), an empty one is "".
- numbers are read with Ruby's String#to_i ("12abc" is 12, "abc" is 0).
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml

from .errors import ParameterErrors
from .parameter_hints import hints
from .parameter_checks import *  # noqa: F403 - the validators the route table names
from .parameter_checks import A, blank, rails_params, ruby_split, to_i  # noqa: F401 - used by transport and tests

_DATA = yaml.safe_load((Path(__file__).parent / "data" / "parameter_errors.yml").read_text(encoding="utf-8"))
PARAMETER_ERRORS = {k: v for k, v in _DATA.items() if isinstance(v, dict)}


# --- each route: how production reads its query, and its steps ---------------------------------
class Reading:
    """How a route reads its query into production's params: `names` maps each of production's
    names to the query parameter it comes from (X-Sandbox-Hint names that one); `read` is the
    reading itself, when it is more than taking each value as Rails gives it."""

    def __init__(self, names: dict, read=None):
        self.names = names
        self.read = read

    def __call__(self, q) -> dict:
        return self.read(q) if self.read else {k: q.get(v) for k, v in self.names.items()}


V3_CIVILITY = {  # controllers/concerns/api_particulier/civility_parameters.rb
    "nom_usage": "nomUsage", "nom_naissance": "nomNaissance", "prenoms": "prenoms",
    "annee_date_naissance": "anneeDateNaissance", "mois_date_naissance": "moisDateNaissance",
    "jour_date_naissance": "jourDateNaissance", "sexe_etat_civil": "sexeEtatCivil",
    "nom_commune_naissance": "nomCommuneNaissance", "code_cog_insee_pays_naissance": "codeCogInseePaysNaissance",
    "code_cog_insee_departement_naissance": "codeCogInseeDepartementNaissance",
    "code_cog_insee_commune_naissance": "codeCogInseeCommuneNaissance"}


def _read_v3_civility(q, names=V3_CIVILITY):
    p = {k: q.get(v) for k, v in names.items()}
    commune = p["code_cog_insee_commune_naissance"]  # `.presence`: a blank commune is none
    p["code_cog_insee_commune_naissance"] = None if blank(commune) else commune
    return p


_v3_civility = Reading(V3_CIVILITY, _read_v3_civility)


def _v3_extra(**names):
    both = {**V3_CIVILITY, **names}
    return Reading(both, lambda q: _read_v3_civility(q, both))


# controllers/api_particulier/v2/cnav/abstract_controller.rb (civility_params)
_v2_cnav = Reading({
    "nom_usage": "nomUsage", "nom_naissance": "nomNaissance", "prenoms": "prenoms",
    "annee_date_naissance": "anneeDateDeNaissance", "mois_date_naissance": "moisDateDeNaissance",
    "jour_date_naissance": "jourDateDeNaissance", "code_cog_insee_pays_naissance": "codePaysLieuDeNaissance",
    "code_cog_insee_commune_naissance": "codeInseeLieuDeNaissance",
    "code_cog_insee_departement_naissance": "codeInseeDepartementNaissance",
    "nom_commune_naissance": "nomCommuneNaissance", "sexe_etat_civil": "sexe", "annee": "annee", "mois": "mois"})


def _split_date(value):
    parts = ruby_split(value, "-") if isinstance(value, str) else []
    return {k: (parts[i] if i < len(parts) else None)
            for i, k in enumerate(("annee_date_naissance", "mois_date_naissance", "jour_date_naissance"))}


def _date_from(name: str) -> dict:
    return dict.fromkeys(("annee_date_naissance", "mois_date_naissance", "jour_date_naissance"), name)


_v2_mesri = Reading(  # controllers/api_particulier/v2/mesri/student_status_controller.rb
    {"nom_naissance": "nom", "prenoms": "prenom", "sexe_etat_civil": "sexe",
     "code_cog_insee_commune_naissance": "lieuDeNaissance", **_date_from("dateDeNaissance")},
    lambda q: {"nom_naissance": q.get("nom"), "prenoms": [q.get("prenom")], "sexe_etat_civil": q.get("sexe"),
               "code_cog_insee_commune_naissance": q.get("lieuDeNaissance"),
               **_split_date(q.get("dateDeNaissance") or "")})


def _read_v2_cnous(q):  # controllers/api_particulier/v2/cnous/student_scholarship_controller.rb
    given = q.get("prenoms") or ""
    return {"nom_naissance": q.get("nom"), "prenoms": given.split() if isinstance(given, str) else given,
            **(_split_date(q.get("dateDeNaissance")) if q.get("dateDeNaissance") is not None else {})}


_v2_cnous = Reading({"nom_naissance": "nom", "prenoms": "prenoms", **_date_from("dateDeNaissance")}, _read_v2_cnous)

_v2_men = Reading(  # controllers/api_particulier/v2/men/scolarites_controller.rb
    {"nom_naissance": "nom", "prenoms": "prenom", "sexe_etat_civil": "sexe", "code_etablissement": "codeEtablissement",
     "annee_scolaire": "anneeScolaire", **_date_from("dateNaissance")},
    lambda q: {"nom_naissance": q.get("nom"), "prenoms": [q.get("prenom")], "sexe_etat_civil": q.get("sexe"),
               "code_etablissement": q.get("codeEtablissement"), "annee_scolaire": q.get("anneeScolaire"),
               **_split_date(q.get("dateNaissance") if not blank(q.get("dateNaissance")) else "")})


def _plain(**names):
    return Reading(names)


CNAV = [[cnav_sexe, cnav_birthplace, pays_naissance, cnav_date, request_id, cnav_prenoms, nom_naissance]]
CNAV_QF = [[qf_year, qf_month, cnav_sexe, cnav_birthplace, pays_naissance, cnav_date, request_id, cnav_prenoms,
            nom_naissance]]
CIVILITY_CORE = [nom_naissance, prenoms, date_naissance]
MESRI = [[nom_naissance, prenoms, date_naissance, sexe_etat_civil, commune_naissance]]
MEN = [[nom_naissance, prenoms, date_naissance, sexe_etat_civil, men_search, men_annee_scolaire]]
DSNJ = [[dsnj_prenoms, dsnj_nom, dsnj_date, sexe_etat_civil, commune_naissance, pays_naissance]]
MEN_V3 = _v3_extra(annee_scolaire="anneeScolaire", code_etablissement="codeEtablissement",
                   degre_etablissement="degreEtablissement", codes_bcn_departements="codesBcnDepartements",
                   codes_bcn_regions="codesBcnRegions")

# operation id (a regular expression, first match wins) -> (read the query, steps);
# `france_connect` steps are those of a call whose identity comes from FranceConnect.
ROUTES = [
    (r"api_particulier_v3_cnav_quotient_familial_with_civility", _v3_extra(annee="annee", mois="mois"), CNAV_QF),
    (r"api_particulier_v3_cnav_quotient_familial_with_france_connect", _plain(annee="annee", mois="mois"),
     [[qf_year, qf_month, request_id]]),
    (r"api_particulier_v3_cnav_\w+_with_civility", _v3_civility, CNAV),
    (r"api_particulier_v3_cnav_\w+_with_france_connect", _plain(), [[request_id]]),
    (r"api_particulier_v3_mesri_statut_etudiant_with_civility", _v3_civility, MESRI),
    (r"api_particulier_v3_mesri_statut_etudiant_with_ine", _plain(ine="ine"), [[ine]]),
    (r"api_particulier_v\d+_cnous_etudiant_boursier_with_civility", _v3_extra(campaign_year="campaignYear"),
     [CIVILITY_CORE, [campaign_year]]),
    (r"api_particulier_v\d+_cnous_etudiant_boursier_with_ine", _plain(ine="ine", campaign_year="campaignYear"),
     [[ine], [campaign_year]]),
    (r"api_particulier_v\d+_cnous_etudiant_boursier_with_france_connect", _plain(campaign_year="campaignYear"),
     [[campaign_year]]),
    (r"api_particulier_v3_dsnj_service_national_with_civility", _v3_civility, DSNJ),
    (r"api_particulier_v3_gip_mds_service_civique_with_civility", _v3_civility, [CIVILITY_CORE]),
    (r"api_particulier_v\d+_men_scolarites_with_civility", MEN_V3, MEN),
    (r"api_particulier_v3_france_travail_\w+_with_identifiant", _plain(identifiant="identifiant"),
     [[identifiant_present]]),
    (r"api_particulier_v3_sdh_statut_sportif_with_identifiant", _plain(identifiant="identifiant"),
     [[identifiant_digits]]),
    (r"api_particulier_v3_ants_extrait_immatriculation_vehicule_with_france_connect",
     _plain(immatriculation="immatriculation"), [[immatriculation]]),
    (r"api_particulier_v3_\w+_with_france_connect", _plain(), []),
    (r"api_particulier_v2_cnav_quotient_familial_v2", _v2_cnav, CNAV_QF, [[qf_year, qf_month, request_id]]),
    (r"api_particulier_v2_cnav_\w+", _v2_cnav, CNAV, [[request_id]]),
    (r"api_particulier_v2_mesri_student_status", _v2_mesri, MESRI, []),
    (r"api_particulier_v2_cnous_student_scholarship", _v2_cnous, [CIVILITY_CORE], []),
    (r"api_particulier_v2_men_scolarites", _v2_men, MEN),
    (r"api_particulier_v2_pole_emploi_\w+", _plain(identifiant="identifiant"), [[identifiant_present]]),
]
# v2 etudiants / etudiants-boursiers: an INE (outside FranceConnect) selects the INE organizer.
V2_INE_ROUTES = ("api_particulier_v2_mesri_student_status", "api_particulier_v2_cnous_student_scholarship")


# FranceConnect routes whose organizer checks the civil status the identity gives, as on the
# civil-status route: operation id -> (what the controller does to each value first, in its
# organizer_params; the steps). Run when the call's identity is known (the API's calls), after
# the route's own steps.
FRANCE_CONNECT_IDENTITY = {
    # controllers/api_particulier/v3_and_more/dsnj/service_national_with_france_connect_controller.rb
    "api_particulier_v3_dsnj_service_national_with_france_connect": (
        {"prenoms": str.capitalize, "nom_naissance": str.upper}, DSNJ),
}


def france_connect_params(operation_id: str, civility: dict) -> dict:
    """The organizer's params a FranceConnect identity gives (`civility`: production's
    civility_parameters_from_france_connect, worked out where identities are read)."""
    params = dict(civility)
    rewrites = FRANCE_CONNECT_IDENTITY.get(operation_id, ({}, []))[0]
    for name, rewrite in rewrites.items():
        value = params.get(name)
        if isinstance(value, list):
            params[name] = [rewrite(v) if isinstance(v, str) else v for v in value]
        elif isinstance(value, str):
            params[name] = rewrite(value)
    return params


@functools.lru_cache(maxsize=None)  # asked on every call, the same few dozen answers
def route_rules(operation_id: str):
    """(read, steps, france_connect_steps) for a route production's code governs, else None."""
    for entry in ROUTES:
        if re.fullmatch(entry[0], operation_id):
            return entry[1], entry[2], entry[3] if len(entry) > 3 else entry[2]
    return None


# --- recipient: siade/app/controllers/api_particulier/v2/base_controller.rb,
# concerns/recipient_management.rb, concerns/api_particulier/france_connectable.rb ---------------
@functools.lru_cache(maxsize=4096)  # a client sends its own SIRET on every call
def is_siret(value) -> bool:
    """app/validators/siret_format_validator.rb: 14 digits with a valid Luhn key; any SIRET of
    La Poste (356000000 + 5 digits) is accepted whatever its key."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{14}", value, A):
        return False
    if value.startswith("356000000"):
        return True
    total = 0
    for i, c in enumerate(reversed(value)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def check_recipient(v3: bool, query: dict, france_connect: bool):
    """v3: always required (a missing one is answered 00210 too, not 00203); v2: checked when
    present, required on a FranceConnect call; v2 answers 400 bad_request."""
    recipient = query.get("recipient")
    if (v3 or france_connect or not blank(recipient)) and not is_siret(recipient):
        raise ParameterErrors([PARAMETER_ERRORS["recipient_invalid"]],
                              hints([("recipient", "recipient_invalid", PARAMETER_ERRORS["recipient_invalid"]["code"])], {"recipient": "recipient"}, query, None))


def check(operation_id: str, v3: bool, args, headers, france_connect: bool = False,
          civility: dict | None = None) -> bool:
    """Run production's rules for the route; raises ParameterErrors. False: no rules known.
    `civility`: on a FranceConnect call, the civil status its identity gives (production's
    organizer reads it with the query's own parameters); None: not known (a check of a query
    alone, as `fixtures check` makes)."""
    rules = route_rules(operation_id)
    query = rails_params(args)
    check_recipient(v3, query, france_connect)
    if rules is None:
        return False
    read, steps, fc_steps = rules
    if france_connect:
        steps = fc_steps
    elif operation_id in V2_INE_ROUTES and not blank(query.get("ine")):
        read, steps = _plain(ine="ine"), [[ine]]
    ctx = {"headers": headers}  # production's request.request_id comes from them (rule request_id)
    params = read(query)
    if france_connect and civility is not None and operation_id in FRANCE_CONNECT_IDENTITY:
        params = {**france_connect_params(operation_id, civility), **params}
        steps = steps + FRANCE_CONNECT_IDENTITY[operation_id][1]
    for group in steps:
        errors: list = []
        reported = {}  # field -> the validator that reported it, for the hint's format
        for rule in group:
            rule(params, errors, ctx)
            for field in errors:
                reported.setdefault(field, rule.__name__)
        if errors:
            found = [(reported[field], field, PARAMETER_ERRORS[field]["code"]) for field in errors]
            raise ParameterErrors([PARAMETER_ERRORS[field] for field in errors],
                                  hints(found, read.names, query, headers))
    return True
