"""Fixtures: load the case files, index them, match requests (served.py serves the current set).

Matching follows production's staging (lookup.py): a case is found under the key its route's
provider builds from what it reads (production/data/mocking_params.yml), so a parameter
production does not read changes nothing and a blank one counts as absent. The index key is
computed once per case at load, so a request costs one dict lookup; two cases with one key are
reported (the first in file order answers).

A case's payload is checked against its operation's schema when it is first served (the
answer then carries X-Sandbox-Fixture-Invalid) or when every case is checked at once
(FixtureSet.check: `fixtures check`, `serve --strict`, a hot reload, an Airtable pull); that
check also names the cases production's parameter validation keeps from ever being served
(reachability.py).
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

# CASE_SUFFIXES is also known from here: sandbox.airtable reads it here.
from ..production import clock
from ..settings import BUNDLED_FIXTURES
from . import dates
from .lookup import canonical_identity, case_key, identity_agrees, other_params, request_key, sent_names
from .reachability import refusal
from .files import (CASE_SUFFIXES, Problem, SchemaChecker, is_case_name,  # noqa: F401
                            read_case_files, signature)

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
    checker: SchemaChecker | None = field(default=None, repr=False)
    dated: bool = False  # the payload holds relative dates (sandbox.population.dates), resolved per day
    # the params as written when they hold relative dates (`params` is then their value on the
    # day the set was keyed, FixtureSet.day); None when they hold none
    raw_params: dict | None = None

    @functools.cached_property  # read on every answer (X-Sandbox-Case, the journal)
    def id(self) -> str:
        return f"{self.operation_id}/{self.file.name}"

    def payload_on(self, day: datetime.date):
        """The payload answered on `day`: its relative dates resolved (once per day), or the payload."""
        if not self.dated:
            return self.payload
        by_day = self.__dict__.setdefault("_by_day", {})
        found = by_day.get(day)
        if found is None:
            if len(by_day) > 3:  # the day moves on, or a test freezes several: keep a few
                by_day.clear()
            found = by_day[day] = dates.resolve(self.payload, day)
        return found

    @functools.cached_property
    def schema_problems(self) -> list:
        """[(json path, message)]: how the payload breaks its schema (checked once, on first use)."""
        return (self.checker.problems(self.operation_id, self.status, self.payload_on(clock.today()))
                if self.checker else [])

    @property
    def problem(self) -> str | None:
        """The first schema problem: such a case is served, and flagged."""
        return next((f"{where}: {message}" for where, message in self.schema_problems), None)


@dataclass
class FixtureSet:
    cases: dict = field(default_factory=dict)          # operation id -> {key: Case}
    ordered: dict = field(default_factory=dict)        # operation id -> [Case] in file order
    fallback: dict = field(default_factory=dict)       # operation id -> the folder's 404.yaml
    france_connect: dict = field(default_factory=dict)  # bearer token -> identity payload
    identities: dict = field(default_factory=dict)     # operation id -> [(canonical identity, Case)]
    problems: list = field(default_factory=list)       # problems of files and folders (schema: check())
    signature: list = field(default_factory=list)  # files.signature when loaded
    operations: dict = field(default_factory=dict, repr=False)  # operation id -> spec Operation, as loaded
    # The day the params' relative dates were resolved on, and so the day the index keys hold:
    # a set with such params is keyed anew for another day (on), the files not read again.
    day: datetime.date | None = None
    dated_params: bool = False
    shadowed: list = field(default_factory=list, repr=False)  # the "same params as" problems of this day's keys

    @property
    def fatal(self) -> list:
        return [p for p in self.problems if p.fatal]

    def check(self) -> list:
        """Every problem, each case's payload checked against its schema now, and each served
        case's params against production's validation (a case they refuse is never served)."""
        out = list(self.problems)
        for operation_id, cases in self.ordered.items():
            op, index = self.operations.get(operation_id), self.cases.get(operation_id, {})
            for case in cases:
                out += [Problem(case.file, where, message, fatal=False) for where, message in case.schema_problems]
                # a case shadowed by another of the same params is already said to be never served
                refused = refusal(self, op, case) if op is not None and index.get(case.key) is case else None
                if refused:
                    out.append(Problem(case.file, "$.params", f"production refuses these params: {refused}; "
                                       "the case is never served", fatal=False))
        return out

    def on(self, day: datetime.date) -> "FixtureSet":
        """The same cases keyed on `day`: self when no params hold relative dates or `day` is the
        set's. Cases without dated params are shared; the others are copied with their params
        resolved on `day`, so each day has its own keys (two cases may collide one day only)."""
        if not self.dated_params or day == self.day:
            return self
        out = FixtureSet(fallback={}, france_connect=self.france_connect, signature=self.signature,
                         operations=self.operations, day=day, dated_params=True,
                         problems=[p for p in self.problems if not any(p is s for s in self.shadowed)])
        for operation_id, cases in self.ordered.items():
            op = self.operations[operation_id]
            out.cases.setdefault(operation_id, {}), out.ordered.setdefault(operation_id, [])
            out.identities.setdefault(operation_id, [])
            for case in cases:
                if case.raw_params is not None:
                    case = dataclasses.replace(case, params=dates.resolve(case.raw_params, day))
                _index(out, case, op)
        return out

    def match(self, operation_id, args, key: frozenset | None = None):
        """The case whose key is the request's (`key`: request_key(operation_id, args), when known)."""
        return self.cases.get(operation_id, {}).get(request_key(operation_id, args) if key is None else key)

    def match_france_connect(self, operation_id, identity: dict, args):
        wanted = canonical_identity(identity)
        others = other_params(request_key(operation_id, args, france_connect=True))
        for canon, case in self.identities.get(operation_id, ()):
            if identity_agrees(wanted, canon) and other_params(case.key) == others:
                return case
        return None

    def near_miss(self, operation_id, args, key: frozenset | None = None) -> dict | None:
        """The case that came closest, and how the request differs from it (WireMock-style). Only
        what production reads is compared (the keys), named as the client sends it."""
        asked = dict(request_key(operation_id, args) if key is None else key)
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
                "missing": sent_names(operation_id, wanted.keys() - asked.keys()),
                "unexpected": sent_names(operation_id, asked.keys() - wanted.keys()),
                "different": sent_names(operation_id, (k for k in asked.keys() & wanted.keys()
                                                       if asked[k] != wanted[k]))}

    def catalogue(self, operations: dict) -> list:
        out = []
        for operation_id, cases in sorted(self.ordered.items()):
            op = operations.get(operation_id)
            out.append({"operation_id": operation_id, "method": op.method if op else "GET",
                        "path": op.path if op else None,
                        "cases": [{"file": c.file.name, "description": c.description, "params": c.params,
                                   "status": c.status} for c in cases]})
        return out


