"""Fixtures: load the case files, check them against the spec, index them, match requests.

Matching follows the official staging: every value becomes a lower-cased string, the
request's parameter set must equal the case's exactly, `recipient` is ignored. The index
key is computed once per case at load, so a request costs one dict lookup.
"""
from __future__ import annotations

import datetime
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# CASE_SUFFIXES is also known from here: sandbox.airtable reads it here.
from .fixture_files import CASE_SUFFIXES, Parsing, Problem, is_case_name, signature  # noqa: F401

IGNORED_PARAMS = frozenset({"recipient", "token"})
FRANCE_CONNECT = "france_connect"


@dataclass(eq=False)
class Case:
    operation_id: str
    file: Path
    description: str
    params: dict
    status: int
    payload: object
    latency_ms: int = 0
    key: frozenset = frozenset()
    problem: str | None = None  # set when the payload does not conform: served, but flagged

    @functools.cached_property  # read on every answer (X-Sandbox-Case, the journal)
    def id(self) -> str:
        return f"{self.operation_id}/{self.file.name}"


def normalize(value) -> tuple:
    """A parameter value, as the matcher compares it: a tuple of lower-cased strings."""
    if isinstance(value, (list, tuple)):
        return tuple(v for item in value for v in normalize(item))
    if isinstance(value, bool):
        return ("true" if value else "false",)
    if value is None:
        return ("",)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return (value.isoformat(),)
    return (str(value).lower(),)


def case_key(params: dict) -> frozenset:
    return frozenset((name.removesuffix("[]"), normalize(v)) for name, v in params.items()
                     if name.removesuffix("[]") not in IGNORED_PARAMS)


def request_key(args) -> frozenset:
    merged = {}
    for name in args.keys():
        key = name.removesuffix("[]")
        if key in IGNORED_PARAMS:
            continue
        merged[key] = merged.get(key, ()) + tuple([v.lower() for v in args.getlist(name)])
    return frozenset(merged.items())


# --- FranceConnect: an identity selects the case whose civil status agrees with it ---------
IDENTITY_FIELDS = {
    "nom": ("nomNaissance", "nomFamille", "nom", "family_name"),
    "prenoms": ("prenoms", "prenom", "given_name_array", "given_name"),
    "date": ("dateDeNaissance", "dateNaissance", "birthdate"),
    "annee": ("anneeDateNaissance", "anneeDateDeNaissance"),
    "mois": ("moisDateNaissance", "moisDateDeNaissance"),
    "jour": ("jourDateNaissance", "jourDateDeNaissance"),
    "sexe": ("sexeEtatCivil", "sexe", "gender"),
    "lieu": ("codeCogInseeCommuneNaissance", "codeInseeLieuDeNaissance", "lieuDeNaissance", "birthplace"),
    "pays": ("codeCogInseePaysNaissance", "codePaysLieuDeNaissance", "birthcountry"),
}


# Parameters that only restate who the person is: a FranceConnect call carries them in its token.
IDENTITY_PARAMS = frozenset(n for names in IDENTITY_FIELDS.values() for n in names) | {
    "nomUsage", "nomCommuneNaissance", "codeCogInseeDepartementNaissance", "codeInseeDepartementNaissance"}


def other_params(key: frozenset) -> frozenset:
    """A match key without the identity parameters (e.g. the plate number of an ANTS call)."""
    return frozenset(item for item in key if item[0] not in IDENTITY_PARAMS)


def canonical_identity(fields: dict) -> dict:
    fields = {k.removesuffix("[]"): v for k, v in fields.items()}
    out = {}
    for meaning, names in IDENTITY_FIELDS.items():
        value = next((fields[n] for n in names if fields.get(n) not in (None, "", [])), None)
        if value is None:
            continue
        if meaning == "prenoms":
            words = value if isinstance(value, list) else str(value).split()
            out[meaning] = tuple(str(w).lower() for w in words)
        elif meaning == "date":
            text = value.isoformat() if isinstance(value, datetime.date) else str(value)
            found = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", text) or re.fullmatch(
                r"(\d{1,2})/(\d{1,2})/(\d{4})", text)
            if found:
                parts = found.groups()
                year, month, day = parts if len(parts[0]) == 4 else parts[::-1]
                out.update(annee=str(int(year)), mois=str(int(month)), jour=str(int(day)))
        elif meaning in ("annee", "mois", "jour"):
            out[meaning] = str(int(value)) if str(value).isdigit() else str(value)
        elif meaning == "sexe":
            out[meaning] = str(value).lower()[:1]
        else:
            out[meaning] = str(value).lower()
    return out


def identity_agrees(identity: dict, case: dict) -> bool:
    """Every identity field both sides carry agrees. A case that names nobody (an ANTS plate
    number) is selected by its other parameters alone."""
    if not case:
        return True
    shared = identity.keys() & case.keys()
    if "nom" not in shared:
        return False
    for k in shared:
        if k == "prenoms":
            if identity[k][:len(case[k])] != case[k]:
                return False
        elif identity[k] != case[k]:
            return False
    return True


