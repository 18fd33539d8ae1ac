"""The fixture files on disk: read and check each case file, and the signature that tells the
watcher whether any of them changed.

Reading is most of a start-up: about half a millisecond of YAML parsing per file, then the
schema check, for some 2,000 files when the official staging folders are served. Files are
independent, so a start-up with many of them reads them in a pool of forked processes, one per
CPU, which send back plain data; fixtures.load assembles it exactly as a sequential read would.
Only a process with a single thread forks (a lock held by another thread at the fork stays
held in the child forever): hot reloads, which run in the watcher thread, read sequentially.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

from .spec import _Loader

CASE_SUFFIXES = (".yaml", ".yml")
MAX_CASE_BYTES = 1 << 20
POOL_MIN_FILES = 200  # below this, forking a pool costs more than it saves
POOL_MAX_READERS = 8  # each fork costs the parent ~10 ms, one after the other: more would cost what they save
logger = logging.getLogger("sandbox")


@dataclass
class Problem:
    file: Path
    where: str
    message: str
    fatal: bool = True

    def __str__(self):
        return f"{self.file}: {self.where}: {self.message}"


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
    A polling watcher computes it every second in every worker, so it costs one stat per file
    (the floor of polling) and little more: folders listed by fd, so that each stat resolves one
    name rather than a whole path; no sorting (a folder lists in the same order until it
    changes); one flat list, compared in C.
    """
    out = []
    for root in dirs:
        try:
            for folder in case_folders(root):
                out.append(folder.name)
                _sign_folder(folder.path, out)
        except OSError:
            out.append(None)  # a missing root: appearing later is a change too
    return out


def _sign_folder(path, out: list):
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    add = out.append
    try:
        with os.scandir(fd) as files:
            for entry in files:
                name = entry.name
                if is_case_name(name):
                    try:
                        st = entry.stat()
                    except OSError:  # removed while we list: the next scan sees the folder without it
                        continue
                    add(name)
                    add(st.st_size)
                    add(st.st_mtime_ns)
                    add(st.st_ctime_ns)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- reading one case file -----------------------------------------------------------------
def read_case_file(path: Path):
    """(the case document or None, the problems that make it unusable)."""
    try:
        if path.stat().st_size > MAX_CASE_BYTES:
            return None, [Problem(path, "$", f"file larger than {MAX_CASE_BYTES} bytes")]
        with open(path, "rb") as f:
            data = yaml.load(f, Loader=_Loader)
    except (OSError, yaml.YAMLError) as exc:
        return None, [Problem(path, "$", f"not valid YAML: {' '.join(str(exc).split())}")]
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


def _json_path(error) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _oas30_validator():
    # Imported on first use: it takes 0.2-0.3 s (it pulls pydantic), which the commands that
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


def read_and_check(operation_id, path: Path, checker: SchemaChecker) -> tuple:
    """(document or None, its problems, its payload's schema problems); operation_id None: no check."""
    data, problems = read_case_file(path)
    if data is None or operation_id is None:
        return data, problems, []
    return data, problems, checker.problems(operation_id, data["status"], data["payload"])


# --- reading them all ----------------------------------------------------------------------
def read_all(jobs: list, operations: dict) -> list:
    """read_and_check for each (operation id or None, path) of `jobs`, in their order."""
    readers = _readers(len(jobs))
    if readers > 1:
        try:
            return _read_in_pool(jobs, operations, readers)
        except Exception as exc:  # the sequential read gives the same result, or raises the same error
            logger.warning("reading the fixtures in %d processes failed, reading them in this one: %s: %s",
                           readers, type(exc).__name__, exc)
    checker = SchemaChecker(operations)
    return [read_and_check(operation_id, path, checker) for operation_id, path in jobs]


def _readers(files: int) -> int:
    if files <= POOL_MIN_FILES or not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may run on, not the machine's
    except AttributeError:
        cpus = os.cpu_count() or 1
    return min(cpus, POOL_MAX_READERS)


_forked_checker = None  # what the pool's children inherit through the fork: no pickling of the spec


def _read_in_pool(jobs: list, operations: dict, readers: int) -> list:
    global _forked_checker
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    _oas30_validator()  # once here, before the fork, rather than once in every child
    size = -(-len(jobs) // (readers * 8))  # many chunks per reader: the last one to finish ends soon after the others
    chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    _forked_checker = SchemaChecker(operations)
    try:
        with ProcessPoolExecutor(readers, mp_context=multiprocessing.get_context("fork")) as pool:
            return [result for chunk in pool.map(_read_chunk, chunks) for result in chunk]
    finally:
        _forked_checker = None


def _read_chunk(jobs: list) -> list:
    return [read_and_check(operation_id, path, _forked_checker) for operation_id, path in jobs]
