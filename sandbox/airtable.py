"""Airtable sync: edit the virtual population in a spreadsheet, both ways, losing nothing.

One table per fixture folder (named after the operation's x-operationId; `france_connect` for
the FranceConnect tokens), one record per case file. The layout and its type-preserving cell
encoding are described in docs/airtable.md; in short:

  case           the file name stem: the stable key upserts merge on
  status         an integer cell
  a.b.c          one text cell per scalar at that dotted path (`params.ine`, `payload.data.email`);
                 lists, empty mappings and mappings whose keys cannot be columns are JSON text
  _types         a JSON object naming the type of every cell that is not a plain non-empty string
                 ("int", "float", "bool", "null", "date", "datetime", "json", "yaml", "str" for "")

A pull never half-writes: every changed folder is staged beside the target, checked with the
sandbox's own fixture loader, then swapped in by rename. A file whose content did not change
keeps its bytes (and comments), so a push followed by a pull leaves the folder identical.

pyairtable is imported lazily: it is slow to import and only the sync needs it.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import difflib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import fixtures as fixture_module
from .spec import _Loader

logger = logging.getLogger("sandbox.airtable")

CASE, TYPES, STATUS = "case", "_types", "status"
FRANCE_CONNECT = fixture_module.FRANCE_CONNECT
CASE_SUFFIXES = fixture_module.CASE_SUFFIXES
DEFAULT_ENDPOINT = "https://api.airtable.com"
RATE = 5.0          # Airtable allows 5 requests per second per base
RETRIES = 6         # a 429 from Airtable asks for a 30 s pause: 0+2+4+8+16+30 s of backoff covers it
BACKOFF = 1.0
BATCH = 10          # Airtable's limit of records per write request
PAGE_SIZE = 100     # Airtable's largest page
KINDS = frozenset({"str", "int", "float", "bool", "null", "date", "datetime", "json", "yaml"})
TOP_ORDER = ("description", "params", "status", "payload", "latency_ms")  # normal form of new files
CASE_NAME = re.compile(r"[^/\\\x00]{1,200}")


class SyncError(Exception):
    """Something a person must fix; the message says what and where, never the token."""


def scrub(text: str, token: str | None = None) -> str:
    """The message with the Airtable token masked, wherever it came from."""
    token = token or os.environ.get("AIRTABLE_TOKEN")
    return text.replace(token, "[AIRTABLE_TOKEN]") if token else text


def same(a, b) -> bool:
    """Deep equality that tells 1 from 1.0 from True and '1' from 1: types must survive."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return a == b


# --- cells: a case document <-> one record's fields ----------------------------------------
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
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 16).strip()
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
    elif kind in (None, "str", "null"):
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


def from_record(fields: dict, columns: list, where: str) -> dict:
    """A record's cells -> the case document, keys in column order, top level in the normal form."""
    types = _types_of(fields, where)
    order = list(columns) + sorted(set(fields) - set(columns))
    order.sort(key=lambda c: TOP_ORDER.index(c.split(".")[0]) if c.split(".")[0] in TOP_ORDER
               else len(TOP_ORDER))  # stable: keeps column order inside each top-level key
    doc = {}
    for column in order:
        if column in (CASE, TYPES):
            continue
        present, value = _decode(column, fields.get(column), types.get(column), where)
        if present:
            _put(doc, column, value, where)
    return doc


# --- case files ----------------------------------------------------------------------------
_READ_CACHE = {}  # (path, size, mtime) -> document: the sync compares every file on every tick


def read_case(path: Path) -> dict:
    """A case file as the sandbox reads it (a JSON-string payload decoded). Do not mutate."""
    try:
        st = path.stat()
    except OSError as exc:
        raise SyncError(f"{path}: cannot read: {exc.strerror}") from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _READ_CACHE:
        if len(_READ_CACHE) > 20000:
            _READ_CACHE.clear()
        _READ_CACHE[key] = _read_case(path)
    return _READ_CACHE[key]


def _read_case(path: Path) -> dict:
    try:
        data = yaml.load(path.read_bytes(), Loader=_Loader)
    except (OSError, yaml.YAMLError) as exc:
        raise SyncError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise SyncError(f"{path}: a case file must be a mapping with description, params, status, payload")
    if isinstance(data.get("payload"), str):
        try:
            decoded = json.loads(data["payload"])
        except ValueError:
            decoded = None
        if isinstance(decoded, (dict, list)):
            data["payload"] = decoded
    return data