@dataclass
class FixtureSet:
    cases: dict = field(default_factory=dict)          # operation id -> {key: Case}
    ordered: dict = field(default_factory=dict)        # operation id -> [Case] in file order
    fallback: dict = field(default_factory=dict)       # operation id -> the folder's 404.yaml
    france_connect: dict = field(default_factory=dict)  # bearer token -> identity payload
    identities: dict = field(default_factory=dict)     # operation id -> [(canonical identity, Case)]
    problems: list = field(default_factory=list)
    signature: list = field(default_factory=list)  # fixture_files.signature when loaded

    @property
    def fatal(self) -> list:
        return [p for p in self.problems if p.fatal]

    def match(self, operation_id, args, key: frozenset | None = None):
        """The case whose params equal the request's (`key`: request_key(args), when known)."""
        return self.cases.get(operation_id, {}).get(request_key(args) if key is None else key)

    def match_france_connect(self, operation_id, identity: dict, args):
        wanted, others = canonical_identity(identity), other_params(request_key(args))
        for canon, case in self.identities.get(operation_id, ()):
            if identity_agrees(wanted, canon) and other_params(case.key) == others:
                return case
        return None

    def near_miss(self, operation_id, args, key: frozenset | None = None) -> dict | None:
        """The case that came closest, and how the request differs from it (WireMock-style)."""
        asked = dict(request_key(args) if key is None else key)
        best, best_score = None, -1
        for case in self.ordered.get(operation_id, ()):
            wanted = dict(case.key)
            score = sum(1 for k, v in asked.items() if wanted.get(k) == v) - len(wanted.keys() ^ asked.keys())
            if score > best_score:
                best, best_score = case, score
        if best is None:
            return None
        wanted = dict(best.key)
        return {"case": best.id,
                "missing": sorted(wanted.keys() - asked.keys()),
                "unexpected": sorted(asked.keys() - wanted.keys()),
                "different": sorted(k for k in asked.keys() & wanted.keys() if asked[k] != wanted[k])}

    def catalogue(self, operations: dict) -> list:
        out = []
        for operation_id, cases in sorted(self.ordered.items()):
            op = operations.get(operation_id)
            out.append({"operation_id": operation_id, "method": op.method if op else "GET",
                        "path": op.path if op else None,
                        "cases": [{"file": c.file.name, "description": c.description, "params": c.params,
                                   "status": c.status} for c in cases]})
        return out


class Reading:
    """The case files of `dirs`, listed, and parsed in a pool of processes from now on: start-up
    starts it before it loads the spec, which the parse does not need, and load() finishes it."""

    def __init__(self, dirs):
        self.dirs = [Path(d) for d in dirs]
        self.signature = signature(self.dirs)  # first: an edit made while we read is seen next scan
        self.listing = _listing(self.dirs)
        self.parsing = Parsing([path for _, files in self.listing if isinstance(files, list) for path in files])

    def check(self, operations: dict):
        """Once the spec is loaded: check the parsed files against it, in a pool, from now on."""
        self.parsing.check(_jobs(_plan(self.listing, operations)), operations)

    def close(self):
        self.parsing.close()


def load(dirs, operations: dict, reading: Reading | None = None) -> FixtureSet:
    """Read every fixture folder. `operations`: x-operationId -> spec Operation. `reading`:
    the same folders' files, already being parsed (start-up); else they are read now."""
    own = reading is None
    reading = reading or Reading(dirs)
    try:
        fixtures = FixtureSet(signature=reading.signature)
        plan = _plan(reading.listing, operations)
        reading.parsing.check(_jobs(plan), operations)
        results = iter(reading.parsing.results())  # one per job, consumed in the same order below
    finally:
        if own:
            reading.close()
    for step in plan:
        if isinstance(step, Problem):
            fixtures.problems.append(step)
        elif step[0] == FRANCE_CONNECT:
            _load_france_connect(step[1], results, fixtures)
        else:
            _load_operation(step[0], step[1], results, operations[step[0]], fixtures)
    return fixtures


def _jobs(plan: list) -> list:
    """(operation id, or None for the FranceConnect folder, path) of each file to read."""
    return [(None if step[0] == FRANCE_CONNECT else step[0], path)
            for step in plan if not isinstance(step, Problem) for path in step[1]]


def _listing(dirs) -> list:
    """[(folder, its case files, or the OSError that kept them from us)], in reading order; a
    fixture root that is not a folder is listed as (root, None)."""
    listing = []
    for root in map(Path, dirs):
        if not root.is_dir():
            listing.append((root, None))
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                listing.append((folder, _case_files(folder)))
            except OSError as exc:  # a folder renamed or removed while we read (an editor, a sync)
                listing.append((folder, exc))
    return listing


