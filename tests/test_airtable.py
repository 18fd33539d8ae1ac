"""Airtable sync, end to end: the real pyairtable client (inside the real `particulier-sandbox
airtable` command, or a real gunicorn sandbox) against tests/airtable_server.py on 127.0.0.1."""
from __future__ import annotations

import datetime
import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from .airtable_server import AirtableServer
from .conftest import RECIPIENT, token_for
from sandbox.airtable.cells import column_order, from_record, to_record
from sandbox.airtable.common import SyncError, same
from sandbox.airtable.files import case_files, read_case, synced_folders
from sandbox.airtable.sync import Syncer
from sandbox.settings import BUNDLED_FIXTURES, BUNDLED_SPEC
from sandbox.production.spec import load_specs

TOKEN = "patSandboxTest.7f3c9a1e5b2d4c6e8f0a1b3c5d7e9f1a"
BASE = "appSandboxTest001"
OPERATIONS = load_specs([BUNDLED_SPEC]).by_operation_id()


# --- helpers -------------------------------------------------------------------------------
@pytest.fixture
def airtable():
    server = AirtableServer(TOKEN).start()
    server.state.create_base(BASE)
    yield server
    server.stop()


@pytest.fixture
def population(tmp_path):
    """The WHOLE bundled population, as it is at test time, in a folder the test may change."""
    target = tmp_path / "fixtures"
    shutil.copytree(BUNDLED_FIXTURES, target)
    return target


@pytest.fixture
def small_population(tmp_path):
    """The three smallest synced folders of the bundled population (fast fault tests)."""
    kept, _ = synced_folders(BUNDLED_FIXTURES, OPERATIONS)
    sizes = sorted(kept, key=lambda name: (len(case_files(BUNDLED_FIXTURES / name)), name))
    target = tmp_path / "small"
    target.mkdir()
    for name in sizes[:3]:
        shutil.copytree(BUNDLED_FIXTURES / name, target / name)
    return target


def cli_env(server, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "AIRTABLE_"))}
    env.update(AIRTABLE_TOKEN=TOKEN, AIRTABLE_ENDPOINT_URL=server.url, AIRTABLE_BASE_ID=BASE,
               SANDBOX_AIRTABLE_RATE="500", SANDBOX_AIRTABLE_BACKOFF="0.01")
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def cli(server, *args, fixtures, env=None, spec=None):
    command = [sys.executable, "-m", "sandbox", "airtable", *args, "--fixtures", str(fixtures)]
    if spec:
        command += ["--spec", str(spec)]
    result = subprocess.run(command, env=env or cli_env(server), capture_output=True, text=True, timeout=600)
    assert TOKEN not in result.stdout + result.stderr, "the Airtable token was printed"
    return result


def snapshot(folder: Path) -> dict:
    """relative path -> (bytes, mtime) of every file."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def contents(folder: Path) -> dict:
    return {k: v for k, (v, _) in snapshot(folder).items()}


def leftovers(folder: Path) -> list:
    """Staging folders a pull left beside the target."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.airtable-"))


def case_count(folder: Path) -> int:
    kept, _ = synced_folders(folder, OPERATIONS)
    return sum(len(case_files(folder / name)) for name in kept)


def writes(server) -> int:
    return sum(1 for _, method, path in server.state.calls if method != "GET" and "/meta/" not in path
               and not path.endswith("/listRecords"))


def some_record(server, base=BASE):
    """Any record of any table (the first table holding one): (table name, record)."""
    for name in sorted(server.state.bases[base]):
        records = server.state.records(base, name)
        if records:
            return name, records[0]
    raise AssertionError("the base is empty")


def file_of(folder: Path, table: str, case: str) -> Path:
    return case_files(folder / table)[case]


