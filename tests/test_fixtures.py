"""The fixture engine: loading, checking, matching, hot reload, refusing a broken set."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
import requests
import yaml
from click.testing import CliRunner

from sandbox.cli import main
from sandbox.settings import ConfigError

from .conftest import RECIPIENT, ROOT, token_for, v2_headers, v3_headers

V2_OP = "api_particulier_v2_pole_emploi_statut"
V3_OP = "api_particulier_v3_france_travail_statut_with_identifiant"


def _v2_payload(name="ESSAI"):
    return {"identifiant": "x", "civilite": "M.", "nom": name, "nomUsage": None, "prenom": "Paul", "sexe": "M",
            "dateNaissance": "1990-01-01", "codeCertificationCNAV": "VC", "telephone": "0100000000", "telephone2": None,
            "email": None, "adresse": {"INSEECommune": "75115", "codePostal": "75015", "localite": "75015 PARIS",
                                       "ligneVoie": "1 RUE DES TESTS", "ligneComplementDestinaire": None,
                                       "ligneComplementAdresse": None, "ligneComplementDistribution": None,
                                       "ligneNom": "PAUL ESSAI"},
            "dateInscription": "2024-01-02", "dateCessationInscription": None, "codeCategorieInscription": 1,
            "libelleCategorieInscription": "PERSONNE SANS EMPLOI DISPONIBLE DUREE INDETERMINEE PLEIN TPS"}


def write_case(folder, name, params, status=200, payload=None, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    body = {"description": f"cas {name}", "params": params, "status": status,
            "payload": payload if payload is not None else _v2_payload(), **extra}
    (folder / name).write_text(yaml.safe_dump(body, allow_unicode=True))


@pytest.fixture
def population(tmp_path):
    root = tmp_path / "fixtures"
    write_case(root / V2_OP, "200_paul.yaml", {"identifiant": "paul"})
    write_case(root / V2_OP, "404.yaml", {"identifiant": "personne"}, 404,
               {"error": "not_found", "reason": "absent", "message": "absent"})
    return root


def _check(*args):
    return CliRunner().invoke(main, ["fixtures", "check", *args])


def test_check_is_clean_and_matching_is_case_insensitive(make_app, population):
    assert _check("--fixtures", str(population)).exit_code == 0
    client = make_app(fixtures=(population,)).test_client()
    response = client.get(f"/api/v2/situations-pole-emploi?identifiant=PAUL", headers=v2_headers(token_for()))
    assert response.status_code == 200 and response.get_json()["nom"] == "ESSAI"


def test_extra_or_missing_parameter_means_no_match_and_the_folders_404_answers(make_app, population):
    client = make_app(fixtures=(population,)).test_client()
    response = client.get("/api/v2/situations-pole-emploi?identifiant=paul&extra=1", headers=v2_headers(token_for()))
    assert response.status_code == 404 and response.get_json()["reason"] == "absent"
    near = response.headers["X-Sandbox-Near-Miss"]
    assert "200_paul.yaml" in near and "extra" in near


def test_no_404_file_falls_back_to_a_not_found_in_the_routes_format(make_app, population):
    client = make_app(fixtures=(population,)).test_client()
    response = client.get(f"/v3/france_travail/statut/identifiant?identifiant=x&recipient={RECIPIENT}",
                          headers=v3_headers(token_for()))
    assert response.status_code == 404
    assert response.get_json()["errors"][0]["code"] == "24003"


def test_payload_as_json_string_as_the_official_files_write_it(make_app, tmp_path):
    import json
    root = tmp_path / "fx"
    write_case(root / V2_OP, "200.yaml", {"identifiant": "json"}, payload=json.dumps(_v2_payload("JSON")))
    client = make_app(fixtures=(root,)).test_client()
    body = client.get("/api/v2/situations-pole-emploi?identifiant=json", headers=v2_headers(token_for())).get_json()
    assert body["nom"] == "JSON"


def test_prenoms_arrays_match_in_order(make_app, tmp_path):
    root = tmp_path / "fx"
    op = "api_particulier_v2_cnav_allocation_adulte_handicape"
    write_case(root / op, "200.yaml", {"nomNaissance": "ESSAI", "prenoms": ["Anne", "Marie"], "sexe": "F"},
               payload={"status": "beneficiaire", "dateDebut": "2024-01-01"})
    client = make_app(fixtures=(root,)).test_client()
    ok = client.get("/api/v2/allocation-adulte-handicape?nomNaissance=essai&prenoms[]=ANNE&prenoms[]=marie&sexe=F",
                    headers=v2_headers(token_for()))
    assert ok.status_code == 200
    swapped = client.get("/api/v2/allocation-adulte-handicape?nomNaissance=essai&prenoms[]=marie&prenoms[]=anne&sexe=F",
                         headers=v2_headers(token_for()))
    assert swapped.status_code == 404


def test_bad_fixtures_are_each_named(tmp_path):
    root = tmp_path / "broken"
    (root / V2_OP).mkdir(parents=True)
    (root / V2_OP / "malformed.yaml").write_text("params: [unclosed\nstatus: 200\n")
    write_case(root / V2_OP, "schema.yaml", {"identifiant": "a"}, payload={**_v2_payload(), "codeCategorieInscription": "un"})
    write_case(root / V2_OP, "same_1.yaml", {"identifiant": "b"})
    write_case(root / V2_OP, "same_2.yaml", {"identifiant": "B"})
    write_case(root / "api_particulier_v9_nothing", "200.yaml", {"identifiant": "c"})
    (root / V2_OP / "huge.yaml").write_text("description: x\n" + "#" * (1 << 20) + "\n")
    (root / V2_OP / "nostatus.yaml").write_text("params: {identifiant: d}\npayload: {}\n")
    result = _check("--fixtures", str(root))
    assert result.exit_code == 1
    lines = result.output.splitlines()

    def line_for(name):
        return next(line for line in lines if name in line)
    assert "not valid YAML" in line_for("malformed.yaml")
    assert "$.payload.codeCategorieInscription" in line_for("schema.yaml")
    assert "same params as same_1.yaml" in line_for("same_2.yaml")
    assert "no loaded spec" in line_for("api_particulier_v9_nothing")
    assert "larger than" in line_for("huge.yaml")
    assert "$.status" in line_for("nostatus.yaml")


@pytest.mark.slow
def test_server_refuses_to_start_on_a_broken_set(make_app, tmp_path):
    root = tmp_path / "broken"
    (root / V2_OP).mkdir(parents=True)
    (root / V2_OP / "malformed.yaml").write_text("params: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed.yaml"):
        make_app(fixtures=(root,))
    result = subprocess.run([sys.executable, "-m", "sandbox", "serve", "--fixtures", str(root), "--port", "1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "cannot start" in result.stderr and "malformed.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_case_breaking_the_schema_is_served_but_flagged(make_app, tmp_path):
    root = tmp_path / "fx"
    write_case(root / V2_OP, "200.yaml", {"identifiant": "a"}, payload={**_v2_payload(), "codeCategorieInscription": "un"})
    client = make_app(fixtures=(root,)).test_client()
    response = client.get("/api/v2/situations-pole-emploi?identifiant=a", headers=v2_headers(token_for()))
    assert response.status_code == 200
    assert "codeCategorieInscription" in response.headers["X-Sandbox-Fixture-Invalid"]


@pytest.mark.slow
def test_hot_reload_and_broken_edit_keeps_the_last_good_set(start_server, population, tmp_path):
    server = start_server("--fixtures", str(population), env={"SANDBOX_RELOAD_INTERVAL": "0.2"})
    token = token_for()

    def nom(identifiant="paul"):
        response = requests.get(f"{server.url}/api/v2/situations-pole-emploi?identifiant={identifiant}",
                                headers=v2_headers(token), timeout=5)
        return response.status_code, response.json().get("nom")

    def eventually(expected, identifiant="paul"):
        deadline = time.time() + 10
        while time.time() < deadline:
            got = nom(identifiant)
            if got == expected:
                return got
            time.sleep(0.2)
        return got

    assert nom() == (200, "ESSAI")
    write_case(population / V2_OP, "200_paul.yaml", {"identifiant": "paul"}, payload=_v2_payload("MODIFIE"))
    assert eventually((200, "MODIFIE")) == (200, "MODIFIE")
    write_case(population / V2_OP, "200_lea.yaml", {"identifiant": "lea"}, payload=_v2_payload("NOUVELLE"))
    assert eventually((200, "NOUVELLE"), "lea") == (200, "NOUVELLE")
    (population / V2_OP / "200_paul.yaml").write_text("params: [broken\n")
    deadline = time.time() + 10  # until the watcher has seen the broken edit (it says so), no longer
    while not ("malformed" in server.output() or "not valid YAML" in server.output()) and time.time() < deadline:
        time.sleep(0.1)
    assert "malformed" in server.output() or "not valid YAML" in server.output(), "the watcher never reloaded"
    assert nom() == (200, "MODIFIE")  # the broken edit is not served: the last good set is


def test_official_staging_folders_load_unchanged(make_app):
    from .conftest import require_reference
    reference = require_reference()
    app = make_app(specs=(reference / "openapi" / "api-particulier-v2.yaml", reference / "openapi" / "api-particulier-v3.yaml"),
                   fixtures=(reference / "staging-payloads",))
    fixtures = app.extensions["sandbox"].population.current
    assert sum(len(c) for c in fixtures.ordered.values()) > 600
    assert "all_fc" in fixtures.france_connect


# --- reading in a pool at start-up; the watcher's signature --------------------------------
# Run in a fresh process: forking is only safe (and only done) from a single-threaded one,
# and this test session may have left threads behind.
_LOAD_BOTH_WAYS = """
import pickle, sys
from unittest import mock
from sandbox import fixture_files, fixtures
from sandbox.spec import load_specs