def load(dirs, operations: dict, day: datetime.date | None = None) -> FixtureSet:
    """Read every fixture folder. `operations`: x-operationId -> spec Operation; `day`: the day
    relative dates in params are resolved on (production's today by default)."""
    dirs = [Path(d) for d in dirs]
    # the signature first: an edit made while we read is seen next time
    fixtures = FixtureSet(signature=signature(dirs), operations=operations, day=day or clock.today())
    checker = SchemaChecker(operations)
    listing = _listing(dirs)
    reads = read_case_files([path for _, files in listing if isinstance(files, list) for path in files])
    for folder, files in listing:
        if files is None:
            fixtures.problems.append(Problem(folder, "$", "fixture folder not found"))
        elif isinstance(files, OSError):
            fixtures.problems.append(Problem(folder, "$", f"cannot be read: {files.strerror}"))
        elif folder.name == FRANCE_CONNECT:
            _load_france_connect(files, fixtures, reads)
        elif folder.name in operations:
            _load_operation(folder.name, files, operations[folder.name], fixtures, checker, reads)
        elif files and _is_bundled(folder):
            # a route of the bundled population that an older spec (e.g. the published upstream
            # one, served with --spec) does not describe: said, and the rest is served
            fixtures.problems.append(Problem(folder, "$", "no loaded spec has this route (the bundled spec "
                                             "does): its cases are not served with these specs", fatal=False))
        elif files:
            fixtures.problems.append(Problem(folder, "$", "no loaded spec has an operation with this "
                                             "x-operationId; the folder's cases cannot be served"))
    return fixtures