# --- layout and types ----------------------------------------------------------------------
TYPES_SPEC = """
openapi: 3.0.3
info: {title: types, version: '1'}
paths:
  /v3/test/types/identite:
    get:
      parameters:
        - {name: code, in: query, schema: {type: string}}
        - {name: annee, in: query, schema: {type: integer}}
        - {name: 'prenoms[]', in: query, schema: {type: array, items: {type: string}}}
        - {name: recipient, in: query, required: true, schema: {type: string}}
      responses:
        '200':
          x-operationId: test_types
          description: ok
          content: {application/json: {schema: {type: object}}}
        '404':
          description: not found
          content: {application/json: {schema: {type: object, required: [error]}}}
"""

TYPES_CASE = """\
# a comment the round trip keeps
description: "Types that must survive"
params:
  code: '0000354'
  annee: 1754
  prenoms: [Jean, Pierre]
status: 200
payload:
  echelon: '0bis'
  annee: 1754
  ratio: 0.5
  vide: ''
  rien: null
  oui: true
  non: false
  code: '0000354'
  date: 2001-11-05          # unquoted: a YAML date, not a string
  texte_date: '2001-11-05'
  espaces: '  padded  '
  multi: "ligne 1\\nligne 2"
  bizarre: {"cle.avec.points": {a: 1}}   # a key that cannot be a column: the mapping is one JSON cell
  enfants:
    - {prenom: A, age: 3}
    - {prenom: B, age: null}
  vides: {}
  liste_vide: []
  nombres: [1, "1", 1.0, true]
  dates: [2001-01-01]
  nested: {a: {b: {c: 'x'}}}
latency_ms: 0
extra_key: kept
"""

JSON_PAYLOAD_CASE = """\
description: official staging style, payload as a JSON string
params: {code: '404'}
status: 404
payload: '{"error": "not_found", "reason": "r", "message": "m"}'
"""


@pytest.fixture
def typed(tmp_path):
    spec = tmp_path / "types.yml"
    spec.write_text(TYPES_SPEC)
    target = tmp_path / "typed"
    (target / "test_types").mkdir(parents=True)
    (target / "test_types" / "200_types.yaml").write_text(TYPES_CASE)
    (target / "test_types" / "404.yaml").write_text(JSON_PAYLOAD_CASE)
    return spec, target


@pytest.mark.slow
def test_cells_are_readable_and_types_survive_the_round_trip(airtable, typed, tmp_path):
    spec, target = typed
    before = snapshot(target)
    assert cli(airtable, "push", fixtures=target, spec=spec).returncode == 0

    record = airtable.state.find(BASE, "test_types", "200_types")["fields"]
    assert record["payload.echelon"] == "0bis"            # strings stay plain in their cell
    assert record["params.code"] == "0000354"
    assert record["status"] == 200
    assert yaml.safe_load(record["payload.bizarre"]) == {"cle.avec.points": {"a": 1}}
    assert yaml.safe_load(record["payload.dates"]) == [datetime.date(2001, 1, 1)]  # YAML keeps the date
    assert yaml.safe_load(record["payload.enfants"]) == [{"prenom": "A", "age": 3}, {"prenom": "B", "age": None}]
    types = yaml.safe_load(record["_types"])
    assert types["payload.annee"] == "int" and types["payload.rien"] == "null" and types["payload.oui"] == "bool"
    assert "payload.echelon" not in types
    columns = [f["name"] for f in airtable.state.table(BASE, "test_types").fields]
    assert columns[0] == "case" and columns[-1] == "_types" and "payload.rien" in columns

    # pulled into the same folder: nothing changed, so every byte (and comment) stays
    result = cli(airtable, "pull", fixtures=target, spec=spec)
    assert result.returncode == 0, result.stderr
    assert snapshot(target) == before

    # pulled into an empty folder: the normal form, identical in meaning, types included
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert cli(airtable, "pull", fixtures=fresh, spec=spec).returncode == 0
    for name in ("200_types.yaml", "404.yaml"):
        original = read_case(target / "test_types" / name)
        pulled = read_case(fresh / "test_types" / name)
        assert same(pulled, original), name
    pulled = yaml.safe_load((fresh / "test_types" / "200_types.yaml").read_text())
    assert pulled["payload"]["code"] == "0000354" and pulled["payload"]["annee"] == 1754
    assert pulled["payload"]["nombres"] == [1, "1", 1.0, True] and type(pulled["payload"]["nombres"][2]) is float
    assert list(pulled)[:4] == ["description", "params", "status", "payload"]

    # the normal form is a fixed point: a second round trip is byte-identical
    airtable.state.create_base("appSecondBase0001")
    env = cli_env(airtable, AIRTABLE_BASE_ID="appSecondBase0001")
    assert cli(airtable, "push", fixtures=fresh, spec=spec, env=env).returncode == 0
    again = tmp_path / "again"
    again.mkdir()
    assert cli(airtable, "pull", fixtures=again, spec=spec, env=env).returncode == 0
    assert contents(again) == contents(fresh)