def summary(loaded):
    cases = {op: [(c.file, c.description, c.params, c.status, c.payload, c.latency_ms, c.key, c.problem)
                  for c in cases] for op, cases in loaded.ordered.items()}
    return {"cases": cases,
            "index": {op: {key: case.id for key, case in index.items()} for op, index in loaded.cases.items()},
            "fallback": {op: case.id for op, case in loaded.fallback.items()},
            "identities": {op: [(canon, case.id) for canon, case in found] for op, found in loaded.identities.items()},
            "france_connect": loaded.france_connect,
            "problems": [(p.file, p.where, p.message, p.fatal) for p in loaded.problems]}

dirs, specs = sys.argv[1].split(":"), sys.argv[2].split(":")
operations = load_specs(specs).by_operation_id()
with mock.patch.object(fixture_files, "_readers", lambda files: 1):
    one_by_one = fixtures.load(dirs, operations)
pooled = mock.patch.object(fixture_files, "_start_checks", wraps=fixture_files._start_checks)
with mock.patch.object(fixture_files, "_readers", lambda files: 2), pooled as spy, \\
        mock.patch.object(fixture_files.logger, "warning", side_effect=AssertionError("the pool failed")):
    in_pool = fixtures.load(dirs, operations)
assert spy.called
# start-up's way: the parse started before the spec was loaded, the checks after it
with mock.patch.object(fixture_files, "_readers", lambda files: 2), \\
        mock.patch.object(fixture_files.logger, "warning", side_effect=AssertionError("the pool failed")):
    reading = fixtures.Reading(dirs)
    early_operations = load_specs(specs).by_operation_id()
    reading.check(early_operations)
    checking = reading.parsing._check_pool, reading.parsing._checks
    early = fixtures.load(dirs, early_operations, reading)
