"""The fixture files on disk: read one case file, check a payload against its schema, and the
signature that tells the watcher whether any file changed.

Start-up reads every file (YAML only); payloads are checked against the spec when a case is
first served (fixtures.Case.problem) or by `fixtures check` / `serve --strict`, which check
them all: the check is most of a full read and need not delay the first answer.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..production.spec import _Loader
from ..settings import BUNDLED

CASE_SUFFIXES = (".yaml", ".yml")
MAX_CASE_BYTES = 1 << 20
CACHE_FORMAT = "2"  # bump when what read_case_file returns changes


@dataclass
class Problem:
    file: Path
    where: str
    message: str
    fatal: bool = True

    def __str__(self):
        return f"{shown_path(self.file)}: {self.where}: {self.message}"


def shown_path(path) -> str:
    """A case file's path as the user knows it. The bundled folders are links (sandbox/bundled/
    fixtures -> fixtures/ in a clone): a problem names the file the user edits, relative to the
    working folder when it is under it."""
    path = Path(path)
    if BUNDLED not in path.parents:
        return str(path)
    link, *rest = path.relative_to(BUNDLED).parts
    real = Path(os.path.realpath(BUNDLED / link)).joinpath(*rest)  # that link only: a case file may be one too
    here = Path.cwd()
    return str(real.relative_to(here)) if here in real.parents and here != here.parent else str(real)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message names the file at every mark; the Problem names it once already."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if not problem or mark is None:
        return " ".join(str(exc).split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, where = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        text += f" ({context}" + (f" at line {where.line + 1}, column {where.column + 1})" if where else ")")
    return text


def is_case_name(name: str) -> bool:
    """Path(name).suffix in CASE_SUFFIXES, without building a Path (the watcher asks per file)."""
    return name.endswith(CASE_SUFFIXES) and name.rfind(".") > 0


# --- the watcher's signature ---------------------------------------------------------------
def case_folders(root):
    """The folders of `root` the loader reads (DirEntry, in listing order); OSError if `root` is missing."""
    with os.scandir(root) as folders:
        for folder in folders:
            if folder.name[0] != "." and folder.is_dir():
                yield folder


def signature(dirs) -> list:
    """Every folder the loader reads and, in it, every case file's name, size, mtime and ctime.

    Any edit changes it: ctime moves even when a copy keeps the old mtime (`cp -p`, `rsync -t`).
    One stat per file (entry.stat() follows a symlinked case file to its target)."""
    out = []
    for root in dirs:
        try:
            for folder in case_folders(root):
                out.append(folder.name)
                with os.scandir(folder.path) as files:
                    for entry in files:
                        if is_case_name(entry.name):
                            st = entry.stat()
                            out.append((entry.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:  # a root missing, or a file removed while listed: compare again next time
            out.append(None)
    return out


# --- reading one case file -----------------------------------------------------------------
def read_case_file(path: Path):
    """(the case document or None, the problems that make it unusable)."""
    try:
        if path.stat().st_size > MAX_CASE_BYTES:
            return None, [Problem(path, "$", f"file larger than {MAX_CASE_BYTES} bytes")]
        with open(path, "rb") as f:
            data = yaml.load(f, Loader=_Loader)
    except OSError as exc:
        return None, [Problem(path, "$", f"cannot be read: {exc.strerror}")]
    except yaml.YAMLError as exc:
        return None, [Problem(path, "$", f"not valid YAML: {_yaml_problem(exc)}")]
    if not isinstance(data, dict):
        return None, [Problem(path, "$", "a case file must be a mapping with params, status, payload")]
    payload = data.get("payload")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            return None, [Problem(path, "$.payload", f"not valid JSON: {exc}")]
    status = data.get("status")
    if not isinstance(status, int) or not 100 <= status <= 599:
        return None, [Problem(path, "$.status", "missing or not an HTTP status code")]
    params = data.get("params") or {}
    if not isinstance(params, dict):
        return None, [Problem(path, "$.params", "must be a mapping of parameter -> value")]
    data["payload"] = payload
    return data, []


def read_case_files(paths: list) -> dict:
    """{path: read_case_file(path)} for every path, parsed files kept between starts.

    Parsing the YAML of a thousand case files is most of a start-up, and between two starts
    almost none of them changed: the parsed files are kept in a cache file (pickle: the YAML
    has dates, which JSON and marshal cannot hold) keyed by each file's path, size, mtime and
    ctime, so a file edited in any way is parsed again. The cache is an optimisation only: a
    missing, stale or unreadable one means the files are parsed, never that one is skipped.
    """
    cache_file = _cache_file(paths)
    cached = _read_cache(cache_file)
    kept, out, parsed = {}, {}, False
    for path in paths:
        try:
            st = path.stat()
            key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except OSError:
            key = None
        found = cached.get(key) if key else None
        if found is None:
            found, parsed = read_case_file(path), True
        out[path] = found
        if key:
            kept[key] = found
    if parsed and cache_file is not None:
        _write_cache(cache_file, kept)
    return out


def _cache_file(paths: list) -> Path | None:
    if not paths:
        return None
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folders = sorted(str(root.resolve()) for root in {p.parent.parent for p in paths})  # the fixture roots
    # the cache holds problems' texts too: a new wording (CACHE_FORMAT) must not meet old ones
    tag = hashlib.sha256("\n".join([CACHE_FORMAT, *folders]).encode()).hexdigest()[:16]
    return Path(home) / "particulier-sandbox" / f"case-files-{tag}.pickle"


def _read_cache(cache_file) -> dict:
    try:
        with open(cache_file, "rb") as f:
            cached = pickle.load(f)  # our own file, in the user's cache folder
        return cached if isinstance(cached, dict) else {}
    except Exception:  # missing, truncated, from another version: parse the files instead
        return {}


def _write_cache(cache_file: Path, kept: dict):
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_file.parent, delete=False) as f:
            pickle.dump(kept, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(f.name, cache_file)  # whole or not at all, whoever reads it meanwhile
    except OSError:
        pass  # a read-only home: every start parses the files, nothing else changes


def _json_path(error) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _oas30_validator():
    # Imported on first use: a heavy import (it pulls pydantic), which the commands that
    # check no payload (`token`, `--help`) need not pay.
    from openapi_schema_validator import OAS30Validator
    return OAS30Validator


class SchemaChecker:
    """Validators for each (operation, status), built on first use and kept."""

    def __init__(self, operations: dict):
        self._operations = operations
        self._validators = {}

    def problems(self, operation_id: str, status: int, payload) -> list:
        """[(where, message)]: how the payload breaks the schema of its operation and status."""
        key = (operation_id, status)
        if key not in self._validators:
            self._validators[key] = self._validator(self._operations[operation_id], status)
        validator = self._validators[key]
        if isinstance(validator, str):
            return [("$.status", validator)]
        if validator is None:
            return []
        errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
        return [(f"$.payload{_json_path(e)[1:]}", e.message) for e in errors[:5]]

    @staticmethod
    def _validator(op, status):
        if status not in op.responses and "default" not in op.responses:
            return f"status {status} is not declared for {op.method} {op.path}"
        schema = op.responses.get(status, op.responses.get("default"))
        if not schema:
            return None
        validator = _oas30_validator()
        return validator(schema, format_checker=validator.FORMAT_CHECKER)