def test_edited_cells_keep_their_type(typed):
    spec, target = typed
    record = to_record("200_types", read_case(target / "test_types" / "200_types.yaml"), "x")
    columns = list(record)
    record.update({"payload.annee": "1755", "payload.oui": "false", "payload.echelon": "7", "payload.rien": "rempli"})
    doc = from_record(record, column_order(columns), "record")
    assert doc["payload"]["annee"] == 1755 and doc["payload"]["oui"] is False
    assert doc["payload"]["echelon"] == "7"      # a string column stays a string, even when it looks like a number
    assert doc["payload"]["rien"] == "rempli"
    record["payload.annee"] = "mille"
    with pytest.raises(SyncError, match=r"record, field payload.annee: 'mille' is not an integer"):
        from_record(record, columns, "record")


# --- the whole population ------------------------------------------------------------------
@pytest.mark.slow
def test_push_then_pull_of_the_whole_population_is_byte_identical(airtable, population):
    before = snapshot(population)
    cases = case_count(population)
    assert cases > 0

    first = cli(airtable, "push", fixtures=population)
    assert first.returncode == 0, first.stderr
    assert f"push: {cases} created, 0 updated, 0 deleted, 0 unchanged" in first.stdout
    tables = airtable.state.bases[BASE]
    assert sum(len(t.records) for t in tables.values()) == cases
    assert 0 < airtable.state.max_batch <= 10

    written = writes(airtable)
    second = cli(airtable, "push", fixtures=population)
    assert second.returncode == 0, second.stderr
    assert f"push: 0 created, 0 updated, 0 deleted, {cases} unchanged" in second.stdout
    assert writes(airtable) == written, "an idempotent push wrote records"

    pulled = cli(airtable, "pull", fixtures=population)
    assert pulled.returncode == 0, pulled.stderr
    assert f"pull: {cases} records, 0 file(s) changed" in pulled.stdout
    assert snapshot(population) == before  # bytes and mtimes: nothing was rewritten
    assert leftovers(population) == []


@pytest.mark.slow
def test_the_normal_form_of_the_whole_population_is_a_fixed_point(airtable, population, tmp_path):
    assert cli(airtable, "push", fixtures=population).returncode == 0
    first = tmp_path / "first"
    first.mkdir()
    result = cli(airtable, "pull", fixtures=first)
    assert result.returncode == 0, result.stderr

    kept, _ = synced_folders(population, OPERATIONS)
    for name in kept:
        originals = case_files(population / name)
        pulled = case_files(first / name)
        assert originals.keys() == pulled.keys(), name
        for stem, path in originals.items():
            assert same(read_case(pulled[stem]), read_case(path)), f"{name}/{path.name}"

    airtable.state.create_base("appSecondBase0001")
    env = cli_env(airtable, AIRTABLE_BASE_ID="appSecondBase0001")
    assert cli(airtable, "push", fixtures=first, env=env).returncode == 0
    second = tmp_path / "second"
    second.mkdir()
    assert cli(airtable, "pull", fixtures=second, env=env).returncode == 0
    assert contents(second) == contents(first)


