"""The fixture engine: loading, checking, matching, hot reload, refusing a broken set."""
from __future__ import annotations

import json

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


def test_a_parameter_production_does_not_read_changes_nothing(make_app, population):
    # France Travail's mock key is `identifiant` alone (siade/app/interactors/france_travail/make_request.rb)
    client = make_app(fixtures=(population,)).test_client()
    response = client.get("/api/v2/situations-pole-emploi?identifiant=paul&extra=1", headers=v2_headers(token_for()))
    assert response.status_code == 200 and response.headers["X-Sandbox-Case"].endswith("/200_paul.yaml")


def test_another_value_means_no_match_and_the_folders_404_answers(make_app, population):
    client = make_app(fixtures=(population,)).test_client()
    response = client.get("/api/v2/situations-pole-emploi?identifiant=pierre&extra=1", headers=v2_headers(token_for()))
    assert response.status_code == 404 and response.get_json()["reason"] == "absent"
    near = json.loads(response.headers["X-Sandbox-Near-Miss"])
    # only what production reads is compared: the unread `extra` is not "unexpected"
    assert near["different"] == ["identifiant"] and near["unexpected"] == [] and near["missing"] == []


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
    born = {"anneeDateDeNaissance": 1990, "moisDateDeNaissance": 4, "jourDateDeNaissance": 12,
            "codeInseeLieuDeNaissance": "75115", "codePaysLieuDeNaissance": "99100"}
    write_case(root / op, "200.yaml", {"nomNaissance": "ESSAI", "prenoms": ["Anne", "Marie"], "sexe": "F", **born},
               payload={"status": "beneficiaire", "dateDebut": "2024-01-01"})
    client = make_app(fixtures=(root,)).test_client()
    query = "&".join(f"{k}={v}" for k, v in born.items())
    ok = client.get(f"/api/v2/allocation-adulte-handicape?nomNaissance=essai&prenoms[]=ANNE&prenoms[]=marie&sexe=F&{query}",
                    headers=v2_headers(token_for()))
    assert ok.status_code == 200, ok.get_json()
    swapped = client.get(f"/api/v2/allocation-adulte-handicape?nomNaissance=essai&prenoms[]=marie&prenoms[]=anne&sexe=F&{query}",
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


def test_check_names_a_case_production_refuses_to_reach(make_app, tmp_path):
    """Production validates the params before any case is looked up: a case they fail is never
    served, and `fixtures check` says so. A 400/422 case documents that refusal; a v2 case of a
    FranceConnect identity is reached with a token of that person, so neither is reported."""
    sdh, mesri = "api_particulier_v3_sdh_statut_sportif_with_identifiant", "api_particulier_v2_mesri_student_status"

    def bundled(folder, name):
        return yaml.safe_load((ROOT / "fixtures" / folder / name).read_text())["payload"]
    root = tmp_path / "fx"
    write_case(root / sdh, "200_chiffres.yaml", {"identifiant": "123"}, payload=bundled(sdh, "200.yaml"))
    write_case(root / sdh, "200_lettres.yaml", {"identifiant": "abc"}, payload=bundled(sdh, "200.yaml"))
    write_case(root / sdh, "422_lettres.yaml", {"identifiant": "xyz"}, 422, bundled(sdh, "422_identifiant_invalide.yaml"))
    write_case(root / mesri, "404_ine.yaml", {"ine": "999000011LL"}, 404, bundled(mesri, "404.yaml"))
    write_case(root / mesri, "404_fc.yaml", {"given_name": "Jean", "family_name": "ESSAI", "birthdate": "2002-01-01",
                                            "gender": "male", "birthplace": "75002"}, 404, bundled(mesri, "404.yaml"))
    result = _check("--fixtures", str(root))
    assert result.exit_code == 1
    reported = {line.split(": ")[0].rsplit("/", 1)[-1]: line for line in result.output.splitlines() if ": $" in line}
    assert set(reported) == {"200_lettres.yaml", "404_ine.yaml"}, result.output
    # production's own words for a non-numeric SDH identifiant (interactors/sdh/validate_identifiant.rb)
    assert reported["200_lettres.yaml"].endswith("200_lettres.yaml: $.params: production refuses these params: "
                                                 "L'identifiant est manquant; the case is never served")
    assert reported["404_ine.yaml"].endswith("$.params: production refuses these params: Le numéro d'INE n'est pas "
                                             "correctement formatté; the case is never served")
    # what the report means: the call with the case's params gets production's error, never the case
    client = make_app(fixtures=(root,)).test_client()
    response = client.get("/v3/sdh/statut_sportif/identifiant", headers=v3_headers(token_for()),
                          query_string={"identifiant": "abc", "recipient": RECIPIENT})
    assert response.status_code == 422 and "X-Sandbox-Case" not in response.headers


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
    # and every answer says so, until an edit fixes it (each worker reloads on its own: a few tries)
    def stale(path="/api/v2/situations-pole-emploi?identifiant=paul"):
        deadline, headers = time.time() + 10, {}
        for _ in range(50):
            headers = requests.get(server.url + path, headers=v2_headers(token), timeout=5).headers
            if ("X-Sandbox-Fixtures-Stale" in headers) == expected or time.time() > deadline:
                break
            time.sleep(0.2)
        return headers.get("X-Sandbox-Fixtures-Stale")
    expected = True
    assert stale().startswith(f"{population / V2_OP / '200_paul.yaml'}: $: not valid YAML: line ")
    assert stale("/sandbox/status") and stale("/sandbox/status")
    status = requests.get(server.url + "/sandbox/status", timeout=5).json()["fixtures"]
    assert status["up_to_date"] is False and "200_paul.yaml" in status["stale"][0]
    write_case(population / V2_OP, "200_paul.yaml", {"identifiant": "paul"}, payload=_v2_payload("REPARE"))
    assert eventually((200, "REPARE")) == (200, "REPARE")
    expected = False
    assert stale() is None and stale() is None


def test_official_staging_folders_load_unchanged(make_app):
    from .conftest import require_reference
    reference = require_reference()
    app = make_app(specs=(reference / "openapi" / "api-particulier-v2.yaml", reference / "openapi" / "api-particulier-v3.yaml"),
                   fixtures=(reference / "staging-payloads",))
    fixtures = app.extensions["sandbox"].population.current
    assert sum(len(c) for c in fixtures.ordered.values()) > 600
    assert "all_fc" in fixtures.france_connect


# --- the watcher's signature, and the watcher ------------------------------------------------
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
    from sandbox.population.files import signature
    for what, edit in _edits(population):
        before = signature([population])
        time.sleep(0.05)  # the kernel stamps times on a coarse clock: an edit in the same tick looks the same
        edit()
        assert signature([population]) != before, what
    before = signature([population])
    (population / V2_OP / "notes.txt").write_text("not a case")
    assert signature([population]) == before


def _assert_every_edit_reloaded(population, interval, wait):
    """A watching Population swaps in a new set after each of _edits, within `wait` seconds."""
    import logging

    from sandbox.population import served as served_set
    from sandbox.production.spec import load_specs
    operations = load_specs([ROOT / "spec" / "open-api.yml"]).by_operation_id()
    served = served_set.Population([population], operations, interval, logging.getLogger("test"))
    served.start_watching()
    try:
        for what, edit in _edits(population):
            before = served.current
            time.sleep(0.05)
            edit()
            deadline = time.time() + wait
            while served.current is before and time.time() < deadline:
                time.sleep(0.02)
            assert served.current is not before, what
    finally:
        served.stop_watching()


def test_the_watcher_reloads_on_any_edit(population):
    _assert_every_edit_reloaded(population, 0.05, wait=5)


def test_the_watcher_is_woken_by_the_kernel_s_change_notifications(population, monkeypatch):
    """No poll can be the cause here (the next one is hours away): the edits are noticed because
    the folders are watched, a new folder's files included."""
    from sandbox.population import served as served_set
    monkeypatch.setattr(served_set.Population, "SAFETY_POLLS", 100_000)
    _assert_every_edit_reloaded(population, 0.1, wait=30)


def test_parsed_case_files_kept_between_starts_never_hide_an_edit(population, monkeypatch, tmp_path):
    """Start-ups reuse the parsed files of the previous one (a cache in the user's cache folder),
    but an edit of any kind, or a broken cache, still gives what the files say."""
    import os

    from sandbox.population import fixtures
    from sandbox.production.spec import load_specs
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    operations = load_specs([ROOT / "spec" / "open-api.yml"]).by_operation_id()

    def served_name():
        loaded = fixtures.load([population], operations)
        return next(c.payload["nom"] for c in loaded.ordered[V2_OP] if c.file.name == "200_paul.yaml")

    assert served_name() == "ESSAI"
    cached = list((tmp_path / "cache" / "particulier-sandbox").glob("case-files-*.pickle"))
    assert len(cached) == 1
    case = population / V2_OP / "200_paul.yaml"
    stat = case.stat()
    case.write_text(case.read_text().replace("ESSAI", "ESSAY"))  # same size
    os.utime(case, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime: ctime still moves
    assert served_name() == "ESSAY"
    cached[0].write_bytes(b"not a pickle")
    assert served_name() == "ESSAY"