def render(doc: dict) -> bytes:
    """The normal form of a case file (docs/airtable.md), checked to read back identical."""
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 16)
    if not same(yaml.load(text, Loader=_Loader), doc):
        raise SyncError("internal: a case does not survive YAML rendering")  # guard: never lose data
    return text.encode()


def _reorder(new, old):
    """`new` with the key order of the file it replaces, so an edit makes a small diff."""
    if isinstance(new, dict) and isinstance(old, dict):
        keys = [k for k in old if k in new] + [k for k in new if k not in old]
        return {k: _reorder(new[k], old.get(k)) for k in keys}
    if isinstance(new, list) and isinstance(old, list):
        return [_reorder(n, old[i] if i < len(old) else None) for i, n in enumerate(new)]
    return new


def case_files(folder: Path) -> dict:
    """stem -> path of the folder's case files."""
    found = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix in CASE_SUFFIXES and path.is_file():
                if path.stem in found:
                    raise SyncError(f"{folder}: {found[path.stem].name} and {path.name} are the same case")
                found[path.stem] = path
    return found


def synced_folders(target: Path, operations: dict) -> tuple[list, list]:
    """(folders that map to a table, folders skipped because no loaded spec serves them)."""
    if not target.is_dir():
        raise SyncError(f"{target}: fixture folder not found")
    kept, skipped = [], []
    for folder in sorted(p for p in target.iterdir() if p.is_dir() and not p.name.startswith(".")):
        (kept if folder.name in operations or folder.name == FRANCE_CONNECT else skipped).append(folder.name)
    return kept, skipped


# --- table layout --------------------------------------------------------------------------
def field_spec(name: str) -> dict:
    if name == CASE:
        return {"name": CASE, "type": "singleLineText"}
    if name == STATUS:
        return {"name": STATUS, "type": "number", "options": {"precision": 0}}
    return {"name": name, "type": "multilineText"}  # long text: keeps line breaks, JSON, any string


def layout(table: str, records: list, operations: dict) -> list:
    """The table's columns: case first, then every column a case uses (first seen first), the
    spec's request parameters (so new records can be typed in), status, and _types last."""
    columns = {CASE: None, "description": None}
    for record in records:
        columns.update(dict.fromkeys(c for c in record if c not in (CASE, TYPES)))
    op = operations.get(table)
    for param in (op.params if op else ()):
        if param.location == "query" and param.key != "recipient":
            columns.setdefault(f"params.{param.key}")
    columns.setdefault(STATUS)
    columns[TYPES] = None
    return list(columns)


# --- the client ----------------------------------------------------------------------------
_CLIENT = None


def _client_class():
    """pyairtable's Api, throttled to the per-base rate before every request."""
    global _CLIENT
    if _CLIENT is None:
        from pyairtable import Api

        class ThrottledApi(Api):
            def __init__(self, token, *, rate, **kwargs):
                super().__init__(token, **kwargs)
                self._gap, self._next, self._lock = 1.0 / rate, 0.0, threading.Lock()

            def request(self, *args, **kwargs):
                with self._lock:
                    now = time.monotonic()
                    if self._next > now:
                        time.sleep(self._next - now)
                    self._next = max(now, self._next) + self._gap
                return super().request(*args, **kwargs)

            def __repr__(self):
                return "<ThrottledApi>"  # never the token
        _CLIENT = ThrottledApi
    return _CLIENT


def connect(env=os.environ):
    """An Api from AIRTABLE_TOKEN / AIRTABLE_ENDPOINT_URL (+ SANDBOX_AIRTABLE_RATE, _BACKOFF)."""
    from pyairtable import retry_strategy
    token = env.get("AIRTABLE_TOKEN")
    if not token:
        raise SyncError("AIRTABLE_TOKEN is not set: create a personal access token with the "
                        "data.records and schema.bases scopes and export it")
    try:
        rate = float(env.get("SANDBOX_AIRTABLE_RATE") or RATE)
        backoff = float(env.get("SANDBOX_AIRTABLE_BACKOFF") or BACKOFF)
    except ValueError:
        raise SyncError("SANDBOX_AIRTABLE_RATE and SANDBOX_AIRTABLE_BACKOFF must be numbers") from None
    retry = retry_strategy(total=RETRIES, backoff_factor=backoff, backoff_max=30)
    return _client_class()(token, rate=rate, retry_strategy=retry, timeout=(10, 60),
                           endpoint_url=(env.get("AIRTABLE_ENDPOINT_URL") or DEFAULT_ENDPOINT).rstrip("/"))


