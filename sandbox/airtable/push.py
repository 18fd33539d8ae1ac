"""YAML -> Airtable: the table layout, `airtable init` (create what is missing) and `airtable push`.

A table's columns are `case` first, every column its cases use, the spec's query parameters (so
new records can be typed in), `status`, and `_types` last. init creates the missing tables and
fields through the meta API; push then upserts every case on its `case` key (idempotent: a record
whose visible cells already match is not written) and, with --prune, deletes the strays.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .cells import CASE, STATUS, TYPES, to_record
from .client import PAGE_SIZE, _NoProgress, connect, read_schema, talking_to_airtable
from .common import SyncError
from .files import case_files, read_case, synced_folders

BATCH = 10          # Airtable's limit of records per write request


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
        # a null or empty value has no cell, only a _types entry: its column is made all the same
        names = list(record) + list(json.loads(record.get(TYPES) or "{}"))
        columns.update(dict.fromkeys(c for c in names if c not in (CASE, TYPES)))
    op = operations.get(table)
    for param in (op.params if op else ()):
        if param.location == "query" and param.key != "recipient":
            columns.setdefault(f"params.{param.key}")
    columns.setdefault(STATUS)
    columns[TYPES] = None
    return list(columns)


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


def ensure_layout(base, wanted: dict, dry_run: bool, progress=_NoProgress) -> list:
    """Create missing tables and fields; returns [TablePlan] with new_table/new_fields filled."""
    schema = read_schema(base)
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
                        # the request Base.create_table sends, without its schema re-read (see read_schema)
                        base.api.post(base.urls.tables, json={
                            "name": table, "fields": [field_spec(c) for c in columns],
                            "description": "particulier-sandbox fixtures: one record per case file"})
            else:
                plan.new_fields = [c for c in columns if c not in existing["fields"]]
                if plan.new_fields and not dry_run:
                    handle = base.table(existing["id"])
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
        if not case:  # a row someone started in the grid: not a case yet
            (plan.delete.append(("(no case)", record["id"])) if prune else plan.stray.append(record["id"]))
            continue
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
            (plan.delete.append((case, record["id"])) if prune else plan.stray.append(case))


def push(base_id: str, target: Path, operations: dict, *, prune=False, dry_run=False,
         progress=_NoProgress, api=None) -> list:
    """YAML -> Airtable: create what is missing, upsert what differs, delete strays on --prune."""
    local, _ = local_records(target, operations)
    base = (api or connect()).base(base_id)
    wanted = {t: layout(t, list(records.values()), operations) for t, records in local.items()}
    plans = ensure_layout(base, wanted, dry_run, progress)
    schema = read_schema(base)
    with progress(label="airtable push: reading", length=len(plans)) as bar:
        for plan in plans:
            existing = []
            if plan.table in schema:
                with talking_to_airtable(f"reading table {plan.table}"):
                    existing = base.table(schema[plan.table]["id"]).all(page_size=PAGE_SIZE)
            plan_table(plan, local[plan.table], existing, prune)
            bar.update(1, plan.table)
    if dry_run:
        return plans
    total = sum(len(p.writes) + len(p.delete) for p in plans)
    with progress(label="airtable push: writing", length=total) as bar:
        for plan in plans:
            if not (plan.writes or plan.delete):
                continue
            table = base.table(schema[plan.table]["id"])
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
