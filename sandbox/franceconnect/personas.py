"""The citizens who can log in: every person the fixtures describe on a FranceConnect route.

A citizen comes from a fake FranceConnect token (fixtures/france_connect/, the fullest
identity) or from the civil status of a case of a FranceConnect-capable route; the same person
met in several places (same birth name, first given name and birth date) is one citizen, each
source filling what the others lack. Citizens are grouped in households: two citizens are in
one household when a payload lists them together (CAF allocataires and enfants). For each
citizen the directory knows which FranceConnect route answers what, by running the very
validation and matcher the API uses (the DSNJ refuses an identity outside its 16 to 25 years).

The directory is built when the provider starts, and again only when the fixtures reload (an age
is judged on the day it is built).
"""
from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass, field

from werkzeug.datastructures import MultiDict

from ..population.calls import RECIPIENT
from ..population.lookup import IDENTITY_FIELDS, canonical_identity, france_connect_civility, identity_agrees, other_params
from ..production import errors
from ..production.errors import ApiError

CLAIMS = ("given_name", "given_name_array", "family_name", "birthdate", "gender", "birthplace",
          "birthcountry", "preferred_username", "email")
FRANCE = "99100"
# payload keys that list a household's members, and their own keys for a birth date in one field
_MEMBER_LISTS = ("allocataires", "enfants")
_DATE_KEYS = ("date_naissance", "dateNaissance", "dateDeNaissance")


@dataclass
class Citizen:
    id: str
    identity: dict                      # FranceConnect claims (without sub)
    description: str = ""
    token: str | None = None            # the fake FranceConnect token that also names this citizen
    answers: list = field(default_factory=list)  # [{operation_id, path, version, status, case}]
    household: int = 0

    @property
    def label(self) -> str:
        return f"{self.identity['given_name']} {self.identity['family_name']}"


@dataclass
class Household:
    label: str
    citizens: list
    others: list  # members named by a payload who cannot log in: [(label, birthdate)]


@dataclass
class Directory:
    citizens: dict   # id -> Citizen, in display order
    households: list


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def _slug(*parts) -> str:
    return re.sub(r"[^a-z0-9]+", "-", _ascii(" ".join(str(p) for p in parts)).lower()).strip("-")


def _first(fields: dict, names):
    return next((fields[n] for n in names if fields.get(n) not in (None, "", [])), None)


def _key(canon: dict):
    if not {"nom", "prenoms", "annee", "mois", "jour"} <= canon.keys():
        return None
    return canon["nom"], canon["prenoms"][0], canon["annee"], canon["mois"], canon["jour"]


def identity_from_params(params: dict) -> dict | None:
    """A case's civil status -> FranceConnect claims (None when it does not name a person born
    on a known day); what it lacks stays None, to be filled by another source."""
    fields = {k.removesuffix("[]"): v for k, v in params.items()}
    canon = canonical_identity(fields)
    if _key(canon) is None or not (canon["mois"].isdigit() and canon["jour"].isdigit()) \
            or int(canon["mois"]) == 0 or int(canon["jour"]) == 0:
        return None
    given = _first(fields, IDENTITY_FIELDS["prenoms"])
    words = [str(w) for w in given] if isinstance(given, list) else str(given).split()
    sexe = canon.get("sexe")
    country = _first(fields, IDENTITY_FIELDS["pays"])
    place = _first(fields, IDENTITY_FIELDS["lieu"])
    if place is not None and _is_country(str(place)):
        # a v2 "lieu de naissance" holds the country code of a birth abroad: that is FranceConnect's
        # birthcountry, and its birthplace is then empty
        country, place = country or place, ""
    return {"given_name": " ".join(words), "given_name_array": words,
            "family_name": str(_first(fields, IDENTITY_FIELDS["nom"])),
            "birthdate": f"{int(canon['annee']):04d}-{int(canon['mois']):02d}-{int(canon['jour']):02d}",
            "gender": None if sexe is None else ("male" if sexe == "m" else "female"),
            "birthplace": None if place is None else str(place),
            "birthcountry": None if country is None else str(country),
            "preferred_username": fields.get("nomUsage") or None, "email": None}


