"""Which scopes a route needs, and the data mask a token's scopes put on a payload.

The catalogue (sandbox/production/data/operations.yml) is keyed by x-operationId, so it applies to the
bundled spec and to the upstream specs alike. Each scope lists the fields it reveals; a
payload keeps the union of the fields of the scopes held, as production's serializers
(siade/app/serializers/api_particulier/) do. Besides: `always` fields show whatever the scopes
(an attribute without condition), `grants` reveal fields only when ALL their scopes are held (a
detail inside a parent scope, a field behind two scopes), `withheld` fields never show (the
serializer does not emit them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ApiError
from .spec import read_yaml

CATALOGUE = Path(__file__).parent / "data" / "operations.yml"
KEEP = True



def _tree(paths) -> dict:
    """['a.b', 'c[].d'] -> {'a': {'b': KEEP}, 'c': {'[]': {'d': KEEP}}}"""
    tree = {}
    for path in paths:
        node = tree
        parts = path.replace("[]", ".[]").split(".")
        for i, part in enumerate(p for p in parts if p):
            last = i == len([p for p in parts if p]) - 1
            if node.get(part) is KEEP:
                break
            if last:
                node[part] = KEEP
            else:
                node = node.setdefault(part, {})
    return tree


def _merge(a, b):
    if a is KEEP or b is KEEP:
        return KEEP
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if k in out else v
    return out


def apply_tree(value, tree):
    """Keep only what `tree` names."""
    if tree is KEEP:
        return value
    if isinstance(value, list):
        sub = tree.get("[]")
        return [apply_tree(v, sub) for v in value] if sub is not None else value
    if isinstance(value, dict):
        return {k: apply_tree(v, tree[k]) for k, v in value.items() if k in tree}
    return value


_GONE = object()


def prune(value, drop, keep):
    """Remove what the scopes NOT held reveal, unless a held scope reveals it too.

    A field no scope claims stays: with every scope of the route the payload comes back
    exactly as written, even where a fixture carries a field the schema does not know.
    """
    if drop is None or keep is KEEP:
        return value
    if drop is KEEP:
        return _GONE if keep is None else apply_tree(value, keep)
    keep = keep or {}
    if isinstance(value, list):
        if "[]" not in drop:
            return value
        items = [prune(v, drop["[]"], keep.get("[]")) for v in value]
        items = [v for v in items if v is not _GONE]
        # a list whose every element was emptied by the mask is not shown at all
        return _GONE if value and not any(items) else items
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            kept = prune(v, drop.get(k), keep.get(k)) if k in drop else v
            if kept is not _GONE and not (k in drop and v and kept in ({}, [])):
                out[k] = kept
        return out if out or not value else _GONE
    return value


@dataclass
class OperationScopes:
    operation_id: str
    provider: str
    code_prefix: str
    mask_root: str
    special: str | None
    fields: dict  # scope -> tree
    grants: tuple = ()  # (frozenset of scopes all required, tree)
    always: dict | None = None  # tree shown whatever the scopes
    withheld: dict | None = None  # tree never shown

    @property
    def scopes(self) -> frozenset:
        return frozenset(self.fields)

    def mask(self, payload, held: frozenset):
        keep, drop = self.always, self.withheld
        rules = [(frozenset([scope]), tree) for scope, tree in sorted(self.fields.items())] + list(self.grants)
        for required, tree in rules:
            if required <= held:
                keep = tree if keep is None else _merge(keep, tree)
            else:
                drop = tree if drop is None else _merge(drop, tree)
        if self.mask_root:
            if not isinstance(payload, dict) or not isinstance(payload.get(self.mask_root), dict):
                return payload
            inner = prune(payload[self.mask_root], drop, keep)
            masked = {**payload, self.mask_root: {} if inner is _GONE else inner}
        else:
            masked = prune(payload, drop, keep)
            masked = {} if masked is _GONE else masked
        return SPECIAL_RULES[self.special](payload, masked, held) if self.special else masked


# siade/app/serializers/api_particulier/mesri/student_status/v2.rb: the regimes each inscription
# scope admits (the v2 payload names them `formation initiale` / `formation continue`).
MESRI_INITIALE = {"formation initiale", "formation initiale hors apprentissage",
                  "reprise d'études non financée sans convention", "contrat d'apprentissage"}
MESRI_CONTINUE = {"formation continue", "formation continue hors contrat professionnel",
                  "contrat de professionnalisation"}


def _mesri_inscriptions(original, masked, held):
    """v2 MESRI: an inscription shows only if a held scope admits it (etudiant: inscrit in formation
    initiale; autre: inscrit in formation continue; admission: admis); one that no held scope
    admits stays in the list as an empty object, as production answers."""
    if "inscriptions" not in masked:
        return masked
    kept = []
    # decide on the original inscription: the mask may have removed statut/regime themselves
    for source, inscription in zip(original.get("inscriptions") or [], masked["inscriptions"]):
        status = str(source.get("statut", "")).lower()
        regime = str(source.get("regime", "")).lower()
        admitted = (status == "inscrit" and regime in MESRI_INITIALE and "mesri_inscription_etudiant" in held) \
            or (status == "inscrit" and regime in MESRI_CONTINUE and "mesri_inscription_autre" in held) \
            or (status == "admis" and "mesri_admission" in held)
        kept.append(inscription if admitted else {})
    return {**masked, "inscriptions": kept}


SPECIAL_RULES = {"mesri_inscriptions": _mesri_inscriptions}


class ScopeCatalogue:
    def __init__(self, path: Path = CATALOGUE):
        data = read_yaml(path) if path.exists() else {}
        self.meanings = data.get("scopes") or {}
        self.operations = {}
        for operation_id, entry in (data.get("operations") or {}).items():
            self.operations[operation_id] = OperationScopes(
                operation_id=operation_id,
                provider=entry.get("provider", "fournisseur"),
                code_prefix=str(entry.get("code_prefix", "00")),
                mask_root=entry.get("mask_root") or "",
                special=entry.get("special"),
                fields={scope: _tree(paths or []) for scope, paths in (entry.get("scopes") or {}).items()},
                grants=tuple((frozenset(g["all_of"]), _tree(g["fields"])) for g in entry.get("grants") or ()),
                always=_tree(entry["always"]) if entry.get("always") else None,
                withheld=_tree(entry["withheld"]) if entry.get("withheld") else None)

    def all_scopes(self) -> list:
        names = set(self.meanings)
        for op in self.operations.values():
            names |= op.scopes
        return sorted(names)

    def get(self, operation_id) -> OperationScopes | None:
        return self.operations.get(operation_id)

    def authorize(self, identity, operation_id) -> frozenset:
        """The scopes that apply to this call; ApiError when the token holds none of the route's."""
        op = self.operations.get(operation_id)
        if op is None:
            return identity.scopes
        held = identity.scopes & op.scopes
        if not held:
            raise ApiError("insufficient_scopes")
        return held

    def describe(self) -> list:
        """[{name, description, provider, operations}] for /sandbox/scopes and the docs page."""
        users = {}
        for op in self.operations.values():
            for scope in op.scopes:
                users.setdefault(scope, []).append(op.operation_id)
        out = []
        for name in self.all_scopes():
            meaning = self.meanings.get(name) or {}
            if isinstance(meaning, str):
                meaning = {"description": meaning}
            out.append({"name": name, "description": meaning.get("description", ""),
                        "provider": meaning.get("provider", ""), "operations": sorted(users.get(name, []))})
        return out