def describe(exc: Exception) -> str:
    """What went wrong talking to Airtable, for a person (and without the token)."""
    import requests
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        try:
            error = exc.response.json().get("error")
        except ValueError:
            error = None
        kind, message = (error.get("type"), error.get("message")) if isinstance(error, dict) else (error, "")
        text = f"Airtable answered {status} {kind or ''}: {message or exc.response.reason}"
        if status == 401:
            text += " (check AIRTABLE_TOKEN)"
        elif status in (403, 404):
            text += " (check the base id and the token's access to it)"
        return scrub(" ".join(text.split()))
    if isinstance(exc, requests.exceptions.RetryError):
        return (f"Airtable kept answering 429 Too Many Requests after {RETRIES} retries with backoff; "
                "try again later")
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                        requests.Timeout)):
        return f"the connection to Airtable was lost ({type(exc).__name__})"
    return scrub(f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def talking_to_airtable(doing: str):
    """Turn the client's exceptions into one SyncError saying what was being done."""
    import requests
    try:
        yield
    except requests.RequestException as exc:
        raise SyncError(f"{doing}: {describe(exc)}") from None


class _NoProgress:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n, current_item=None):
        pass


# --- init / push ---------------------------------------------------------------------------
@dataclass
class TablePlan:
    table: str
    new_table: bool = False
    new_fields: list = field(default_factory=list)
    create: list = field(default_factory=list)      # case names
    update: list = field(default_factory=list)
    delete: list = field(default_factory=list)      # (case, record id)
    stray: list = field(default_factory=list)       # cases in Airtable only, kept without --prune
    unchanged: int = 0
    writes: list = field(default_factory=list)      # the records to upsert


def local_records(target: Path, operations: dict) -> tuple[dict, list]:
    """{table: {case: record}} for every synced folder, and the skipped folders."""
    kept, skipped = synced_folders(target, operations)
    tables = {}
    for name in kept:
        tables[name] = {stem: to_record(stem, read_case(path), f"{name}/{path.name}")
                        for stem, path in case_files(target / name).items()}
    return tables, skipped


def _existing_schema(base):
    return {t.name: t for t in base.schema(force=True).tables}


def ensure_layout(base, wanted: dict, dry_run: bool, progress=_NoProgress) -> list:
    """Create missing tables and fields; returns [TablePlan] with new_table/new_fields filled."""
    with talking_to_airtable("reading the base schema"):
        schema = _existing_schema(base)
    plans = []
    with progress(label="airtable init", length=len(wanted)) as bar:
        for table, columns in wanted.items():
            plan = TablePlan(table)
            plans.append(plan)
            existing = schema.get(table)
            if existing is None:
                plan.new_table, plan.new_fields = True, list(columns)
                if not dry_run:
                    with talking_to_airtable(f"creating table {table}"):
                        base.create_table(table, [field_spec(c) for c in columns],
                                          description="particulier-sandbox fixtures: one record per case file")
            else:
                have = {f.name for f in existing.fields}
                plan.new_fields = [c for c in columns if c not in have]
                if plan.new_fields and not dry_run:
                    handle = base.table(existing.id)
                    for column in plan.new_fields:
                        spec = field_spec(column)
                        with talking_to_airtable(f"adding field {column} to table {table}"):
                            handle.create_field(column, spec["type"], options=spec.get("options"))
            bar.update(1, table)
    return plans


def init(base_id: str, target: Path, operations: dict, *, dry_run=False, progress=_NoProgress, api=None) -> list:
    local, _ = local_records(target, operations)
    wanted = {t: layout(t, list(records.values()), operations) for t, records in local.items()}
    return ensure_layout((api or connect()).base(base_id), wanted, dry_run, progress)


def _visible(record: dict) -> dict:
    return {k: v for k, v in record.items() if v not in (None, "")}


