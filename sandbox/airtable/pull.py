"""Airtable -> YAML, all or nothing: fetch, plan, stage, validate, swap in (`airtable pull`).

Every table is fetched, each record turned into the bytes of its case file (a file whose content
did not change keeps its bytes and comments), the changed folders are staged as full copies beside
the target, checked with the sandbox's own fixture loader against the problems the live set
already had, and only then swapped in by rename (atomically where Linux allows), all undone if one
rename fails. A failure of any kind leaves the fixture folder as it was; --dry-run prints a diff.
"""
from __future__ import annotations

import contextlib
import ctypes
import difflib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..population import fixtures as fixture_module
from .cells import CASE, column_order, from_record
from .client import PAGE_SIZE, _NoProgress, connect, read_schema, talking_to_airtable
from .common import SyncError, same
from .files import FRANCE_CONNECT, _reorder, case_files, read_case, render

CASE_NAME = re.compile(r"[^/\\\x00]{1,200}")


@dataclass
class FolderPlan:
    folder: str
    files: dict = field(default_factory=dict)     # file name -> new bytes, or None to delete
    origin: dict = field(default_factory=dict)    # file name -> (record id, case, columns)
    unchanged: int = 0
    skipped: list = field(default_factory=list)   # ids of rows without a case: not cases yet


def fetch(base, operations: dict, progress=_NoProgress) -> dict:
    """{table name: (column names, [records])} for every table that maps to a fixture folder."""
    tables = {name: t for name, t in read_schema(base).items() if name in operations or name == FRANCE_CONNECT}
    fetched = {}
    with progress(label="airtable pull", length=len(tables)) as bar:
        for name, table in tables.items():
            with talking_to_airtable(f"reading table {name}"):
                records = base.table(table["id"]).all(page_size=PAGE_SIZE)
            fetched[name] = (table["fields"], records)
            bar.update(1, name)
    return fetched


_UNCHANGED = {}  # file path -> (record fields, columns, file key) when they last agreed


def _file_key(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def plan_folder(target: Path, table: str, columns: list, records: list) -> FolderPlan:
    plan = FolderPlan(table)
    existing = case_files(target / table)
    if existing and not any((r.get("fields") or {}).get(CASE) for r in records):
        raise SyncError(f"table {table} is empty: refusing to delete the {len(existing)} cases of "
                        f"{target / table} (push them first, or delete the files by hand)")
    seen = {}
    columns = column_order(columns)
    for record in records:
        fields = record.get("fields") or {}
        case = fields.get(CASE)
        if case in (None, ""):
            plan.skipped.append(record.get("id"))  # a row being typed in: it becomes a case once named
            continue
        where = f"table {table}, record {record.get('id')} (case {case})"
        if not isinstance(case, str) or not CASE_NAME.fullmatch(case) or case.startswith("."):
            raise SyncError(f"{where}, field {CASE}: must be a file name (no '/', not starting with '.')")
        if case in seen:
            raise SyncError(f"{where}, field {CASE}: record {seen[case]} has the same case")
        seen[case] = record.get("id")
        path = existing.get(case)
        name = path.name if path else case + (".yml" if table == FRANCE_CONNECT else ".yaml")
        plan.origin[name] = (record.get("id"), case, columns)
        memo = (fields, columns, _file_key(path)) if path else None
        if memo and _UNCHANGED.get(path) == memo:
            plan.unchanged += 1  # neither the record nor the file moved since they last agreed
            continue
        doc = from_record(fields, columns, where)
        old = None
        if path:
            with contextlib.suppress(SyncError):  # an unreadable file is simply replaced
                old = read_case(path)
        if old is not None and same(doc, old):
            plan.unchanged += 1  # same content: keep the file's bytes, comments and style
            _UNCHANGED[path] = memo
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
    baseline = {_problem_key(p, live) for p in fixture_module.load([live], operations).check()}
    shutil.rmtree(live)
    candidate = fixture_module.load([stage], operations)
    by_folder = {p.folder: p for p in plans}
    faults = []
    for problem in candidate.check():
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
    skipped: list = field(default_factory=list)   # table/record id of the rows without a case
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
    result = PullResult([p for p in plans if p.files], sum(len(r) for _, r in fetched.values()),
                        skipped=[f"{p.folder}/{rid}" for p in plans for rid in p.skipped])
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

