"""The fixture files on disk: read and check each case file, and the signature that tells the
watcher whether any of them changed.

Reading is most of a start-up: about half a millisecond of YAML parsing per file, then the
schema check, for some 2,000 files when the official staging folders are served. Files are
independent, so a load of many of them parses them in a pool of forked processes, one per CPU,
then checks them in a second pool once the spec is known (Parsing); fixtures.load assembles
what they send back exactly as a sequential read would.
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
    return _check(operation_id, read_case_file(path), checker)


def _check(operation_id, read: tuple, checker: SchemaChecker) -> tuple:
    data, problems = read
    if data is None or operation_id is None:
        return data, problems, []
    return data, problems, checker.problems(operation_id, data["status"], data["payload"])


# --- reading them all ----------------------------------------------------------------------
class Parsing:
    """The YAML of many case files, parsed in a pool of forked processes while this one does
    something else (the parse needs no spec: start-up loads it meanwhile); then check(), once
    the spec is loaded, checks them in a second pool while this process imports the app; and
    results() collects both. When no pool is worth it (few files, or threads about) or one
    breaks, the files are read or checked in this process instead: same results."""

    def __init__(self, paths: list):
        self._pool, self._chunks = None, []
        self._jobs = self._operations = self._parsed = None
        self._check_pool, self._checks = None, []
        readers = _readers(len(paths))
        if readers == 1:
            return
        try:
            self._pool = _fork_pool(readers)
            self._chunks = [(chunk, self._pool.submit(_parse_chunk, chunk)) for chunk in _chunks(paths, readers)]
        except Exception as exc:
            _pool_failed("parsing", exc)
            self._chunks = []

    def check(self, jobs: list, operations: dict):
        """Start checking `jobs` ((operation id or None, path)), whose files were parsed."""
        if self._jobs == jobs:
            return
        _oas30_validator()  # here, once: the checking pool's children inherit it
        self._jobs, self._operations, self._parsed = jobs, operations, self._take()
        self._check_pool, self._checks = _start_checks(jobs, self._parsed, operations)

    def results(self) -> list:
        """read_and_check's result for each job given to check(), in their order."""
        jobs, parsed = self._jobs, self._parsed
        checks = None
        if self._check_pool is not None:
            try:
                checks = [problems for future in self._checks for problems in future.result()]
            except Exception as exc:
                _pool_failed("checking", exc)
            finally:
                self._check_pool = _shut(self._check_pool)
        if checks is None:
            checker = SchemaChecker(self._operations)
            return [_check(operation_id, parsed[path], checker) if path in parsed
                    else read_and_check(operation_id, path, checker) for operation_id, path in jobs]
        return [(*parsed[path], problems) for (_, path), problems in zip(jobs, checks)]

    def close(self):
        self._pool = _shut(self._pool)
        self._check_pool = _shut(self._check_pool)

    def _take(self) -> dict:
        parsed = {}
        try:
            for chunk, future in self._chunks:
                parsed.update(zip(chunk, future.result()))
        except Exception as exc:  # the sequential read gives the same result, or raises the same error
            _pool_failed("parsing", exc)
            parsed = {}
        finally:
            self._pool = _shut(self._pool)
        return parsed


def _fork_pool(readers: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    return ProcessPoolExecutor(readers, mp_context=multiprocessing.get_context("fork"))


def _shut(pool) -> None:
    if pool is not None:
        pool.shutdown(cancel_futures=True)


def _pool_failed(what: str, exc: Exception):
    logger.warning("%s the fixtures in a pool of processes failed, doing it in this one: %s: %s",
                   what, type(exc).__name__, exc)


def _chunks(items: list, readers: int) -> list:
    size = -(-len(items) // (readers * 8))  # many chunks per reader: the last one to finish ends soon after the others
    return [items[i:i + size] for i in range(0, len(items), size)]


def _parse_chunk(paths: list) -> list:
    return [read_case_file(path) for path in paths]


# What the checking pool's children inherit through the fork: no pickling of the spec or of the files.
_forked_checker = None
_forked_parsed = None


def _start_checks(jobs: list, parsed: dict, operations: dict) -> tuple:
    """(pool, futures) checking `jobs` in a pool forked now (its children inherit the spec and
    the parsed files, and send back only the schema problems); (None, []): check them here."""
    global _forked_checker, _forked_parsed
    readers = _readers(len(jobs))
    if readers == 1 or any(path not in parsed for _, path in jobs):
        return None, []
    _forked_checker, _forked_parsed = SchemaChecker(operations), parsed
    try:
        pool = _fork_pool(readers)
        return pool, [pool.submit(_check_chunk, chunk) for chunk in _chunks(jobs, readers)]  # forks on the first
    except Exception as exc:
        _pool_failed("checking", exc)
        return None, []
    finally:
        _forked_checker = _forked_parsed = None


def _check_chunk(jobs: list) -> list:
    return [_check(operation_id, _forked_parsed[path], _forked_checker)[2] for operation_id, path in jobs]


def _readers(files: int) -> int:
    if files <= POOL_MIN_FILES or not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may run on, not the machine's
    except AttributeError:
        cpus = os.cpu_count() or 1
    return min(cpus, POOL_MAX_READERS)

