"""The case files on disk: read them as the sandbox does, render their normal form, list them.

Both directions need these: a push reads every case file of every synced folder, a pull compares
each record with the file it would replace and renders the new content in the normal form
(docs/airtable.md), keeping the old file's key order so that an edit makes a small diff. Reads are
cached by (path, size, mtime) because `serve --airtable-sync` compares every file on every tick.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from ..population import fixtures as fixture_module
from ..population.files import read_case_file
from ..production.spec import _Loader
from .common import SyncError, same

FRANCE_CONNECT = fixture_module.FRANCE_CONNECT
CASE_SUFFIXES = fixture_module.CASE_SUFFIXES
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
    data, problems = read_case_file(path)  # the sandbox's own reader: what it serves, the sync sends
    if data is None:
        raise SyncError(str(problems[0]))
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