# --- pull: edits, dry run, atomicity ------------------------------------------------------
@pytest.mark.slow
def test_pull_writes_an_edit_and_dry_run_only_shows_it(airtable, small_population):
    assert cli(airtable, "push", fixtures=small_population).returncode == 0
    table, record = some_record(airtable)
    case = record["fields"]["case"]
    path = file_of(small_population, table, case)
    before = snapshot(small_population)
    airtable.state.edit(BASE, table, case, description="Décrit dans Airtable")
    started = airtable.state.add(BASE, table, description="a row someone is typing in, no case yet")

    dry = cli(airtable, "pull", "--dry-run", fixtures=small_population)
    assert dry.returncode == 0, dry.stderr
    assert f"--- a/small/{table}/{path.name}" in dry.stdout
    assert "+description: Décrit dans Airtable" in dry.stdout
    assert snapshot(small_population) == before

    real = cli(airtable, "pull", fixtures=small_population)
    assert real.returncode == 0, real.stderr
    assert f"skipped 1 record(s) without a case: {table}/{started}" in real.stderr
    assert f"1 file(s) changed: {table}/{path.name}" in real.stdout
    assert yaml.safe_load(path.read_text())["description"] == "Décrit dans Airtable"
    after = snapshot(small_population)
    changed = [name for name in before if after[name] != before[name]]
    assert changed == [f"{table}/{path.name}"]
    assert leftovers(small_population) == []


@pytest.mark.slow
def test_a_record_deleted_in_airtable_removes_its_file(airtable, small_population):
    assert cli(airtable, "push", fixtures=small_population).returncode == 0
    table, record = some_record(airtable)
    path = file_of(small_population, table, record["fields"]["case"])
    with airtable.state.lock:
        del airtable.state.table(BASE, table).records[record["id"]]
    assert cli(airtable, "pull", fixtures=small_population).returncode == 0
    assert not path.exists()


@pytest.mark.slow
@pytest.mark.parametrize("cells, field", [
    ({"status": 299}, "status"),                     # not a status the spec declares: the spec check refuses it
    ({"_types": "{broken"}, "_types"),               # not JSON
    ({"status": "deux cents"}, "status"),            # not a number
    ({"case": "../escape"}, "case"),                 # not a file name
])
def test_an_invalid_record_writes_nothing_and_is_named(airtable, small_population, cells, field):
    assert cli(airtable, "push", fixtures=small_population).returncode == 0
    table, record = some_record(airtable)
    other_table = sorted(airtable.state.bases[BASE])[-1]
    other = airtable.state.records(BASE, other_table)[-1]
    airtable.state.edit(BASE, other_table, other["fields"]["case"], description="a valid edit elsewhere")
    before = snapshot(small_population)
    airtable.state.edit(BASE, table, record["fields"]["case"], **cells)

    result = cli(airtable, "pull", fixtures=small_population)
    assert result.returncode == 1
    assert f"table {table}, record {record['id']}" in result.stderr
    assert f"field {field}:" in result.stderr
    assert snapshot(small_population) == before  # not even the valid edit: all or nothing
    assert leftovers(small_population) == []


@pytest.mark.slow
def test_an_empty_table_does_not_wipe_a_folder(airtable, small_population):
    assert cli(airtable, "push", fixtures=small_population).returncode == 0
    table, _ = some_record(airtable)
    with airtable.state.lock:
        airtable.state.table(BASE, table).records.clear()
    before = snapshot(small_population)
    result = cli(airtable, "pull", fixtures=small_population)
    assert result.returncode == 1 and f"table {table} is empty" in result.stderr
    assert snapshot(small_population) == before