def plan_table(plan: TablePlan, wanted: dict, existing: list, prune: bool):
    by_case = {}
    for record in existing:
        case = record["fields"].get(CASE)
        if case in by_case:
            raise SyncError(f"table {plan.table}: records {by_case[case]['id']} and {record['id']} have the same "
                            f"case {case!r}; delete one in Airtable")
        by_case[case] = record
    for case, cells in wanted.items():
        current = by_case.get(case)
        if current is None:
            plan.create.append(case)
            plan.writes.append({"fields": cells})
        elif _visible(cells) != current["fields"]:
            plan.update.append(case)
            plan.writes.append({"fields": cells})
        else:
            plan.unchanged += 1
    for case, record in by_case.items():
        if case not in wanted:
            (plan.delete.append((case, record["id"])) if prune else plan.stray.append(case or record["id"]))


def push(base_id: str, target: Path, operations: dict, *, prune=False, dry_run=False,
         progress=_NoProgress, api=None) -> list:
    """YAML -> Airtable: create what is missing, upsert what differs, delete strays on --prune."""
    local, _ = local_records(target, operations)
    base = (api or connect()).base(base_id)
    wanted = {t: layout(t, list(records.values()), operations) for t, records in local.items()}
    plans = ensure_layout(base, wanted, dry_run, progress)
    with talking_to_airtable("reading the base schema"):
        schema = _existing_schema(base)
    with progress(label="airtable push: reading", length=len(plans)) as bar:
        for plan in plans:
            existing = []
            if plan.table in schema:
                with talking_to_airtable(f"reading table {plan.table}"):
                    existing = base.table(schema[plan.table].id).all(page_size=PAGE_SIZE)
            plan_table(plan, local[plan.table], existing, prune)
            bar.update(1, plan.table)
    if dry_run:
        return plans
    total = sum(len(p.writes) + len(p.delete) for p in plans)
    with progress(label="airtable push: writing", length=total) as bar:
        for plan in plans:
            if not (plan.writes or plan.delete):
                continue
            table = base.table(schema[plan.table].id)
            for start in range(0, len(plan.writes), BATCH):
                chunk = plan.writes[start:start + BATCH]
                names = ", ".join(r["fields"][CASE] for r in chunk)
                with talking_to_airtable(f"writing table {plan.table} (cases {names})"):
                    # replace=True: a cell whose key left the file is emptied, not left stale
                    table.batch_upsert(chunk, key_fields=[CASE], replace=True)
                bar.update(len(chunk), plan.table)
            for start in range(0, len(plan.delete), BATCH):
                chunk = plan.delete[start:start + BATCH]
                with talking_to_airtable(f"deleting from table {plan.table} (cases "
                                         f"{', '.join(c for c, _ in chunk)})"):
                    table.batch_delete([record_id for _, record_id in chunk])
                bar.update(len(chunk), plan.table)
    return plans


# --- pull ----------------------------------------------------------------------------------
@dataclass
class FolderPlan:
    folder: str
    files: dict = field(default_factory=dict)     # file name -> new bytes, or None to delete
    origin: dict = field(default_factory=dict)    # file name -> (record id, case, columns)
    unchanged: int = 0


def fetch(base, operations: dict, progress=_NoProgress) -> dict:
    """{table name: (column names, [records])} for every table that maps to a fixture folder."""
    with talking_to_airtable("reading the base schema"):
        tables = [t for t in base.tables(force=True) if t.name in operations or t.name == FRANCE_CONNECT]
    fetched = {}
    with progress(label="airtable pull", length=len(tables)) as bar:
        for table in tables:
            with talking_to_airtable(f"reading table {table.name}"):
                records = table.all(page_size=PAGE_SIZE)
            fetched[table.name] = ([f.name for f in table.schema().fields], records)
            bar.update(1, table.name)
    return fetched


