"""`fixtures new` (a case to complete, from the operation's schema or from another case) and
`fixtures export --format staging` (cases in the official staging's layout, to propose upstream).

The staging layout: one folder per x-operationId, one YAML file per case with `params`, `status`
and `payload` as a JSON string, and a README.md per folder listing each case with its
parameters, its answer and a curl line.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from . import dates
from .files import CASE_SUFFIXES, SchemaChecker, read_case_file
from .fixtures import FRANCE_CONNECT
from ..production import clock

STAGING_URL = "https://staging.particulier.api.gouv.fr"
RECIPIENT = "13002526500013"  # the SIRET the official staging's curl lines use
# Filled into strings whose schema has a pattern and no example: the first one that fits.
PATTERNED = ("0751234A", "{{ today | school year }}", "01012000", "75056", "12345678901234")


class ScaffoldError(ValueError):
    pass


def find_operation(operations: dict, wanted: str):
    """An operation by x-operationId or by route (/v3/dss/quotient_familial/identite)."""
    if wanted in operations:
        return operations[wanted]
    for op in operations.values():
        if op.path == wanted:
            return op
    close = sorted(n for n in operations if wanted.lower() in n.lower())[:5]
    raise ScaffoldError(f"no operation {wanted!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                      " (an x-operationId or a route path)"))


# --- a skeleton from the schema ------------------------------------------------------------
def skeleton(schema: dict, name: str = ""):
    """A value that the schema accepts, for a person to complete."""
    if not isinstance(schema, dict):
        return None
    if "example" in schema:
        return schema["example"]
    if "enum" in schema:
        return schema["enum"][0]
    if "allOf" in schema:
        merged = {}
        for part in schema["allOf"]:
            value = skeleton(part, name)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    for choice in ("oneOf", "anyOf"):
        if schema.get(choice):
            return skeleton(schema[choice][0], name)
    kind = schema.get("type") or ("object" if "properties" in schema else None)
    if kind == "object":
        return {key: skeleton(sub, key) for key, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [skeleton(schema.get("items") or {}, name) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind == "integer" and name.lower().startswith(("annee", "mois")) and "naissance" not in name.lower():
        return "{{ today | year }}" if name.lower().startswith("annee") else "{{ today | month }}"
    if kind == "integer":
        return max(int(schema.get("minimum", 0)), 0 if "maximum" not in schema else min(0, int(schema["maximum"])))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return False
    if kind == "string":
        return _string(schema, name)
    return None


def _string(schema: dict, name: str):
    dated = schema.get("format") == "date" or "date" in name.lower()
    if dated and "naissance" in name.lower() and "pattern" not in schema:
        return "2000-01-01"  # a person's age grows: a birth date stays written out
    if dated and "pattern" not in schema:
        return "{{ today }}"
    if schema.get("format") == "date-time":
        return "{{ today | datetime }}"
    if "pattern" in schema:
        for candidate in PATTERNED:
            if re.search(schema["pattern"], str(dates.resolve(candidate, clock.today()))):
                return candidate
    if schema.get("maxLength", 99) < 16:  # a code: digits of the right length
        return "0" * max(schema.get("minLength", 1), 1)
    text = f"à compléter ({name})" if name else "à compléter"
    return text.ljust(schema.get("minLength", 0), "x")


NAME_PARAMS = ("nomNaissance", "nom", "nomFamille")


def skeleton_params(op, fixture_set=None) -> dict:
    """Parameters a request of this route may carry: those of the operation's first answered
    case (so they pass production's checks) under the birth name NOUVEAU; else the route's
    required parameters, filled from their schema. Values to replace, either way."""
    model = next((c for c in (fixture_set.ordered.get(op.operation_id, ()) if fixture_set else ())
                  if c.status == 200), None)
    if model is not None:
        params = json.loads(json.dumps(model.raw_params or model.params, default=str))  # templates stay templates
        for name in NAME_PARAMS:
            if name in params:
                params[name] = "NOUVEAU"
        return params
    return {p.key: skeleton(p.schema, p.key) for p in op.params
            if p.location == "query" and p.key != "recipient" and p.required}


def new_case(op, fixture_set=None) -> dict:
    return {"description": f"À compléter : nouveau cas de {op.method} {op.path}",
            "params": skeleton_params(op, fixture_set), "status": 200, "payload": skeleton(op.responses.get(200) or {})}


def case_text(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)


def free_name(folder: Path, stem: str) -> Path:
    """folder/stem.yaml, or stem_2.yaml... when taken."""
    path, n = folder / f"{stem}.yaml", 1
    while any((folder / f"{path.stem}{suffix}").exists() for suffix in CASE_SUFFIXES):
        n += 1
        path = folder / f"{stem}_{n}.yaml"
    return path


def like_file(fixture_dirs, op, wanted: str) -> Path:
    """The file of case `wanted` (a file name, its stem, or operation/file) of the operation."""
    folder_name, _, name = wanted.rpartition("/")
    if folder_name and folder_name != op.operation_id:
        raise ScaffoldError(f"{wanted}: this case is not one of {op.operation_id}")
    for root in map(Path, fixture_dirs):
        for candidate in (name, *(name + s for s in CASE_SUFFIXES)):
            path = root / op.operation_id / candidate
            if path.is_file():
                return path
    raise ScaffoldError(f"no case {name!r} in the {op.operation_id} folders of {', '.join(map(str, fixture_dirs))}")


def check(op, doc: dict, operations: dict) -> list:
    """[(json path, message)]: relative dates that do not parse, then the resolved payload's schema problems."""
    wrong = dates.problems(doc.get("payload"))
    if wrong:
        return wrong
    payload = dates.resolve(doc.get("payload"), clock.today())
    return SchemaChecker(operations).problems(op.operation_id, doc.get("status", 200), payload)


# --- export in the official staging's layout -----------------------------------------------
def export_staging(fixture_set, operations: dict, source_dirs, target: Path, day, only=(),
                   base_url: str = STAGING_URL) -> list:
    """Write every case (of `only` operations, when given) resolved on `day`; returns the files written."""
    target = Path(target)
    written, index = [], []
    for operation_id, cases in sorted(fixture_set.ordered.items()):
        if only and operation_id not in only:
            continue
        op = operations[operation_id]
        folder = target / operation_id
        folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for case in cases:
            payload = case.payload_on(day)
            path = folder / (case.file.stem + ".yaml")
            path.write_text(_staging_file(case.description, case.params, case.status, payload))
            written.append(path)
            entries.append(_readme_entry(path.name, case.status, case.description, case.params, payload,
                                         _curl(op, case.params, base_url)))
        title = op.raw.get("summary") or operation_id
        (folder / "README.md").write_text(f"# {title}\n" + "".join(entries))
        index.append(f"* [{title}]({operation_id}) (`{op.method} {op.path}`)\n")
    if not only or FRANCE_CONNECT in only:
        written += _export_france_connect(source_dirs, target, day, index)
    if index:
        (target / "README.md").write_text("# Payloads\n\nExported by particulier-sandbox "
                                          f"(relative dates resolved on {day.isoformat()}).\n\n" + "".join(index))
    return written


def _export_france_connect(source_dirs, target: Path, day, index: list) -> list:
    written, entries = [], []
    for root in map(Path, source_dirs):
        folder = root / FRANCE_CONNECT
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.suffix in CASE_SUFFIXES):
            data, problems = read_case_file(path)
            if data is None:
                continue
            out = target / FRANCE_CONNECT / path.name
            out.parent.mkdir(parents=True, exist_ok=True)
            description = str(dates.resolve(data.get("description") or "", day, strict=False)).strip()
            payload = dates.resolve(data.get("payload"), day, strict=False)
            out.write_text(_staging_file(description, data.get("params") or {}, data["status"], payload))
            written.append(out)
            entries.append(_readme_entry(out.name, data["status"], description, data.get("params") or {},
                                         payload, None))
    if entries:
        (target / FRANCE_CONNECT / "README.md").write_text("# Jetons FranceConnect de test\n" + "".join(entries))
        index.append(f"* [Jetons FranceConnect de test]({FRANCE_CONNECT})\n")
    return written