def _is_bundled(folder: Path) -> bool:
    try:
        return folder.resolve().parent == BUNDLED_FIXTURES.resolve()
    except OSError:
        return False


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


def _case_files(folder: Path) -> list:
    with os.scandir(folder) as entries:
        return sorted(folder / e.name for e in entries if is_case_name(e.name) and _is_file(folder, e))


def _is_file(folder: Path, entry) -> bool:
    # A DirEntry knows a regular file without a stat (a stat per file adds up over thousands of files at start-up); a
    # symlink is followed, and its errors ignored, exactly as Path.is_file does.
    return (folder / entry.name).is_file() if entry.is_symlink() else entry.is_file()


def _load_france_connect(files, fixtures, reads):
    for path in files:
        data, problems = reads[path]
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


def _load_operation(operation_id, files, op, fixtures, checker, reads):
    fixtures.cases.setdefault(operation_id, {})
    fixtures.ordered.setdefault(operation_id, [])
    fixtures.identities.setdefault(operation_id, [])
    for path in files:
        data, problems = reads[path]
        fixtures.problems.extend(problems)
        if data is None:
            continue
        dated, wrong = dates.scan(data["payload"])
        raw_params = data["params"] or {}
        dated_params, wrong_params = dates.scan(raw_params, "$.params")
        description = str(data.get("description") or "").strip()
        wrong += wrong_params + dates.problems(description, "$.description")
        if wrong:  # a relative date that does not parse: the case cannot be answered
            fixtures.problems.extend(Problem(path, where, message) for where, message in wrong)
            continue
        # Params with relative dates (a quotient familial's `annee`, an age the DSNJ accepts) are
        # matched on their value today: the day enters the key here, and in FixtureSet.on.
        case = Case(operation_id=operation_id, file=path, description=dates.resolve(description, clock.today()),
                    params=dates.resolve(raw_params, fixtures.day) if dated_params else raw_params,
                    status=data["status"], payload=data["payload"], latency_ms=int(data.get("latency_ms") or 0),
                    checker=checker, dated=dated, raw_params=raw_params if dated_params else None)
        fixtures.dated_params = fixtures.dated_params or dated_params
        _index(fixtures, case, op)


def _index(fixtures, case, op):
    """Add a case to the set's index under its key (case_key of its params on the set's day)."""
    operation_id, path = case.operation_id, case.file
    index = fixtures.cases.setdefault(operation_id, {})
    case.key = case_key(operation_id, case.params)
    fixtures.ordered.setdefault(operation_id, []).append(case)
    if path.stem == "404" and operation_id not in fixtures.fallback:
        fixtures.fallback[operation_id] = case
    if case.key in index:
        other = index[case.key]
        problem = Problem(path, "$.params", f"same params as {other.file.name} as production reads them "
                          f"({describe_key(case.key)}); {other.file.name} answers, this case is never served",
                          fatal=False)
        fixtures.problems.append(problem)
        fixtures.shadowed.append(problem)
        return
    index[case.key] = case
    if op.france_connect:
        fixtures.identities.setdefault(operation_id, []).append((canonical_identity(case.params), case))


def describe_key(key: frozenset) -> str:
    """A key as production's mock query string reads it (`name=value&...`, sorted)."""
    return "&".join(f"{name}={','.join(values)}" for name, values in sorted(key)) or "no parameter"
