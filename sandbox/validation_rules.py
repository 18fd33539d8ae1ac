"""Parameter validation as production's code does it, one place for every route.

Production (datagouv/apistration, siade/) never checks a request against its OpenAPI spec: its
controllers map query parameters to a civil status (siade/app/controllers/api_particulier/,
concerns/api_particulier/civility_parameters.rb), then organizers run validators
(siade/app/organizers/**/validate_params.rb, siade/app/interactors/**/validate_*.rb).
This module holds those rules; Operation.validate (spec.py) calls `check` for every route
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

import datetime
import re
from pathlib import Path

import yaml

from . import dates
from .errors import ParameterErrors

_DATA = yaml.safe_load((Path(__file__).parent / "data" / "parameter_errors.yml").read_text(encoding="utf-8"))
BCN = {"codes_bcn_regions": frozenset(_DATA.pop("men_bcn_regions")),
       "codes_bcn_departements": frozenset(_DATA.pop("men_bcn_departements"))}
PARAMETER_ERRORS = _DATA
A = re.ASCII  # Ruby's \d and \w are ASCII-only


def today() -> datetime.date:
    """Production's Time.zone.today (Paris); SANDBOX_TODAY or a test freezes it (sandbox/dates.py)."""
    return dates.today()


# --- Ruby's reading of values -----------------------------------------------------------------
def rails_params(args) -> dict:
    """A MultiDict query -> {name: str | list}, as Rails' params: `x[]` lists, last `x` wins."""
    params = {}
    for name in args.keys():
        values = args.getlist(name)
        if name.endswith("[]"):
            params[name[:-2]] = list(values)
        elif name not in params or not isinstance(params[name], list):
            params[name] = values[-1]
    return params


def blank(value) -> bool:
    """Ruby's blank?: nil, "", whitespace only, empty list."""
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def to_i(value) -> int:
    """Ruby's String#to_i: the leading integer, 0 when there is none."""
    if value is None or not isinstance(value, str):
        return 0
    found = re.match(r"\s*([+-]?\d+(?:_\d+)*)", value, A)
    return int(found.group(1).replace("_", "")) if found else 0


def ruby_split(value: str, sep: str) -> list:
    """Ruby's String#split(sep): trailing empty fields are dropped."""
    parts = value.split(sep)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def valid_date(year: int, month: int, day: int) -> bool:
    """Ruby's Date.valid_date? (proleptic Gregorian, any year, not only 1..9999)."""
    if not 1 <= month <= 12 or day < 1:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    return day <= days


def _match(pattern: str, value, flags=0) -> bool:
    """`value =~ /pattern/` with Ruby's ^ and $ (line anchors); a list never matches."""
    return isinstance(value, str) and re.search(pattern, value, A | re.M | flags) is not None


# --- the validators (each names the production interactor it mirrors) -------------------------
NAME = r"[a-zA-ZÀ-ÖØ-öø-ÿ' -]+"
NAME_DSNJ = r"[a-zA-ZÀ-ÖØ-öø-ÿÆæ' -]+"
COMMUNE = r"^([013-9]\d|2[AB1-9])\d{3}$"


def _prenoms_format(p) -> bool:  # interactors/concerns/validate_prenoms_format.rb
    value = p.get("prenoms")
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def nom_naissance(p, errors, ctx):  # interactors/civility/validate_nom_naissance.rb
    value = p.get("nom_naissance")
    if blank(value) or not isinstance(value, str) or not re.fullmatch(NAME, value):
        errors.append("nom_naissance")


def prenoms(p, errors, ctx):  # interactors/civility/validate_prenoms.rb
    if not _prenoms_format(p):
        errors.append("prenoms")


def date_naissance(p, errors, ctx):  # interactors/civility/validate_date_naissance.rb
    year, month, day = (to_i(p.get(k)) for k in ("annee_date_naissance", "mois_date_naissance", "jour_date_naissance"))
    if year <= 0:
        errors.append("annee_date_naissance")
    elif not 1 <= month <= 12:
        errors.append("mois_date_naissance")
    elif not 1 <= day <= 31:
        errors.append("jour_date_naissance")
    elif not valid_date(year, month, day):
        errors.append("date_naissance")


def sexe_etat_civil(p, errors, ctx):  # interactors/civility/validate_sexe_etat_civil.rb
    value = p.get("sexe_etat_civil")
    if blank(value) or not isinstance(value, str) or value.upper() not in ("M", "F"):
        errors.append("sexe_etat_civil")


