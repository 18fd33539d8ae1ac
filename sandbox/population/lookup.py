"""How a request finds its case: the key a case is indexed under and the key a request looks up.

Matching follows the official staging: every value becomes a lower-cased string, the
request's parameter set must equal the case's exactly, `recipient` is ignored. A FranceConnect
call is matched on the identity its token carries (canonical_identity, identity_agrees).
"""
from __future__ import annotations

import datetime
import re

IGNORED_PARAMS = frozenset({"recipient", "token"})


def normalize(value) -> tuple:
    """A parameter value, as the matcher compares it: a tuple of lower-cased strings."""
    if isinstance(value, (list, tuple)):
        return tuple(v for item in value for v in normalize(item))
    if isinstance(value, bool):
        return ("true" if value else "false",)
    if value is None:
        return ("",)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return (value.isoformat(),)
    return (str(value).lower(),)


def case_key(params: dict) -> frozenset:
    return frozenset((name.removesuffix("[]"), normalize(v)) for name, v in params.items()
                     if name.removesuffix("[]") not in IGNORED_PARAMS)


def request_key(args) -> frozenset:
    merged = {}
    for name in args.keys():
        key = name.removesuffix("[]")
        if key in IGNORED_PARAMS:
            continue
        merged[key] = merged.get(key, ()) + tuple([v.lower() for v in args.getlist(name)])
    return frozenset(merged.items())


# --- FranceConnect: an identity selects the case whose civil status agrees with it ---------
IDENTITY_FIELDS = {
    "nom": ("nomNaissance", "nomFamille", "nom", "family_name"),
    "prenoms": ("prenoms", "prenom", "given_name_array", "given_name"),
    "date": ("dateDeNaissance", "dateNaissance", "birthdate"),
    "annee": ("anneeDateNaissance", "anneeDateDeNaissance"),
    "mois": ("moisDateNaissance", "moisDateDeNaissance"),
    "jour": ("jourDateNaissance", "jourDateDeNaissance"),
    "sexe": ("sexeEtatCivil", "sexe", "gender"),
    "lieu": ("codeCogInseeCommuneNaissance", "codeInseeLieuDeNaissance", "lieuDeNaissance", "birthplace"),
    "pays": ("codeCogInseePaysNaissance", "codePaysLieuDeNaissance", "birthcountry"),
}


# Parameters that only restate who the person is: a FranceConnect call carries them in its token.
IDENTITY_PARAMS = frozenset(n for names in IDENTITY_FIELDS.values() for n in names) | {
    "nomUsage", "nomCommuneNaissance", "codeCogInseeDepartementNaissance", "codeInseeDepartementNaissance"}


def other_params(key: frozenset) -> frozenset:
    """A match key without the identity parameters (e.g. the plate number of an ANTS call)."""
    return frozenset(item for item in key if item[0] not in IDENTITY_PARAMS)


def canonical_identity(fields: dict) -> dict:
    fields = {k.removesuffix("[]"): v for k, v in fields.items()}
    out = {}
    for meaning, names in IDENTITY_FIELDS.items():
        value = next((fields[n] for n in names if fields.get(n) not in (None, "", [])), None)
        if value is None:
            continue
        if meaning == "prenoms":
            words = value if isinstance(value, list) else str(value).split()
            out[meaning] = tuple(str(w).lower() for w in words)
        elif meaning == "date":
            text = value.isoformat() if isinstance(value, datetime.date) else str(value)
            found = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", text) or re.fullmatch(
                r"(\d{1,2})/(\d{1,2})/(\d{4})", text)
            if found:
                parts = found.groups()
                year, month, day = parts if len(parts[0]) == 4 else parts[::-1]
                out.update(annee=str(int(year)), mois=str(int(month)), jour=str(int(day)))
        elif meaning in ("annee", "mois", "jour"):
            out[meaning] = str(int(value)) if str(value).isdigit() else str(value)
        elif meaning == "sexe":
            out[meaning] = str(value).lower()[:1]
        else:
            out[meaning] = str(value).lower()
    return out


def identity_agrees(identity: dict, case: dict) -> bool:
    """Every identity field both sides carry agrees. A case that names nobody (an ANTS plate
    number) is selected by its other parameters alone."""
    if not case:
        return True
    shared = identity.keys() & case.keys()
    if "nom" not in shared:
        return False
    for k in shared:
        if k == "prenoms":
            if identity[k][:len(case[k])] != case[k]:
                return False
        elif identity[k] != case[k]:
            return False
    return True