# --- push: plan, prune, init ---------------------------------------------------------------
@pytest.mark.slow
def test_push_dry_run_writes_nothing_and_prune_deletes_strays(airtable, small_population):
    dry = cli(airtable, "push", "--dry-run", fixtures=small_population)
    assert dry.returncode == 0, dry.stderr
    assert "would create" in dry.stdout and "(dry run: nothing written)" in dry.stdout
    assert airtable.state.bases[BASE] == {}
    assert all(method == "GET" for _, method, _ in airtable.state.calls)

    assert cli(airtable, "push", fixtures=small_population).returncode == 0
    table, record = some_record(airtable)
    case = record["fields"]["case"]
    file_of(small_population, table, case).unlink()

    kept = cli(airtable, "push", fixtures=small_population)
    assert "no case file (kept; --prune deletes them)" in kept.stdout and case in kept.stdout
    assert any(r["fields"]["case"] == case for r in airtable.state.records(BASE, table))

    plan = cli(airtable, "push", "--prune", "--dry-run", fixtures=small_population)
    assert f"{table}: would delete 1: {case}" in plan.stdout
    assert any(r["fields"]["case"] == case for r in airtable.state.records(BASE, table))

    pruned = cli(airtable, "push", "--prune", fixtures=small_population)
    assert pruned.returncode == 0 and "1 deleted" in pruned.stdout
    assert not any(r["fields"]["case"] == case for r in airtable.state.records(BASE, table))


@pytest.mark.slow
def test_push_updates_a_changed_file_and_empties_dropped_cells(airtable, small_population):
    assert cli(airtable, "push", fixtures=small_population).returncode == 0
    table, record = some_record(airtable)
    case = record["fields"]["case"]
    path = file_of(small_population, table, case)
    doc = yaml.safe_load(path.read_text())
    doc["description"] = "changed locally"
    doc["latency_ms"] = 5
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    result = cli(airtable, "push", fixtures=small_population)
    assert f"{table}: update 1: {case}" in result.stdout
    fields = airtable.state.find(BASE, table, case)["fields"]
    assert fields["description"] == "changed locally" and fields["latency_ms"] == "5"

    del doc["latency_ms"]
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    assert cli(airtable, "push", fixtures=small_population).returncode == 0
    assert "latency_ms" not in airtable.state.find(BASE, table, case)["fields"]


@pytest.mark.slow
def test_init_creates_missing_tables_and_fields_once(airtable, small_population):
    result = cli(airtable, "init", fixtures=small_population)
    assert result.returncode == 0, result.stderr
    kept, _ = synced_folders(small_population, OPERATIONS)
    assert sorted(airtable.state.bases[BASE]) == sorted(kept)
    for name in kept:
        fields = airtable.state.table(BASE, name).fields
        assert fields[0]["name"] == "case" and fields[-1]["name"] == "_types"
        assert {"type": "number", "options": {"precision": 0}}.items() <= next(
            f for f in fields if f["name"] == "status").items()
    assert "init: 3 table(s) and 0 field(s) created" in result.stdout

    again = cli(airtable, "init", fixtures=small_population)
    assert "init: 0 table(s) and 0 field(s) created" in again.stdout

    name = kept[0]
    path = next(iter(case_files(small_population / name).values()))
    path.write_text(path.read_text() + "notes: added later\n")
    added = cli(airtable, "init", fixtures=small_population)
    assert f"{name}: created fields notes" in added.stdout
    assert airtable.state.table(BASE, name).field("notes")["type"] == "multilineText"


# --- faults --------------------------------------------------------------------------------
@pytest.mark.slow
def test_429_on_every_third_call_succeeds_with_backoff(airtable, small_population):
    airtable.state.rate_limit_every = 3
    before = snapshot(small_population)
    pushed = cli(airtable, "push", fixtures=small_population)
    assert pushed.returncode == 0, pushed.stderr
    pulled = cli(airtable, "pull", fixtures=small_population)
    assert pulled.returncode == 0, pulled.stderr
    assert airtable.state.throttled >= 3
    assert sum(len(t.records) for t in airtable.state.bases[BASE].values()) == case_count(small_population)
    assert snapshot(small_population) == before