def commune_naissance(p, errors, ctx):  # interactors/civility/validate_code_cog_insee_commune_naissance.rb
    value = p.get("code_cog_insee_commune_naissance")
    if not blank(value) and not _match(COMMUNE, value):
        errors.append("birth_place")


def pays_naissance(p, errors, ctx):  # interactors/civility/validate_code_cog_insee_pays_naissance.rb
    value = p.get("code_cog_insee_pays_naissance")
    if blank(value) or not _match(r"^\d{5}$", value) or not (value[:2] == "99" or value == "92352"):
        errors.append("insee_country_code")


def cnav_sexe(p, errors, ctx):  # interactors/cnav/validate_sexe_etat_civil.rb: optional, any case
    value = p.get("sexe_etat_civil")
    if not blank(value) and (not isinstance(value, str) or value.upper() not in ("M", "F")):
        errors.append("sexe_etat_civil")


def cnav_date(p, errors, ctx):  # interactors/cnav/validate_date_naissance.rb
    raw = [p.get(k) for k in ("annee_date_naissance", "mois_date_naissance", "jour_date_naissance")]
    year, month, day = (to_i(v) for v in raw)
    if ((raw[0] is not None and year <= 0) or (raw[1] is not None and not 1 <= month <= 12)
            or (raw[2] is not None and not 1 <= day <= 31)):
        errors.append("birth_date")
    elif None not in raw:
        yesterday = today() - datetime.timedelta(days=1)  # tuples: a year past 9999 is no Python date
        if not (valid_date(year, month, day)
                and (1900, 1, 1) <= (year, month, day) <= (yesterday.year, yesterday.month, yesterday.day)):
            errors.append("birth_date")


def cnav_prenoms(p, errors, ctx):  # interactors/cnav/validate_prenoms.rb: optional, letters only
    if p.get("prenoms") is None:
        return
    if not _prenoms_format(p) or not all(re.fullmatch(NAME, v) for v in p["prenoms"]):
        errors.append("first_names")


def request_id(p, errors, ctx):  # interactors/cnav/validate_request_id.rb (ValidateUuid)
    value = ctx.get("request_id")
    if blank(value) or not re.fullmatch(r"[\da-f]{8}-(?:[\da-f]{4}-){3}[\da-f]{12}", value, A | re.I):
        errors.append("request_id")


def _transcogage(p, errors):  # organizers/insee/commune_insee_code/validate_params.rb
    year = p.get("annee_date_naissance")
    if blank(year) or not re.fullmatch(r"\d{4}", year, A) or not 1900 <= int(year) <= today().year:
        errors.append("annee_date_naissance")
    departement = p.get("code_cog_insee_departement_naissance")
    if blank(departement) or not (departement in ("2A", "2B", "971", "972", "973", "974", "976") or (
            re.fullmatch(r"\d{2}", departement, A) and 1 <= int(departement) <= 95)):
        errors.append("code_cog_insee_departement_naissance")


def cnav_birthplace(p, errors, ctx):
    """interactors/cnav/validate_code_cog_insee_commune_naissance_or_transcogage_params.rb: born
    in France (99100), a commune code or the three transcogage parameters are required; a
    failing sub-validator REPLACES the errors gathered so far, as production's does."""
    commune, france = p.get("code_cog_insee_commune_naissance"), p.get("code_cog_insee_pays_naissance") == "99100"
    sub = []
    if not blank(commune) or not france:  # interactors/cnav/validate_code_cog_insee_commune_naissance.rb
        if not ((blank(commune) and not france) or _match(COMMUNE, commune or "")):
            sub.append("birth_place")
    elif all(not blank(p.get(k)) for k in ("nom_commune_naissance", "annee_date_naissance",
                                          "code_cog_insee_departement_naissance")):
        _transcogage(p, sub)
    else:
        errors.append("birth_place")
        return
    if sub:
        errors[:] = sub


def qf_year(p, errors, ctx):  # interactors/cnav/quotient_familial_v2/validate_year.rb
    value = p.get("annee")
    if value is None:
        return
    current = today().year
    if blank(value) or not re.fullmatch(r"\d{4}", value, A) or not current - 2 <= int(value) <= current:
        errors.append("annee_cnav")


def qf_month(p, errors, ctx):  # interactors/cnav/quotient_familial_v2/validate_month.rb
    value = p.get("mois")
    if value is None:
        return
    now, year = today(), p.get("annee")
    if year and to_i(year) >= now.year and to_i(value) > now.month:  # a month still to come
        errors.append("mois")
    if not 1 <= to_i(value) <= 12:
        errors.append("mois")