def _is_country(code: str) -> bool:
    """An INSEE COG country code (99xxx), as opposed to a commune's."""
    return len(code) == 5 and code.startswith("99") and code.isdigit()


def _complete(identity: dict) -> dict:
    out = dict(identity)
    out["gender"] = out.get("gender") or "female"
    out["birthcountry"] = out.get("birthcountry") or FRANCE
    if out["birthcountry"] != FRANCE:
        # FranceConnect sends an empty birthplace for a birth abroad: it checks birthplace as a
        # commune code only when birthcountry is France's (france-connect/sources, OidcIdentityDto),
        # and API Particulier forwards it as codeCogInseeCommuneNaissance.
        out["birthplace"] = ""
    elif not out.get("birthplace"):
        out["birthplace"] = "75056"  # a commune is always known for a birth in France: Paris stands in
    out["preferred_username"] = out.get("preferred_username") or ""
    out["email"] = out.get("email") or \
        f"{_slug(out['given_name_array'][0])}.{_slug(out['family_name'])}@example.com".replace("-", "")
    return out


def _members(payload) -> list:
    """(role, key, label, birthdate) of every person a payload lists as allocataire or enfant."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for name, value in node.items():
                if name in _MEMBER_LISTS and isinstance(value, list):
                    found.extend((name, *person) for person in map(_member, value) if person)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(payload)
    return found


def _member(entry):
    if not isinstance(entry, dict):
        return None
    fields = dict(entry)
    date = _first(fields, _DATE_KEYS)
    if date is not None:
        fields["dateDeNaissance"] = date
    fields.setdefault("nomNaissance", fields.get("nom_naissance"))
    canon = canonical_identity({k: v for k, v in fields.items() if k not in ("date_naissance", "dateNaissance")})
    if not {"nom", "prenoms", "annee", "mois", "jour"} <= canon.keys():
        return None  # without a name, a shared first name and birthday would join strangers
    label = " ".join(str(fields.get(k) or "") for k in ("prenoms", "prenom", "nomNaissance") if fields.get(k))
    birthdate = f"{canon['annee']}-{int(canon['mois']):02d}-{int(canon['jour']):02d}" \
        if canon["mois"].isdigit() and canon["jour"].isdigit() else ""
    return _key(canon), label.strip().title(), birthdate


def _refusal(op, identity: dict):
    """(status, body) when production's organizer refuses the identity before any case is looked up
    (the DSNJ judges its age), as the API answers the citizen's call today; else None."""
    try:
        op.validate(MultiDict([("recipient", RECIPIENT)]), {"Authorization": "Bearer france-connect"},
                    france_connect_civility(identity))
    except ApiError as error:
        return errors.render(error, op.v3)
    return None