def plan_folder(target: Path, table: str, columns: list, records: list) -> FolderPlan:
    plan = FolderPlan(table)
    existing = case_files(target / table)
    if not records and existing:
        raise SyncError(f"table {table} is empty: refusing to delete the {len(existing)} cases of "
                        f"{target / table} (push them first, or delete the files by hand)")
    seen = {}
    for record in records:
        fields = record.get("fields") or {}
        case = fields.get(CASE)
        where = f"table {table}, record {record.get('id')} (case {case})"
        if not isinstance(case, str) or not CASE_NAME.fullmatch(case) or case.startswith("."):
            raise SyncError(f"{where}, field {CASE}: must be a file name (no '/', not starting with '.')")
        if case in seen:
            raise SyncError(f"{where}, field {CASE}: record {seen[case]} has the same case")
        seen[case] = record.get("id")
        doc = from_record(fields, columns, where)
        path = existing.get(case)
        name = path.name if path else case + (".yml" if table == FRANCE_CONNECT else ".yaml")
        plan.origin[name] = (record.get("id"), case, columns)
        old = None
        if path:
            with contextlib.suppress(SyncError):  # an unreadable file is simply replaced
                old = read_case(path)
        if old is not None and same(doc, old):
            plan.unchanged += 1  # same content: keep the file's bytes, comments and style
            continue
        plan.files[name] = render(_reorder(doc, old) if old is not None else doc)
    for stem, path in existing.items():
        if stem not in seen:
            plan.files[path.name] = None
    return plan


def _field_for(where: str, columns: list) -> str:
    """A loader path ($.payload.data.x[0].y) -> the column that holds it."""
    if where in ("$", ""):
        return "(the whole record)"
    parts = re.split(r"\.|\[", where.removeprefix("$."))
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in columns:
            return candidate
    return parts[0]


def _problem_key(problem, root: Path):
    path = Path(problem.file)
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    return (str(rel), problem.where, problem.message)


def validate(stage: Path, target: Path, plans: list, operations: dict):
    """Load the staged folders with the sandbox's own loader; refuse problems the live set lacks."""
    folders = [p.folder for p in plans]
    live = Path(tempfile.mkdtemp(prefix=".airtable-live-", dir=stage))
    for folder in folders:  # the live versions of exactly these folders, for the baseline
        if (target / folder).is_dir():
            (live / folder).symlink_to((target / folder).resolve(), target_is_directory=True)
    baseline = {_problem_key(p, live) for p in fixture_module.load([live], operations).problems}
    shutil.rmtree(live)
    candidate = fixture_module.load([stage], operations)
    by_folder = {p.folder: p for p in plans}
    faults = []
    for problem in candidate.problems:
        if _problem_key(problem, stage) in baseline:
            continue  # already there before the pull: not this pull's doing
        path = Path(problem.file)
        plan = by_folder.get(path.parent.name)
        record_id, case, columns = (plan.origin.get(path.name) if plan else None) or (None, path.stem, [])
        faults.append(f"table {path.parent.name}, record {record_id} (case {case}), "
                      f"field {_field_for(problem.where, columns)}: {problem.message}")
    if faults:
        raise SyncError("the records are not valid fixtures, nothing was written:\n  " + "\n  ".join(faults))


def stage(stage_root: Path, target: Path, plans: list):
    """Full copies of the changed folders, with the changes applied, under stage_root."""
    for plan in plans:
        live, staged = target / plan.folder, stage_root / plan.folder
        if live.is_dir():
            shutil.copytree(live, staged, symlinks=True)  # copy2 keeps mtimes: unchanged files look unchanged
        else:
            staged.mkdir()
        for name, content in plan.files.items():
            if content is None:
                (staged / name).unlink()
            else:
                (staged / name).write_bytes(content)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux renameat2 RENAME_EXCHANGE), if possible."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_in(stage_root: Path, target: Path, plans: list):
    """Put every staged folder in place by rename; undo them all if one fails."""
    done = []  # (live, old copy or None)
    try:
        for plan in plans:
            live, staged = target / plan.folder, stage_root / plan.folder
            if not live.exists():
                staged.rename(live)
                done.append((live, None))
            elif _exchange(staged, live):  # readers never see the folder missing
                done.append((live, staged))
            else:
                old = stage_root / f"{plan.folder}.old"
                live.rename(old)
                try:
                    staged.rename(live)
                except OSError:
                    old.rename(live)
                    raise
                done.append((live, old))
    except OSError:
        for live, old in reversed(done):
            if old is None:
                shutil.rmtree(live, ignore_errors=True)
            elif not _exchange(old, live):
                shutil.rmtree(live, ignore_errors=True)
                old.rename(live)
        raise


@dataclass
class PullResult:
    plans: list
    records: int
    diff: str = ""

    @property
    def changed(self) -> list:
        return [f"{p.folder}/{name}" for p in self.plans for name in sorted(p.files)]