INE_FORMATS = (r"[0-9]{9}[A-HJK]{2}", r"\d{10}[A-HJ-NPR-Z]", r"[0-9A-Z]{10}\d", r"\d{4}A\d{5}[A-HJ-NPR-Z]")


def ine(p, errors, ctx):  # interactors/service_user/validate_ine.rb: RNIE, BEA, base 36, SIFA
    value = p.get("ine")
    if blank(value) or not isinstance(value, str) or not any(
            re.fullmatch(f, value, A | re.I) for f in INE_FORMATS):
        errors.append("ine")


def campaign_year(p, errors, ctx):  # interactors/cnous/validate_campaign_year.rb
    value = p.get("campaign_year")
    if blank(value):
        return
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}", value, A) or not 2021 <= int(value) <= today().year - 1:
        errors.append("campaign_year")


def identifiant_present(p, errors, ctx):  # interactors/france_travail/validate_identifiant_presence.rb
    if blank(p.get("identifiant")):
        errors.append("identifiant")


def identifiant_digits(p, errors, ctx):  # interactors/sdh/validate_identifiant.rb
    value = p.get("identifiant")
    if blank(value) or not isinstance(value, str) or not re.fullmatch(r"\d+", value, A):
        errors.append("identifiant")


def immatriculation(p, errors, ctx):  # interactors/ants/extrait_immatriculation_vehicule/validate_immatriculation_presence.rb
    if blank(p.get("immatriculation")):
        errors.append("immatriculation")


def dsnj_nom(p, errors, ctx):  # interactors/dsnj/service_national/validate_nom_naissance.rb
    value = p.get("nom_naissance")
    if blank(value) or not _match(f"^{NAME_DSNJ}$", value):
        errors.append("nom_naissance")


def dsnj_prenoms(p, errors, ctx):  # interactors/dsnj/service_national/validate_prenoms.rb
    if not _prenoms_format(p) or not all(re.fullmatch(NAME_DSNJ, v) for v in p["prenoms"]):
        errors.append("prenoms")


def dsnj_date(p, errors, ctx):  # interactors/dsnj/service_national/validate_date_naissance.rb
    date_naissance(p, errors, ctx)
    year, month, day = (to_i(p.get(k)) for k in ("annee_date_naissance", "mois_date_naissance", "jour_date_naissance"))
    now = today()
    age = now.year - year - (1 if now.month < month or (now.month == month and now.day < day) else 0)
    if not 16 <= age <= 25:
        errors.append("dsnj_irrelevant_age")


def men_annee_scolaire(p, errors, ctx):  # interactors/men/scolarites/validate_annee_scolaire.rb
    value = p.get("annee_scolaire")
    if blank(value) or not _match(r"^(\d{4}|\d{4}-\d{4})$", value):
        errors.append("annee_scolaire")


def men_search(p, errors, ctx):  # interactors/men/scolarites/validate_search_params.rb (+ perimetre, degre, code)
    code = p.get("code_etablissement")
    perimetres = [(k, p.get(k)) for k in ("codes_bcn_departements", "codes_bcn_regions") if not blank(p.get(k))]
    if not blank(code) and perimetres:
        errors.append("code_etablissement_et_perimetre")
    elif not blank(code):
        if not _match(r"^\d{7}\w$", code):
            errors.append("code_etablissement")
    elif perimetres:
        if p.get("degre_etablissement") not in ("1D", "2D"):
            errors.append("degre_etablissement")
        if len(perimetres) != 1:
            errors.append("perimetre")
            return
        key, values = perimetres[0]
        if not isinstance(values, list) or any(blank(v) for v in values):
            errors.append("perimetre_valeurs")
        elif not all(v in BCN[key] for v in values):
            errors.append(key)
    else:
        errors.append("code_etablissement")


# --- each route: how production reads its query, and its steps ---------------------------------
def _v3_civility(q):  # controllers/concerns/api_particulier/civility_parameters.rb
    p = {k: q.get(v) for k, v in (
        ("nom_usage", "nomUsage"), ("nom_naissance", "nomNaissance"), ("prenoms", "prenoms"),
        ("annee_date_naissance", "anneeDateNaissance"), ("mois_date_naissance", "moisDateNaissance"),
        ("jour_date_naissance", "jourDateNaissance"), ("sexe_etat_civil", "sexeEtatCivil"),
        ("nom_commune_naissance", "nomCommuneNaissance"), ("code_cog_insee_pays_naissance", "codeCogInseePaysNaissance"),
        ("code_cog_insee_departement_naissance", "codeCogInseeDepartementNaissance"))}
    commune = q.get("codeCogInseeCommuneNaissance")
    p["code_cog_insee_commune_naissance"] = None if blank(commune) else commune
    return p