class Personas:
    """The directory of the fixtures currently served, rebuilt when they change."""

    def __init__(self, population, operations: dict):
        self._population = population
        self._operations = sorted((op for op in operations.values() if op.france_connect),
                                  key=lambda op: (op.path.startswith("/api/"), op.path))
        self._lock = threading.Lock()
        self._built_for = None
        self._directory = None  # built on first use: a start-up need not wait for it

    def current(self) -> Directory:
        fixtures = self._population.current
        with self._lock:
            if self._built_for is not fixtures:
                self._directory = self._build(fixtures)
                self._built_for = fixtures
            return self._directory

    def _build(self, fixtures) -> Directory:
        merged, order = {}, []  # person key -> [identity, description, token]

        def add(identity, description, token):
            canon = canonical_identity(identity)
            key = _key(canon)
            if key is None:
                return
            entry = merged.get(key)
            if entry is None:
                merged[key] = [dict(identity), description, token]
                order.append(key)
                return
            for claim, value in identity.items():
                if entry[0].get(claim) in (None, "") and value not in (None, ""):
                    entry[0][claim] = value
            entry[1] = entry[1] or description
            entry[2] = entry[2] or token

        for token, payload in sorted(fixtures.france_connect.items()):
            if isinstance(payload, dict) and payload.get("active", True):
                add({c: payload.get(c) for c in CLAIMS}, "", token)
        for op in self._operations:
            for case in fixtures.ordered.get(op.operation_id, ()):
                identity = identity_from_params(case.params)
                if identity is not None:
                    add(identity, case.description, None)

        citizens, seen_ids, candidates = {}, set(), self._candidates(fixtures)
        for key in order:
            identity, description, token = merged[key]
            identity = _complete(identity)
            base = token or _slug(identity["given_name_array"][0], identity["family_name"], identity["birthdate"])
            ident, n = base, 2
            while ident in seen_ids:
                ident, n = f"{base}-{n}", n + 1
            seen_ids.add(ident)
            citizen = Citizen(id=ident, identity=identity, description=description, token=token)
            self._answers(candidates, citizen)
            citizens[ident] = citizen
        households = self._households(citizens)
        ranked = sorted(citizens.values(), key=lambda c: (c.token is None, c.household, c.identity["family_name"]))
        return Directory(citizens={c.id: c for c in ranked}, households=households)

    def _answers(self, candidates, citizen):
        wanted = canonical_identity(citizen.identity)
        for op, by_name, anyone in candidates:
            # the API's own rule (FixtureSet.match_france_connect with no query): the first case,
            # in file order, whose civil status agrees; only the cases of this birth name are tried
            found = [(i, case) for i, canon, case in by_name.get(wanted.get("nom"), []) + anyone
                     if identity_agrees(wanted, canon)]
            if not found:
                continue
            case = min(found, key=lambda f: f[0])[1]
            refused = _refusal(op, citizen.identity)
            status, payload = refused or (case.status, case.payload)
            citizen.answers.append({"operation_id": op.operation_id, "path": op.path,
                                    "version": "v3+" if op.v3 else "v2", "status": status,
                                    "case": None if refused else case.id, "payload": payload})
            if not citizen.description:
                citizen.description = case.description

    def _candidates(self, fixtures) -> list:
        """Per FranceConnect route: its cases a call with no query can select, by birth name."""
        out = []
        for op in self._operations:
            by_name, anyone = {}, []
            for i, (canon, case) in enumerate(fixtures.identities.get(op.operation_id, ())):
                if other_params(case.key):
                    continue  # needs a query parameter (an ANTS plate number): not for a bare call
                if "nom" in canon:
                    by_name.setdefault(canon["nom"], []).append((i, canon, case))
                elif not canon:
                    anyone.append((i, canon, case))
            out.append((op, by_name, anyone))
        return out

    @staticmethod
    def _households(citizens: dict) -> list:
        """Co-allocataires of one dossier share a household; a citizen listed as a child joins the
        household listing them when only one does (fixtures reuse some children's names)."""
        parent = {}

        def find(x):
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        own = {c.id: _key(canonical_identity(c.identity)) for c in citizens.values()}
        listed, children_of = {}, {}
        for citizen in citizens.values():
            find(own[citizen.id])
            for answer in citizen.answers:
                if answer["status"] != 200:
                    continue
                for role, key, label, birthdate in _members(answer["payload"]):
                    listed.setdefault(own[citizen.id], {})[key] = (label, birthdate)
                    if role == "allocataires":
                        parent[find(key)] = find(own[citizen.id])
                    else:
                        children_of.setdefault(key, set()).add(own[citizen.id])
        for citizen in citizens.values():
            parents = {find(p) for p in children_of.get(own[citizen.id], ())} - {find(own[citizen.id])}
            if len(parents) == 1:
                parent[find(own[citizen.id])] = parents.pop()
        groups = {}
        for citizen in citizens.values():
            groups.setdefault(find(own[citizen.id]), []).append(citizen)
        households = []
        for number, (root, members) in enumerate(sorted(groups.items(), key=lambda g: (
                all(c.token is None for c in g[1]), g[1][0].identity["family_name"].lower()))):
            others, member_keys = {}, {own[c.id] for c in members}
            for citizen in members:
                citizen.household = number
                others.update((k, seen) for k, seen in listed.get(own[citizen.id], {}).items() if k not in member_keys)
            names = sorted({c.identity["family_name"] for c in members})
            households.append(Household(label="Foyer " + " / ".join(names), citizens=members,
                                        others=sorted(others.values(), key=lambda o: o[1])))
        return households
