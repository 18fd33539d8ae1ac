"""Production's parameter validators, one function per interactor, and Ruby's reading of values.

Each validator is `rule(params, errors, ctx)`: `params` is the civil status and search
parameters as production's controller builds them (production's own names), `errors` the list
of field names found wrong so far (it appends, or replaces it where production does), `ctx`
holds the request id. The comment beside each names the file it mirrors under
siade/app/interactors/ of datagouv/apistration. Which route runs which validators, and how each
reads its query: validation_rules.py.
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path

import yaml


from . import clock
from .requests import request_id as read_request_id  # production's request.request_id

_BCN = yaml.safe_load((Path(__file__).parent / "data" / "parameter_errors.yml").read_text(encoding="utf-8"))
BCN = {"codes_bcn_regions": frozenset(_BCN["men_bcn_regions"]),
       "codes_bcn_departements": frozenset(_BCN["men_bcn_departements"])}
A = re.ASCII  # Ruby's \d and \w are ASCII-only


def today() -> datetime.date:
    """Production's Time.zone.today (Paris); SANDBOX_TODAY or a test freezes it (clock.py)."""
    return clock.today()


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
    value = read_request_id(ctx["headers"])
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
