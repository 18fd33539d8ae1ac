"""The cell encoding: one case document <-> one Airtable record's fields, losing nothing.

A case's scalars become one text cell per dotted path (`payload.data.email`), lists and odd
mappings become JSON (or YAML flow) text, and a `_types` cell names the type of every cell that
is not a plain non-empty string, so 1, 1.0, true, "1", null, "" and dates all survive the round
trip. Pure functions, no I/O: docs/airtable.md describes the layout they implement.
"""
from __future__ import annotations

import datetime
import json
import re

import yaml

from ..production.spec import _Loader
from .common import SyncError, same

CASE, TYPES, STATUS = "case", "_types", "status"
KINDS = frozenset({"str", "int", "float", "bool", "null", "date", "datetime", "json", "yaml"})
_DATED = frozenset({"int", "date", "datetime"})  # the types a relative date may stand for
TOP_ORDER = ("description", "params", "status", "payload", "latency_ms")  # normal form of new files


def _nested(value) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return any(isinstance(v, (dict, list)) for v in items)


def _structured(column, value, where):
    """Lists and odd mappings as text: JSON when it reads back identical, else YAML flow."""
    try:
        text = json.dumps(value, ensure_ascii=False, indent=2 if _nested(value) else None)
        if same(json.loads(text), value):
            return text, "json"
    except (TypeError, ValueError):
        pass  # dates or non-string keys inside: JSON would change them
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, sort_keys=False,
                          width=1 << 16).strip()
    if same(yaml.load(text, Loader=_Loader), value):
        return text, "yaml"
    raise SyncError(f"{where}: field {column}: this value cannot be stored faithfully in a cell")


def _leaf(column, value, cells, types, where):
    if isinstance(value, str):
        if value == "":
            types[column] = "str"  # Airtable drops empty cells: the type keeps the empty string
        elif value != value.strip() or "\r" in value:
            cells[column], types[column] = json.dumps(value, ensure_ascii=False), "json"  # keeps every blank
        else:
            cells[column] = value
    elif isinstance(value, bool):
        cells[column], types[column] = "true" if value else "false", "bool"
    elif isinstance(value, int):
        cells[column], types[column] = str(value), "int"
    elif isinstance(value, float):
        cells[column], types[column] = repr(value), "float"
    elif value is None:
        types[column] = "null"
    elif isinstance(value, datetime.datetime):
        cells[column], types[column] = value.isoformat(), "datetime"
    elif isinstance(value, datetime.date):
        cells[column], types[column] = value.isoformat(), "date"
    else:
        cells[column], types[column] = _structured(column, value, where)


def _columnable(value) -> bool:
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) and k and "." not in k for k in value))


def _walk(path, value, cells, types, where):
    if _columnable(value):
        for key, item in value.items():
            _walk(f"{path}.{key}", item, cells, types, where)
    else:
        _leaf(path, value, cells, types, where)


def to_record(case: str, doc: dict, where: str) -> dict:
    """A case document -> the record's cells (empty cells left out, as Airtable returns them)."""
    cells, types = {}, {}
    for key, value in doc.items():
        if not isinstance(key, str) or not key or "." in key or key in (CASE, TYPES):
            raise SyncError(f"{where}: top-level key {key!r} cannot be a column")
        if key == STATUS:
            if type(value) is not int:
                raise SyncError(f"{where}: status must be an integer HTTP status code")
            cells[STATUS] = value
        else:
            _walk(key, value, cells, types, where)
    record = {CASE: case, **cells}
    if types:
        record[TYPES] = json.dumps(types, ensure_ascii=False, indent=0)
    return record


def _cell_text(column, cell, where):
    if isinstance(cell, str):
        return cell
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, int) or (isinstance(cell, float) and cell.is_integer()):
        return str(int(cell))
    if isinstance(cell, float):
        return repr(cell)
    raise SyncError(f"{where}, field {column}: unsupported cell content {type(cell).__name__} "
                    "(use a text field)")


def _decode(column, cell, kind, where):
    """(present, value) of one cell, following its `_types` entry."""
    if cell is None or cell == "":
        if kind == "null":
            return True, None
        if kind == "str":
            return True, ""
        return False, None  # an empty cell drops the key
    text = _cell_text(column, cell, where)
    problem = None
    if column == STATUS:
        if re.fullmatch(r"\s*\d{3}\s*", text):
            return True, int(text)
        problem = f"{text!r} is not an HTTP status code"
    elif kind in (None, "str", "null") or (kind in _DATED and "{{" in text):
        # a relative date typed over a number or a date ({{ today | year }}): kept as its text,
        # the sandbox resolves it on the day of each answer
        return True, text
    elif kind == "int":
        if re.fullmatch(r"\s*[+-]?\d+\s*", text):
            return True, int(text)
        problem = f"{text!r} is not an integer (_types says int)"
    elif kind == "float":
        try:
            return True, float(text)
        except ValueError:
            problem = f"{text!r} is not a number (_types says float)"
    elif kind == "bool":
        if text.strip().lower() in ("true", "false"):
            return True, text.strip().lower() == "true"
        problem = f"{text!r} is not a boolean: write true or false (_types says bool)"
    elif kind in ("date", "datetime"):
        try:
            parse = datetime.date if kind == "date" else datetime.datetime
            return True, parse.fromisoformat(text.strip())
        except ValueError:
            problem = f"{text!r} is not an ISO {kind} (_types says {kind})"
    elif kind == "json":
        try:
            return True, json.loads(text)
        except ValueError as exc:
            problem = f"not valid JSON ({exc})"
    else:  # yaml
        try:
            return True, yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            problem = f"not valid YAML ({' '.join(str(exc).split())})"
    raise SyncError(f"{where}, field {column}: {problem}")


def _types_of(fields, where) -> dict:
    raw = fields.get(TYPES)
    if raw in (None, ""):
        return {}
    try:
        types = json.loads(raw) if isinstance(raw, str) else None
    except ValueError as exc:
        raise SyncError(f"{where}, field {TYPES}: not valid JSON ({exc})") from None
    if not isinstance(types, dict):
        raise SyncError(f"{where}, field {TYPES}: must be a JSON object of column -> type")
    for column, kind in types.items():
        if kind not in KINDS:
            raise SyncError(f"{where}, field {TYPES}: {column}: unknown type {kind!r} "
                            f"(one of {', '.join(sorted(KINDS))})")
    return types


def _put(doc, column, value, where):
    parts = column.split(".")
    node = doc
    for depth, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict) or not part:
            raise SyncError(f"{where}, field {column}: {'.'.join(parts[:depth + 1])} already holds a value")
    if parts[-1] in node or not parts[-1]:
        raise SyncError(f"{where}, field {column}: conflicts with another field holding the same path")
    node[parts[-1]] = value


def column_order(columns) -> list:
    """Columns with the top level in the normal form's order, column order kept inside each."""
    rank = {name: i for i, name in enumerate(TOP_ORDER)}
    return sorted(columns, key=lambda c: rank.get(c.split(".", 1)[0], len(TOP_ORDER)))


def from_record(fields: dict, columns: list, where: str) -> dict:
    """A record's cells -> the case document. `columns`: the table's, through column_order()."""
    types = _types_of(fields, where)
    extra = (fields.keys() | types.keys()) - set(columns)
    order = column_order(list(columns) + sorted(extra)) if extra else columns
    doc = {}
    for column in order:
        if column in (CASE, TYPES):
            continue
        present, value = _decode(column, fields.get(column), types.get(column), where)
        if present:
            _put(doc, column, value, where)
    return doc