assert len(reading.parsing._chunks) > 2, "the files were parsed in the pool"
assert checking[0] is not None and len(checking[1]) > 2, "the files were checked in the second pool"
sys.stdout.buffer.write(pickle.dumps((summary(one_by_one), summary(in_pool), summary(early))))
"""


def test_reading_in_a_pool_and_parsing_before_the_spec_give_the_same_fixtures_as_one_by_one():
    import pickle

    from .conftest import REFERENCE
    dirs = [ROOT / "fixtures"]
    specs = [ROOT / "spec" / "open-api.yml"]
    if (REFERENCE / "staging-payloads").is_dir():
        dirs.append(REFERENCE / "staging-payloads")
    result = subprocess.run([sys.executable, "-c", _LOAD_BOTH_WAYS, ":".join(map(str, dirs)),
                             ":".join(map(str, specs))], capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    one_by_one, in_pool, early = pickle.loads(result.stdout)
    assert sum(len(cases) for cases in one_by_one["cases"].values()) > 1000 and one_by_one["problems"]
    for part in one_by_one:
        assert in_pool[part] == one_by_one[part], part
        assert early[part] == one_by_one[part], part


def test_a_broken_pool_falls_back_to_reading_one_by_one(population, monkeypatch, caplog):
    from sandbox import fixture_files, fixtures
    from sandbox.spec import load_specs
    operations = load_specs([ROOT / "spec" / "open-api.yml"]).by_operation_id()
    expected = fixtures.load([population], operations)

    def broken(*args):
        raise OSError("no more processes")
    monkeypatch.setattr(fixture_files, "_readers", lambda files: 2)
    monkeypatch.setattr(fixture_files, "_fork_pool", broken)
    loaded = fixtures.load([population], operations)
    assert "no more processes" in caplog.text
    assert [(c.id, c.payload) for c in loaded.ordered[V2_OP]] == [(c.id, c.payload) for c in expected.ordered[V2_OP]]


def test_a_broken_early_parse_falls_back_to_reading_one_by_one(population, monkeypatch, caplog):
    from sandbox import fixture_files, fixtures
    from sandbox.spec import load_specs
    operations = load_specs([ROOT / "spec" / "open-api.yml"]).by_operation_id()
    expected = fixtures.load([population], operations)

    class BrokenPool:
        def __init__(self, *args, **kwargs):
            raise OSError("no more processes")
    monkeypatch.setattr(fixture_files, "_readers", lambda files: 2)
    monkeypatch.setattr("concurrent.futures.ProcessPoolExecutor", BrokenPool)
    loaded = fixtures.load([population], operations, fixtures.Reading([population]))
    assert "no more processes" in caplog.text
    assert [(c.id, c.payload) for c in loaded.ordered[V2_OP]] == [(c.id, c.payload) for c in expected.ordered[V2_OP]]


def test_only_a_start_up_with_many_files_and_one_thread_reads_in_a_pool(monkeypatch):
    import threading

    from sandbox import fixture_files
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert fixture_files._readers(10) == 1
    monkeypatch.setattr(fixture_files.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert fixture_files._readers(2000) == 2
    monkeypatch.setattr(threading, "active_count", lambda: 2)  # a hot reload, in the watcher thread
    assert fixture_files._readers(2000) == 1


def _edits(population):
    """Every kind of change the watcher must notice, in order: (what, how)."""
    import os
    case = population / V2_OP / "200_paul.yaml"
    stat = case.stat()
    return [
        ("edited in place, same size", lambda: case.write_text(case.read_text().replace("ESSAI", "ESSAY"))),
        ("mtime put back", lambda: os.utime(case, ns=(stat.st_atime_ns, stat.st_mtime_ns))),
        ("added", lambda: write_case(population / V2_OP, "200_lea.yaml", {"identifiant": "lea"})),
        ("renamed", lambda: (population / V2_OP / "200_lea.yaml").rename(population / V2_OP / "200_leo.yaml")),
        ("removed", lambda: (population / V2_OP / "200_leo.yaml").unlink()),
        ("folder added", lambda: (population / V3_OP).mkdir()),
        ("added to the new folder", lambda: write_case(population / V3_OP, "404.yaml", {"identifiant": "x"}, 404,
                                                       {"errors": []})),
        ("folder removed", lambda: shutil.rmtree(population / V3_OP)),
    ]


def test_the_signature_changes_on_any_edit(population):
    from sandbox.fixture_files import signature
    for what, edit in _edits(population):
        before = signature([population])
        time.sleep(0.05)  # the kernel stamps times on a coarse clock: an edit in the same tick looks the same
        edit()
        assert signature([population]) != before, what
    before = signature([population])
    (population / V2_OP / "notes.txt").write_text("not a case")
    assert signature([population]) == before


def test_inotify_tells_the_watcher_when_to_look(population):
    from sandbox.fixture_watch import Changes
    changes = Changes([population])
    if changes.polling:
        import os
        if sys.platform == "linux" and os.environ.get("SANDBOX_REQUIRE_ALL"):
            pytest.fail("no inotify for a Linux temporary folder (SANDBOX_REQUIRE_ALL is set: CI must have it)")
        pytest.skip("no inotify here (not Linux, or not a local filesystem)")
    assert changes.may_have_changed() is False  # a quiet second: one read(2), no scan
    for what, edit in _edits(population):
        edit()
        assert changes.may_have_changed(), what
        assert not changes.may_have_changed(), what
    (population / "api_particulier_v2_x").mkdir()  # a folder created, then filled, before the next look
    assert changes.may_have_changed()
    write_case(population / "api_particulier_v2_x", "200.yaml", {"identifiant": "x"})
    assert changes.may_have_changed()


def test_folders_inotify_could_miss_changes_in_are_polled(population, monkeypatch):
    from sandbox import fixture_watch
    monkeypatch.setattr(fixture_watch, "LOCAL_FILESYSTEMS", frozenset())  # as on NFS, SMB, a VM's shared folder
    changes = fixture_watch.Changes([population])
    assert changes.polling and changes.may_have_changed() and changes.may_have_changed()


@pytest.mark.parametrize("local", [True, False], ids=["inotify", "polling"])
def test_the_watcher_reloads_on_any_edit(population, monkeypatch, local):
    import logging

    from sandbox import fixture_watch, fixtures
    from sandbox.spec import load_specs
    if not local:
        monkeypatch.setattr(fixture_watch, "LOCAL_FILESYSTEMS", frozenset())
    operations = load_specs([ROOT / "spec" / "open-api.yml"]).by_operation_id()
    served = fixtures.Population([population], operations, 0.05, logging.getLogger("test"))
    served.start_watching()
    try:
        for what, edit in _edits(population):
            before = served.current
            time.sleep(0.05)
            edit()
            deadline = time.time() + 5
            while served.current is before and time.time() < deadline:
                time.sleep(0.02)
            assert served.current is not before, what
    finally:
        served.stop_watching()