@pytest.mark.slow
def test_a_429_storm_fails_the_pull_and_writes_nothing(airtable, small_population):
    assert cli(airtable, "push", fixtures=small_population).returncode == 0
    table, record = some_record(airtable)
    airtable.state.edit(BASE, table, record["fields"]["case"], description="never arrives")
    before = snapshot(small_population)
    airtable.state.rate_limit_always = True
    result = cli(airtable, "pull", fixtures=small_population)
    assert result.returncode == 1
    assert "429 Too Many Requests" in result.stderr
    assert snapshot(small_population) == before


@pytest.mark.slow
def test_a_connection_dropped_mid_pull_writes_nothing(airtable, small_population):
    assert cli(airtable, "push", fixtures=small_population).returncode == 0
    for table in sorted(airtable.state.bases[BASE]):  # edits that the pull would write
        record = airtable.state.records(BASE, table)[0]
        airtable.state.edit(BASE, table, record["fields"]["case"], description="never arrives")
    before = snapshot(small_population)
    airtable.state.drop_lists_after = 1  # the second table's answer is cut in the middle
    result = cli(airtable, "pull", fixtures=small_population)
    assert result.returncode == 1
    assert "reading table" in result.stderr and "connection to Airtable was lost" in result.stderr
    assert snapshot(small_population) == before
    assert leftovers(small_population) == []


@pytest.mark.slow
def test_a_422_on_push_fails_clearly(airtable, small_population):
    airtable.state.reject_writes = True
    result = cli(airtable, "push", fixtures=small_population)
    assert result.returncode == 1
    assert "Airtable answered 422 INVALID_VALUE_FOR_COLUMN" in result.stderr
    assert "writing table" in result.stderr and "(cases " in result.stderr


@pytest.mark.slow
def test_a_bad_or_missing_token_is_reported_without_being_printed(airtable, small_population):
    wrong = "patWrongToken.0000aaaa1111bbbb"
    result = cli(airtable, "push", fixtures=small_population, env=cli_env(airtable, AIRTABLE_TOKEN=wrong))
    assert result.returncode == 1
    assert "401" in result.stderr and "check AIRTABLE_TOKEN" in result.stderr
    assert wrong not in result.stdout + result.stderr
    missing = cli(airtable, "pull", fixtures=small_population, env=cli_env(airtable, AIRTABLE_TOKEN=None))
    assert missing.returncode == 2 and "AIRTABLE_TOKEN is not set" in missing.stderr


def test_requests_stay_under_five_per_second_by_default(monkeypatch):
    """Airtable allows 5 requests per second per base: the client spaces them so, on a clock of
    the test's own (what it is asked to wait, never how long it took)."""
    from types import SimpleNamespace

    from pyairtable import Api

    from sandbox.airtable import client
    now, sent = [1000.0], []
    monkeypatch.setattr(client, "time", SimpleNamespace(monotonic=lambda: now[0],
                                                         sleep=lambda seconds: now.__setitem__(0, now[0] + seconds)))
    monkeypatch.setattr(Api, "request", lambda self, *args, **kwargs: sent.append(now[0]) or {})
    api = client.connect({"AIRTABLE_TOKEN": "patXXXX"})  # no SANDBOX_AIRTABLE_RATE: the default
    for _ in range(30):
        api.request("GET", "https://airtable.invalid/v0/base/table")
    assert len(sent) == 30
    assert all(later - earlier >= 1.0 - 1e-9 for earlier, later in zip(sent, sent[5:])), "more than 5 requests in 1 s"
    assert sent[-1] - sent[0] == pytest.approx(29 / 5), "and no slower than that"


