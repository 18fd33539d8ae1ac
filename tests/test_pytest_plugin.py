"""The pytest plugin, used the way a downstream project uses it: pytest in a subprocess.

tests/example_downstream is a small project of its own (own pytest.ini, own personas); the
main run ignores it (conftest.collect_ignore) and runs it here, so its tests count once.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow  # every test here starts a sandbox process

EXAMPLE = Path(__file__).parent / "example_downstream"


def run_pytest(folder: Path, report: Path, *args, env=None, timeout=300):
    """pytest with `folder` as its rootdir -> (exit code, junit counts, {test: outcome}, output)."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("SANDBOX_", "PYTEST_", "PARTICULIER_SANDBOX_"))}
    full_env.update(env or {})
    # Our test extra's own pytest plugins cost seconds of imports and are no part of what is tested.
    quiet = ["-p", "no:cacheprovider", "-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:anyio"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", *quiet, f"--junitxml={report}", *args], cwd=folder, env=full_env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert report.exists(), f"pytest wrote no report (exit {done.returncode}):\n{output}"
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    outcomes = {}
    for case in suite.iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = kinds[0] if kinds else "passed"
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return done.returncode, counts, outcomes, output


def test_the_example_downstream_suite_passes_with_p_sandbox_pytest_plugin(tmp_path):
    # `-p sandbox.pytest_plugin` on top of the entry point that autoloads the same module.
    code, counts, outcomes, output = run_pytest(EXAMPLE, tmp_path / "junit.xml", "-p", "sandbox.pytest_plugin")

    assert code == 0, output
    assert counts == {"tests": 12, "failures": 0, "errors": 0, "skipped": 0}, output
    assert set(outcomes.values()) == {"passed"}
    assert "test_a_real_rate_limit[particulier_sandbox0]" in outcomes


def test_the_plugin_loads_by_entry_point_name_when_autoload_is_off(tmp_path):
    code, counts, _, output = run_pytest(EXAMPLE, tmp_path / "junit.xml", "-p", "particulier_sandbox", "-k", "registered_person",
                                         env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert code == 0, output
    assert counts["tests"] == 1 and counts["failures"] == counts["errors"] == 0, output


def write_project(folder: Path, test_source: str, ini: str = ""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pytest.ini").write_text("[pytest]\n" + ini)
    (folder / "test_it.py").write_text(textwrap.dedent(test_source))
    return folder


def test_ini_marker_and_parameter_fixture_folders(tmp_path):
    personas = tmp_path / "project" / "personas"
    (personas / "api_particulier_v2_pole_emploi_statut").mkdir(parents=True)
    (personas / "api_particulier_v2_pole_emploi_statut" / "200_ini.yaml").write_text(
        "params: {identifiant: depuis.ini}\nstatus: 200\npayload: {identifiant: depuis.ini, prenom: INI}\n")
    more = tmp_path / "project" / "more"
    (more / "api_particulier_v2_pole_emploi_statut").mkdir(parents=True)
    (more / "api_particulier_v2_pole_emploi_statut" / "200_marker.yaml").write_text(
        "params: {identifiant: depuis.marqueur}\nstatus: 200\npayload: {identifiant: depuis.marqueur, prenom: MARQUEUR}\n")
    project = write_project(tmp_path / "project", '''
        import pytest, requests

        def prenom(sandbox, identifiant, token=None):
            answer = requests.get(sandbox.url("/api/v2/situations-pole-emploi"), params={"identifiant": identifiant},
                                  headers={"X-Api-Key": token or sandbox.token()}, timeout=10)
            return answer.status_code, answer.json().get("prenom")

        def test_ini_folder(particulier_sandbox):
            assert prenom(particulier_sandbox, "depuis.ini") == (200, "INI")
            assert prenom(particulier_sandbox, "depuis.marqueur")[0] == 404
            assert not [p for p in particulier_sandbox.problems if "personas" in p]

        @pytest.mark.particulier_sandbox(fixtures=["more"], bundled=False)
        def test_marker_folder(particulier_sandbox):
            assert prenom(particulier_sandbox, "depuis.marqueur") == (200, "MARQUEUR")
            assert prenom(particulier_sandbox, "depuis.ini") == (200, "INI")

        @pytest.mark.parametrize("particulier_sandbox", [{"fixtures": ["more"], "bundled": False, "journal_size": 2}], indirect=True)
        def test_parameter_folder_and_setting(particulier_sandbox):
            token = particulier_sandbox.token()
            for _ in range(3):
                assert prenom(particulier_sandbox, "depuis.marqueur", token) == (200, "MARQUEUR")
            assert len(particulier_sandbox.requests()) == 2

        def test_tokens_scopes_and_journal(particulier_sandbox):
            narrow = particulier_sandbox.token(scopes=["pole_emploi_identite"], ttl=60)
            wide = particulier_sandbox.token()
            url = particulier_sandbox.url("/api/v2/situations-pole-emploi")
            assert requests.get(url, params={"identifiant": "depuis.ini"}, headers={"X-Api-Key": narrow}).status_code == 200
            assert requests.get(url, params={"identifiant": "x"}, headers={"X-Api-Key": wide}).status_code == 404
            assert [c["status"] for c in particulier_sandbox.requests()] == [404, 200]
            assert [c["status"] for c in particulier_sandbox.requests(token=narrow)] == [200]
            particulier_sandbox.clear_requests(token=wide)
            assert [c["status"] for c in particulier_sandbox.requests()] == [200]
            with pytest.raises(ValueError):
                particulier_sandbox.token(scopes=["no_such_scope"])

        @pytest.mark.particulier_sandbox(fixtures=["missing-folder"])
        def test_missing_folder(particulier_sandbox):
            pass

        @pytest.mark.particulier_sandbox(no_such_setting=1)
        def test_unknown_setting(particulier_sandbox):
            pass
        ''', ini="particulier_sandbox_fixtures = personas\n")

    code, counts, outcomes, output = run_pytest(project, tmp_path / "junit.xml")

    assert code == 1, output
    assert outcomes == {"test_ini_folder": "passed", "test_marker_folder": "passed",
                        "test_parameter_folder_and_setting[particulier_sandbox0]": "passed",
                        "test_tokens_scopes_and_journal": "passed",
                        "test_missing_folder": "error", "test_unknown_setting": "error"}, output
    assert "fixture folder(s) not found" in output and "missing-folder" in output
    assert "no_such_setting" in output


def test_an_outside_sandbox_by_url(tmp_path, start_server):
    """CI with a service container: PARTICULIER_SANDBOX_URL points the fixture at it."""
    personas = tmp_path / "personas"
    shutil.copytree(EXAMPLE / "personas", personas)
    server = start_server("--fixtures", str(personas))
    project = write_project(tmp_path / "project", '''
        import os, pytest, requests

        def test_uses_the_outside_sandbox(particulier_sandbox):
            token = particulier_sandbox.token()
            assert particulier_sandbox.app is None
            answer = requests.get(particulier_sandbox.url("/api/v2/situations-pole-emploi"),
                                  params={"identifiant": "nobody-here"}, headers={"X-Api-Key": token})
            assert answer.status_code == 404
            assert [c["status"] for c in particulier_sandbox.requests()] == [404]
            open(os.environ["TOKEN_FILE"], "w").write(token)

        @pytest.mark.particulier_sandbox(fixtures=["x"])
        def test_extra_fixtures_cannot_apply(particulier_sandbox):
            pass
        ''')
    token_file = tmp_path / "token"

    code, _, outcomes, output = run_pytest(project, tmp_path / "junit.xml",
                                           env={"PARTICULIER_SANDBOX_URL": server.url, "TOKEN_FILE": str(token_file)})

    assert outcomes == {"test_uses_the_outside_sandbox": "passed", "test_extra_fixtures_cannot_apply": "error"}, output
    assert "cannot be applied to the sandbox already running" in output
    # The call really reached the outside server: its journal holds it under the minted token.
    journal = requests.get(server.url + "/sandbox/requests", headers={"X-Api-Key": token_file.read_text()}, timeout=5)
    assert [(c["path"], c["query"]) for c in journal.json()["requests"]] == [
        ("/api/v2/situations-pole-emploi", {"identifiant": "nobody-here"})]


def test_docs_ci_md_lists_every_public_attribute_of_the_fixture():
    """docs/ci.md's table is where a downstream user learns the fixture: nothing missing."""
    import inspect
    import re

    from sandbox.pytest_plugin import ParticulierSandbox

    from .conftest import ROOT

    table = re.findall(r"^\| `([a-z_]+)[(`]", (ROOT / "docs" / "ci.md").read_text(), re.M)
    internal = {"http", "minted", "created"}  # the fixture's own bookkeeping
    public = {name for name, _ in inspect.getmembers(ParticulierSandbox) if not name.startswith("_")}
    public |= {"base_url", "app"}  # set in __init__
    assert public - internal <= set(table), sorted(public - internal - set(table))
    for name, member in inspect.getmembers(ParticulierSandbox, inspect.isfunction):
        if not name.startswith("_"):
            params = list(inspect.signature(member).parameters)[1:]
            row = next(line for line in (ROOT / "docs" / "ci.md").read_text().splitlines() if line.startswith(f"| `{name}("))
            assert all(p in row for p in params), (name, params, row)