def _v3_extra(**names):
    def read(q):
        p = _v3_civility(q)
        p.update({k: q.get(v) for k, v in names.items()})
        return p
    return read


def _v2_cnav(q):  # controllers/api_particulier/v2/cnav/abstract_controller.rb (civility_params)
    return {k: q.get(v) for k, v in (
        ("nom_usage", "nomUsage"), ("nom_naissance", "nomNaissance"), ("prenoms", "prenoms"),
        ("annee_date_naissance", "anneeDateDeNaissance"), ("mois_date_naissance", "moisDateDeNaissance"),
        ("jour_date_naissance", "jourDateDeNaissance"), ("code_cog_insee_pays_naissance", "codePaysLieuDeNaissance"),
        ("code_cog_insee_commune_naissance", "codeInseeLieuDeNaissance"),
        ("code_cog_insee_departement_naissance", "codeInseeDepartementNaissance"),
        ("nom_commune_naissance", "nomCommuneNaissance"), ("sexe_etat_civil", "sexe"), ("annee", "annee"), ("mois", "mois"))}


def _split_date(value):
    parts = ruby_split(value, "-") if isinstance(value, str) else []
    return {k: (parts[i] if i < len(parts) else None)
            for i, k in enumerate(("annee_date_naissance", "mois_date_naissance", "jour_date_naissance"))}


def _v2_mesri(q):  # controllers/api_particulier/v2/mesri/student_status_controller.rb
    return {"nom_naissance": q.get("nom"), "prenoms": [q.get("prenom")], "sexe_etat_civil": q.get("sexe"),
            "code_cog_insee_commune_naissance": q.get("lieuDeNaissance"),
            **_split_date(q.get("dateDeNaissance") or "")}


def _v2_cnous(q):  # controllers/api_particulier/v2/cnous/student_scholarship_controller.rb
    given = q.get("prenoms") or ""
    return {"nom_naissance": q.get("nom"), "prenoms": given.split() if isinstance(given, str) else given,
            **(_split_date(q.get("dateDeNaissance")) if q.get("dateDeNaissance") is not None else {})}


def _v2_men(q):  # controllers/api_particulier/v2/men/scolarites_controller.rb
    return {"nom_naissance": q.get("nom"), "prenoms": [q.get("prenom")], "sexe_etat_civil": q.get("sexe"),
            "code_etablissement": q.get("codeEtablissement"), "annee_scolaire": q.get("anneeScolaire"),
            **_split_date(q.get("dateNaissance") if not blank(q.get("dateNaissance")) else "")}


def _plain(**names):
    return lambda q: {k: q.get(v) for k, v in names.items()}


CNAV = [[cnav_sexe, cnav_birthplace, pays_naissance, cnav_date, request_id, cnav_prenoms, nom_naissance]]
CNAV_QF = [[qf_year, qf_month, cnav_sexe, cnav_birthplace, pays_naissance, cnav_date, request_id, cnav_prenoms,
            nom_naissance]]
CIVILITY_CORE = [nom_naissance, prenoms, date_naissance]
MESRI = [[nom_naissance, prenoms, date_naissance, sexe_etat_civil, commune_naissance]]
MEN = [[nom_naissance, prenoms, date_naissance, sexe_etat_civil, men_search, men_annee_scolaire]]
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
    (r"api_particulier_v3_dsnj_service_national_with_civility", _v3_civility,
     [[dsnj_prenoms, dsnj_nom, dsnj_date, sexe_etat_civil, commune_naissance, pays_naissance]]),
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


def route_rules(operation_id: str):
    """(read, steps, france_connect_steps) for a route production's code governs, else None."""
    for entry in ROUTES:
        if re.fullmatch(entry[0], operation_id):
            return entry[1], entry[2], entry[3] if len(entry) > 3 else entry[2]
    return None


# --- recipient: siade/app/controllers/api_particulier/v2/base_controller.rb,
# concerns/recipient_management.rb, concerns/api_particulier/france_connectable.rb ---------------
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
        raise ParameterErrors([PARAMETER_ERRORS["recipient_invalid"]])


def check(operation_id: str, v3: bool, args, headers, france_connect: bool = False) -> bool:
    """Run production's rules for the route; raises ParameterErrors. False: no rules known."""
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
    from .transport import request_id as make_request_id  # production's request.request_id
    ctx = {"request_id": make_request_id(headers)}
    params = read(query)
    for group in steps:
        errors: list = []
        for rule in group:
            rule(params, errors, ctx)
        if errors:
            raise ParameterErrors([PARAMETER_ERRORS[field] for field in errors])
    return True