def _plan(listing: list, operations: dict) -> list:
    """What to read, in order: (folder name, its case files), or a Problem with a whole folder."""
    plan = []
    for folder, files in listing:
        if files is None:
            plan.append(Problem(folder, "$", "fixture folder not found"))
        elif isinstance(files, OSError):
            plan.append(Problem(folder, "$", f"cannot be read: {files.strerror}"))
        elif folder.name == FRANCE_CONNECT or folder.name in operations:
            plan.append((folder.name, files))
        elif files:
            plan.append(Problem(folder, "$", "no loaded spec has an operation with this "
                                "x-operationId; the folder's cases cannot be served"))
    return plan


def _case_files(folder: Path) -> list:
    with os.scandir(folder) as entries:
        return sorted(folder / e.name for e in entries if is_case_name(e.name) and _is_file(folder, e))


def _is_file(folder: Path, entry) -> bool:
    # A DirEntry knows a regular file without a stat (2,000 stats are 20 ms of a start-up); a
    # symlink is followed, and its errors ignored, exactly as Path.is_file does.
    return (folder / entry.name).is_file() if entry.is_symlink() else entry.is_file()


def _load_france_connect(files, results, fixtures):
    for path, (data, problems, _) in zip(files, results):
        fixtures.problems.extend(problems)
        if data is None:
            continue
        token = (data.get("params") or {}).get("token")
        payload = data.get("payload")
        if not token or not isinstance(payload, dict):
            fixtures.problems.append(Problem(path, "$.params.token", "a FranceConnect file needs params.token "
                                             "and a payload with token_introspection"))
            continue
        fixtures.france_connect[str(token)] = payload.get("token_introspection", payload)


def _load_operation(operation_id, files, results, op, fixtures):
    index = fixtures.cases.setdefault(operation_id, {})
    ordered = fixtures.ordered.setdefault(operation_id, [])
    identities = fixtures.identities.setdefault(operation_id, [])
    for path, (data, problems, schema_problems) in zip(files, results):
        fixtures.problems.extend(problems)
        if data is None:
            continue
        case = Case(operation_id=operation_id, file=path, description=str(data.get("description") or "").strip(),
                    params=data["params"] or {}, status=data["status"], payload=data["payload"],
                    latency_ms=int(data.get("latency_ms") or 0))
        case.key = case_key(case.params)
        for where, message in schema_problems:
            fixtures.problems.append(Problem(path, where, message, fatal=False))
            case.problem = case.problem or f"{where}: {message}"
        ordered.append(case)
        if path.stem == "404" and operation_id not in fixtures.fallback:
            fixtures.fallback[operation_id] = case
        if case.key in index:
            other = index[case.key]
            fixtures.problems.append(Problem(path, "$.params", f"same params as {other.file.name}; "
                                             f"{other.file.name} answers, this case is never served", fatal=False))
            continue
        index[case.key] = case
        if op.france_connect:
            identities.append((canonical_identity(case.params), case))


class Population:
    """The fixture set being served, swapped whole when the files change.

    A reload that finds a fatal problem keeps the last good set serving, and says why.
    """

    def __init__(self, dirs, operations: dict, reload_interval: float, logger, reading: Reading | None = None):
        self.dirs = [Path(d) for d in dirs]
        self.operations = operations
        self.reload_interval = reload_interval
        self.logger = logger
        self.current = load(self.dirs, operations, reading)
        self.last_problems = list(self.current.problems)
        self._thread = None

    def france_connect(self, token: str):
        return self.current.france_connect.get(token)

    def reload_if_changed(self) -> bool:
        if signature(self.dirs) == self.current.signature:
            return False
        candidate = load(self.dirs, self.operations)
        self.last_problems = list(candidate.problems)
        if candidate.fatal:
            self.logger.error("fixtures changed but are broken; still serving the last good set:\n  %s",
                              "\n  ".join(map(str, candidate.fatal)))
            self.current.signature = candidate.signature  # report a broken edit once, not every second
            return False
        for problem in candidate.problems:
            self.logger.warning("fixture problem: %s", problem)
        self.current = candidate
        self.logger.info("fixtures reloaded: %d cases", sum(len(c) for c in candidate.ordered.values()))
        return True

    def replace(self, candidate: FixtureSet):
        """Serve a set built elsewhere (Airtable sync) once it is known to be sound."""
        self.current = candidate

    def start_watching(self):
        if self._thread is not None or not self.reload_interval:
            return
        import threading
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fixture-watcher", daemon=True)
        self._thread.start()

    def stop_watching(self):
        """The watcher ends within one interval (a test's population, not a worker's, which lives on)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _watch(self):
        if self._stop.wait(self.reload_interval):  # as before: the worker answers its first calls first
            return
        from .fixture_watch import Changes
        changes = Changes(self.dirs)
        self.logger.info("watching the fixture folders %s", "every %gs" % self.reload_interval
                         if changes.polling else "with inotify")
        pending = True  # first: whatever changed since the load, before the watch began
        while True:
            try:
                pending = changes.may_have_changed() or pending
                if pending:
                    self.reload_if_changed()
                    pending = False  # only once it went through: a failed reload is retried
            except Exception:  # a watcher that dies silently would freeze the population
                self.logger.exception("fixture reload failed")
            if self._stop.wait(self.reload_interval):
                break
        changes.close()