def unified_diff(target: Path, plans: list) -> str:
    out = []
    for plan in plans:
        for name, content in sorted(plan.files.items()):
            path = target / plan.folder / name
            old = path.read_text(errors="replace").splitlines(keepends=True) if path.exists() else []
            new = content.decode().splitlines(keepends=True) if content is not None else []
            label = f"{target.name}/{plan.folder}/{name}"
            out.extend(difflib.unified_diff(old, new, f"a/{label}" if old else "/dev/null",
                                            f"b/{label}" if content is not None else "/dev/null"))
    return "".join(out)


def pull(base_id: str, target: Path, operations: dict, *, dry_run=False, progress=_NoProgress,
         api=None) -> PullResult:
    """Airtable -> YAML, all or nothing: a failure of any kind leaves the folder as it was."""
    target = Path(target)
    if not target.is_dir():
        raise SyncError(f"{target}: fixture folder not found")
    fetched = fetch((api or connect()).base(base_id), operations, progress)
    plans = [plan_folder(target, table, columns, records) for table, (columns, records) in sorted(fetched.items())]
    result = PullResult([p for p in plans if p.files], sum(len(r) for _, r in fetched.values()))
    if not result.plans:
        return result
    # dry run: stage out of the way (the fixture folder is not touched); else beside the target,
    # on the same file system, so that the swap is a rename
    stage_root = Path(tempfile.mkdtemp(prefix=f".{target.name}.airtable-", dir=None if dry_run else target.parent))
    try:
        stage(stage_root, target, result.plans)
        validate(stage_root, target, result.plans, operations)
        if dry_run:
            result.diff = unified_diff(target, result.plans)
        else:
            swap_in(stage_root, target, result.plans)
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)
    return result


# --- serve --airtable-sync -----------------------------------------------------------------
class Syncer:
    """Each worker's thread: pull under a file lock (one worker at a time, once per interval),
    then reload. A failed pull writes nothing, so the last good set keeps serving; it is logged
    once per distinct failure."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        settings = sandbox.settings
        self.interval = float(settings.airtable_sync)
        self.base = settings.airtable_base
        self.target = Path(settings.fixtures[0])
        tag = hashlib.sha1(str(self.target.resolve()).encode()).hexdigest()[:12]
        self.lock_path = Path(settings.data_dir) / f"airtable-sync-{tag}.lock"
        self.last_error = None
        self.api = None

    def tick(self):
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another worker is pulling
            lock.seek(0)
            try:
                stamp = float(lock.read().strip() or 0)
            except ValueError:
                stamp = 0.0
            if time.time() - stamp < self.interval * 0.5:
                return  # another worker pulled moments ago
            try:
                self.pull()
            finally:
                lock.seek(0)
                lock.truncate()
                lock.write(str(time.time()))

    def pull(self):
        try:
            self.api = self.api or connect()
            result = pull(self.base, self.target, self.sandbox.operations, api=self.api)
        except SyncError as exc:
            message = scrub(str(exc))
            if message != self.last_error:
                logger.error("airtable sync failed, still serving the last good fixtures: %s", message)
            self.last_error = message
            return
        if self.last_error:
            logger.warning("airtable sync works again")
        self.last_error = None
        if result.plans:
            logger.warning("airtable sync: %d file(s) changed: %s", len(result.changed), ", ".join(result.changed))

    def run(self):
        while True:
            try:
                self.tick()
                self.sandbox.population.reload_if_changed()  # every worker, also without a watcher
            except Exception as exc:  # a sync thread that dies silently would freeze the population
                logger.error("airtable sync crashed: %s", scrub(f"{type(exc).__name__}: {exc}"))
            time.sleep(self.interval)


def start_sync(sandbox):
    """Start the periodic pull in this worker when `serve --airtable-sync SECONDS` asked for it."""
    settings = sandbox.settings
    if not settings.airtable_sync or getattr(sandbox, "_airtable_sync", None):
        return
    if not settings.airtable_base or not os.environ.get("AIRTABLE_TOKEN"):
        logger.error("--airtable-sync needs AIRTABLE_BASE_ID and AIRTABLE_TOKEN; not syncing")
        sandbox._airtable_sync = True
        return
    syncer = Syncer(sandbox)
    sandbox._airtable_sync = threading.Thread(target=syncer.run, name="airtable-sync", daemon=True)
    sandbox._airtable_sync.start()
