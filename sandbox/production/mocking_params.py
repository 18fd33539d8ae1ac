"""The key production's staging finds a mock case under (rules: data/mocking_params.yml).

Production's MockService looks a staging call up by the provider's `MakeRequest#mocking_params`
(`mocking_params_v2` on v2): what the controller and the organizer read, each string lower-cased,
compared as one query string. `reader(operation_id).key(sent)` is that key, as a frozenset of
(key name, tuple of lower-cased strings); `sent` is a request's parameters or a case file's, both
as `{name without []: [values as strings]}` (from_args, from_case): one rule for both sides.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .parameter_checks import blank, to_i  # Ruby's blank? and String#to_i, as the checks read them

RULES_FILE = Path(__file__).parent / "data" / "mocking_params.yml"
NEVER_READ = frozenset({"recipient", "token"})  # MakeRequest#mocking_params drops recipient
READS = ("text", "integer", "list", "words", "date", "date_part")


# --- what was sent, as strings ------------------------------------------------------------
def _strings(value) -> list:
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, bool):  # YAML true is the query's `true`
        return ["true" if value else "false"]
    if value is None:
        return [""]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return [value.isoformat()]
    return [str(value)]


def from_case(params: dict) -> dict:
    """A case file's params (YAML values, `name` or `name[]`) as a client sends them."""
    sent = {}
    for name, value in (params or {}).items():
        sent.setdefault(str(name).removesuffix("[]"), []).extend(_strings(value))
    return sent


def from_args(args) -> dict:
    """A request's query (a werkzeug MultiDict): `prenoms[]=A&prenoms[]=B` -> {"prenoms": [A, B]}."""
    sent = {}
    for name in args.keys():
        sent.setdefault(name.removesuffix("[]"), []).extend(args.getlist(name))
    return sent


def _birth_date(text: str) -> str:
    """Civility::FormatDateNaissance of a YYYY-MM-DD value: each part to_i, zero-padded."""
    parts = (text.split("-") + ["", "", ""])[:3]
    year, month, day = (to_i(p) for p in parts)
    if not year or not month:
        day = 0
    if not year:
        month = 0
    return f"{year:04d}-{month:02d}-{day:02d}"


# --- the rules -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Key:
    name: str
    param: str
    read: str = "text"
    part: int = 0
    zero_absent: bool = False
    only_if: tuple = ()  # ((param, lower-cased value), ...)

    def value(self, sent: dict):
        """The key's value (a tuple of strings), or None when it is in no key (absent, blank)."""
        for other, wanted in self.only_if:
            values = sent.get(other)
            if not values or values[-1].lower() != wanted:
                return None
        values = sent.get(self.param)
        if not values:
            return None
        if self.read == "list":
            items = tuple(v.lower() for v in values if not blank(v))
            return items or None
        last = values[-1]  # a repeated scalar keeps its last value, as Rails' params
        if blank(last):
            return None
        if self.read == "integer":
            number = to_i(last)
            return None if number == 0 and self.zero_absent else (str(number),)
        if self.read == "words":
            return tuple(last.lower().split())
        if self.read == "date":
            return (_birth_date(last),)
        if self.read == "date_part":
            parts = last.split("-")
            return (parts[self.part].lower(),) if self.part < len(parts) and not blank(parts[self.part]) else None
        return (last.lower(),)


@dataclass(frozen=True)
class Variant:
    keys: tuple
    if_present: str | None = None
    france_connect: bool = False

    def applies(self, sent: dict, case: bool, france_connect: bool = False) -> bool:
        if self.france_connect and not case:
            return france_connect  # a FranceConnect call: the identity, whatever the query holds
        if self.if_present is None:
            return True
        return any(not blank(v) for v in sent.get(self.if_present, ()))


@dataclass
class Reader:
    """How one operation's provider builds its mock key."""
    provider: str
    variants: tuple
    source: str = ""
    params: dict = field(default_factory=dict)  # key name -> the request parameter it is read from
    names: dict = field(default_factory=dict)   # lower-cased parameter -> as the route spells it

    def key(self, sent: dict, case: bool = False, france_connect: bool = False) -> frozenset:
        """The key of a request (`case` False) or of a case file's params (`case` True: a case
        may also be written with a FranceConnect identity's claims, which no request carries).
        `france_connect`: the request is a FranceConnect call, whose identity comes with the token
        (on v2 etudiants an `ine` sent with it is not read: the controller checks FranceConnect first)."""
        if case:  # a case file's names in any letter case (a spreadsheet's `NomNaissance`); a
            # request's are Rails' params, read as spelled
            sent = {self.names.get(name.lower(), name): values for name, values in sent.items()}
        variant = next(v for v in self.variants if v.applies(sent, case, france_connect))
        out = []
        for rule in variant.keys:
            value = rule.value(sent)
            if value is not None:
                out.append((rule.name, value))
        return frozenset(out)

    def param_of(self, key_name: str) -> str:
        return self.params.get(key_name, key_name)


class EverythingSent(Reader):
    """An operation no provider lists (a spec of one's own): every parameter sent is read."""

    def __init__(self):
        super().__init__(provider="", variants=())

    def key(self, sent: dict, case: bool = False, france_connect: bool = False) -> frozenset:
        out = []
        for name, values in sent.items():
            if name in NEVER_READ:
                continue
            items = tuple(v.lower() for v in values if not blank(v))
            if items:
                out.append((name, items))
        return frozenset(out)


def _key(name: str, spec: dict, where: str) -> Key:
    spec = spec or {}
    unknown = set(spec) - {"param", "read", "part", "zero_absent", "only_if"}
    read = spec.get("read", "text")
    if unknown or read not in READS:
        raise ValueError(f"{where}.{name}: unknown {sorted(unknown) or read!r}")
    only_if = tuple((str(p), str(v).lower()) for p, v in (spec.get("only_if") or {}).items())
    return Key(name=name, param=str(spec.get("param", name)), read=read, part=int(spec.get("part", 0)),
               zero_absent=bool(spec.get("zero_absent", False)), only_if=only_if)


def load(path=RULES_FILE) -> dict:
    """{operation id: Reader} from the table."""
    with open(path, "rb") as f:
        rules = yaml.safe_load(f)
    readers = {}
    for provider, entry in rules["providers"].items():
        raw = entry.get("variants") or [{"keys": entry["keys"]}]
        variants, params = [], {}
        for i, variant in enumerate(raw):
            keys = tuple(_key(name, spec, f"{provider}.variants[{i}]") for name, spec in variant["keys"].items())
            params.update((k.name, k.param) for k in keys if not variant.get("france_connect"))
            variants.append(Variant(keys=keys, if_present=variant.get("if_present"),
                                    france_connect=bool(variant.get("france_connect"))))
        if variants[-1].if_present is not None:
            raise ValueError(f"{provider}: the last variant must have no condition")
        names = {p.lower(): p for v in variants for k in v.keys for p in (k.param, *(o for o, _ in k.only_if))}
        names.update((v.if_present.lower(), v.if_present) for v in variants if v.if_present)
        reader = Reader(provider=provider, variants=tuple(variants), source=entry.get("source", ""), params=params,
                        names=names)
        for operation_id in entry["operations"]:
            if operation_id in readers:
                raise ValueError(f"{operation_id}: listed by {readers[operation_id].provider} and {provider}")
            readers[operation_id] = reader
    return readers


READERS = load()
EVERYTHING = EverythingSent()


def reader(operation_id: str) -> Reader:
    return READERS.get(operation_id, EVERYTHING)