# --- serve --airtable-sync -----------------------------------------------------------------
def _string_leaves(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _string_leaves(value, f"{path}.{key}" if path else key)
    elif isinstance(node, str) and node.strip() == node and node:
        yield path, node


def _at(body, path):
    for part in path.split("."):
        if not isinstance(body, dict) or part not in body:
            return None
        body = body[part]
    return body


def _edit_candidates(folder: Path):
    """(operation, case, params, payload path, old value, new value): a string of one case
    replaced by another case's value at the same path, so the edit stays valid for the spec."""
    kept, _ = synced_folders(folder, OPERATIONS)
    for name in kept:
        op = OPERATIONS.get(name)
        if not op or op.france_connect_only or op.gone or "{" in op.path:
            continue
        docs = {stem: read_case(path) for stem, path in case_files(folder / name).items()}
        values = {}
        for doc in docs.values():
            for path, value in _string_leaves(doc.get("payload")):
                values.setdefault(path, set()).add(value)
        for stem, doc in docs.items():
            params = doc.get("params") or {}
            if doc.get("status") != 200 or not params or any(isinstance(v, (list, dict)) for v in params.values()):
                continue
            for path, value in _string_leaves(doc.get("payload")):
                others = sorted(v for v in values[path] if v.lower() != value.lower())
                if others:
                    yield op, stem, params, path, value, others[0]


def _call(server, op, params):
    query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    token = token_for()
    if op.v3:
        query["recipient"] = RECIPIENT
        headers = {"Authorization": f"Bearer {token}"}
    else:
        headers = {"X-Api-Key": token}
    return requests.get(server.url + op.path, params=query, headers=headers, timeout=10)


def _wait_for(predicate, timeout=45):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


@pytest.mark.slow
def test_a_running_sandbox_serves_airtable_edits_and_refuses_invalid_ones(airtable, population, start_server):
    assert cli(airtable, "push", fixtures=population).returncode == 0
    env = {"AIRTABLE_TOKEN": TOKEN, "AIRTABLE_ENDPOINT_URL": airtable.url, "AIRTABLE_BASE_ID": BASE,
           "SANDBOX_AIRTABLE_RATE": "200"}
    server = start_server("--airtable-sync", "1", "--fixtures", str(population), "--workers", "2", env=env)

    for tries, (op, case, params, path, old, new) in enumerate(_edit_candidates(population)):
        assert tries < 30, "no editable case answered as its file says"
        answer = _call(server, op, params)
        if answer.status_code == 200 and _at(answer.json(), path) == old:
            break
    else:
        pytest.fail("the population has no case with an editable string")

    airtable.state.edit(BASE, op.operation_id, case, **{f"payload.{path}": new})
    assert _wait_for(lambda: _at(_call(server, op, params).json(), path) == new), server.output()
    served_file = file_of(population, op.operation_id, case)
    after_valid = served_file.read_bytes()
    assert new in after_valid.decode()

    record_id = airtable.state.find(BASE, op.operation_id, case)["id"]
    airtable.state.edit(BASE, op.operation_id, case, status=299)
    assert _wait_for(lambda: f"record {record_id}" in server.output() and "field status" in server.output()), \
        server.output()
    assert "airtable sync failed, still serving the last good fixtures" in server.output()
    answer = _call(server, op, params)
    assert answer.status_code == 200 and _at(answer.json(), path) == new
    assert served_file.read_bytes() == after_valid
    assert TOKEN not in server.output()


@pytest.mark.slow
def test_only_one_worker_pulls_at_a_time(airtable, small_population, make_settings, monkeypatch):
    from sandbox import create_app
    for name, value in cli_env(airtable).items():
        if name.startswith(("AIRTABLE_", "SANDBOX_AIRTABLE")):
            monkeypatch.setenv(name, value)
    assert cli(airtable, "push", fixtures=small_population).returncode == 0
    # start=False: no sync thread of the app's own; the Syncers below are the workers'
    app = create_app(make_settings(fixtures=(small_population,), airtable_sync=60.0, airtable_base=BASE), start=False)
    syncer = Syncer(app.extensions["sandbox"])
    syncer.lock_path.parent.mkdir(parents=True, exist_ok=True)

    with open(syncer.lock_path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another worker is pulling
        calls = len(airtable.state.calls)
        syncer.tick()
        assert len(airtable.state.calls) == calls
    syncer.tick()
    assert len(airtable.state.calls) > calls  # the lock is free: this worker pulls
    calls = len(airtable.state.calls)
    Syncer(app.extensions["sandbox"]).tick()  # a second worker, right after: no second pull
    assert len(airtable.state.calls) == calls
