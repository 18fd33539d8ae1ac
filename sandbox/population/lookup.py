"""How a request finds its case: the key a case is indexed under and the key a request looks up.

Both are production's mock key (production/mocking_params.py, its table in
production/data/mocking_params.yml): what the route's provider reads, each value lower-cased. A
parameter production does not read changes nothing, one sent blank counts as absent, and a case
file's params are read exactly as a request's. A FranceConnect call is matched on the identity
its token carries (canonical_identity, identity_agrees) and on the key's other parameters.
"""
from __future__ import annotations

import datetime
import re

from ..production import mocking_params


def case_key(operation_id: str, params: dict) -> frozenset:
    """The key a case file's params (written as a client sends them) are found under."""
    return mocking_params.reader(operation_id).key(mocking_params.from_case(params), case=True)


def request_key(operation_id: str, args, france_connect: bool = False) -> frozenset:
    """The key a request's query (a MultiDict) looks up (`france_connect`: a FranceConnect call's,
    whose identity comes with its token)."""
    return mocking_params.reader(operation_id).key(mocking_params.from_args(args), france_connect=france_connect)


def sent_names(operation_id: str, key_names) -> list:
    """The request parameters behind some key names (X-Sandbox-Near-Miss speaks the client's words)."""
    read = mocking_params.reader(operation_id)
    return sorted({read.param_of(name) for name in key_names})


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


# The key names production's v2 providers build from an identity (cnous v2: the organizer's own params).
_IDENTITY_KEYS = IDENTITY_PARAMS | {"nom_naissance", "code_cog_insee_commune_naissance", "sexe_etat_civil",
                                    "annee_date_naissance", "mois_date_naissance", "jour_date_naissance"}


def other_params(key: frozenset) -> frozenset:
    """A match key without the identity parameters (e.g. the plate number of an ANTS call)."""
    return frozenset(item for item in key if item[0] not in _IDENTITY_KEYS)


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


def france_connect_civility(claims: dict) -> dict:
    """The civil status production's FranceConnect routes hand their organizer, from the identity
    a FranceConnect token carries (concerns/api_particulier/france_connectable.rb,
    civility_parameters_from_france_connect): production's names, values as FranceConnect gives
    them (the birth date split on "-", given names split on spaces)."""
    def text(name):
        value = claims.get(name)
        return None if value is None else str(value)

    given, birthdate = text("given_name"), text("birthdate")
    if given is None and isinstance(claims.get("given_name_array"), list):
        given = " ".join(str(w) for w in claims["given_name_array"])
    parts = birthdate.split("-") if birthdate is not None else []
    return {"nom_usage": text("preferred_username"), "nom_naissance": text("family_name"),
            "prenoms": given.split() if given is not None else None,
            "annee_date_naissance": parts[0] if len(parts) > 0 else None,
            "mois_date_naissance": parts[1] if len(parts) > 1 else None,
            "jour_date_naissance": parts[2] if len(parts) > 2 else None,
            "code_cog_insee_commune_naissance": text("birthplace"),
            "code_cog_insee_pays_naissance": text("birthcountry"),
            "sexe_etat_civil": "M" if claims.get("gender") == "male" else "F"}


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