def _staging_file(description: str, params: dict, status: int, payload) -> str:
    head = yaml.safe_dump({"description": description, "params": params, "status": status},
                          sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 16)
    body = json.dumps(payload, ensure_ascii=False, indent=2, default=str)
    return "---\n" + head + "payload: |-\n" + "".join(f"  {line}\n" for line in body.splitlines())


def _details(summary: str, language: str, text: str) -> str:
    indented = "".join(f"  {line}\n" for line in text.splitlines())
    return (f"\n  <details><summary>{summary}</summary>\n  <p>\n\n  ```{language}\n{indented}  ```\n\n"
            "  </p>\n  </details>\n")


def _readme_entry(name, status, description, params, payload, curl) -> str:
    out = f"* [{name}]({name})\n\n  Status `{status}`\n\n  {description}\n"
    out += _details("Paramètres", "json", json.dumps(params, ensure_ascii=False, indent=2, default=str))
    out += _details("Réponse API", "json", json.dumps(payload, ensure_ascii=False, indent=2, default=str))
    if curl:
        out += _details("Commande cURL", "bash", curl)
    return out


def _curl(op, params: dict, base_url: str) -> str:
    url = base_url.rstrip("/") + op.path
    if op.france_connect_only:
        return f'curl -H "Authorization: Bearer $token_france_connect" --url "{url}?recipient={RECIPIENT}"'
    names = {p.key: p.name for p in op.params}
    pairs = [("recipient", RECIPIENT)] if op.v3 and "recipient" in names else []
    for key, value in params.items():
        name = names.get(key.removesuffix("[]"), key)
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, str(item).lower() if isinstance(item, bool) else str(item)))
    auth = '-H "Authorization: Bearer $token"' if op.v3 else '-H "X-Api-Key: $token"'
    data = " ".join("-d '" + f"{k}={v}".replace("'", "'\\''") + "'" for k, v in pairs)
    return f'curl {auth} \\\n  -G {data} \\\n  --url "{url}"' if data else f'curl {auth} \\\n  --url "{url}"'
