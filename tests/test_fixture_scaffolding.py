"""`particulier-sandbox fixtures new` and `fixtures export --format staging`: a new case is
schema-valid and served; exported cases load back through the sandbox and answer the same."""
from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sandbox.population import scaffold
from sandbox.production import clock
from sandbox.cli import main
from sandbox.settings import BUNDLED_SPEC
from sandbox.production.spec import load_specs

from .conftest import RECIPIENT, ROOT, token_for, v2_headers, v3_headers

FIXTURES = ROOT / "fixtures"
OPERATIONS = load_specs([BUNDLED_SPEC]).by_operation_id()
QF = "api_particulier_v3_cnav_quotient_familial_with_civility"


def run(*args):
    return CliRunner().invoke(main, ["fixtures", *args])


def call(client, op, params):
    names = {p.key: p.name for p in op.params}
    query = [("recipient", RECIPIENT)] if op.v3 else []
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            query.append((names.get(key, key), str(item).lower() if isinstance(item, bool) else str(item)))
    token = token_for()
    return client.get(op.path, query_string=query, headers=v3_headers(token) if op.v3 else v2_headers(token))


# --- fixtures new --------------------------------------------------------------------------
def test_the_skeleton_of_every_operation_is_schema_valid():
    answered = [op for op in OPERATIONS.values() if op.is_api and not op.gone and op.responses.get(200)]
    assert len(answered) > 40
    for op in answered:
        assert scaffold.check(op, scaffold.new_case(op), OPERATIONS) == [], op.operation_id


def test_new_writes_a_case_that_checks_clean_and_is_served(tmp_path, make_app):
    result = run("new", "--operation", "/v3/dss/quotient_familial/identite", "--output", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    path = tmp_path / QF / "200_nouveau.yaml"
    assert result.stdout.strip() == str(path)
    doc = yaml.safe_load(path.read_text())
    assert doc["payload"]["data"]["quotient_familial"]["annee"] == "{{ today | year }}"  # dates start relative
    checked = run("check", "--fixtures", str(tmp_path))
    assert checked.exit_code == 0, checked.stdout
    assert "1 cases in 1 operations" in checked.stderr

    second = run("new", "--operation", QF, "--output", str(tmp_path))
    assert second.stdout.strip() == str(tmp_path / QF / "200_nouveau_2.yaml")  # never overwrites

    client = make_app(fixtures=[tmp_path], rate_limit="off", ip_rate_limit="off").test_client()
    response = call(client, OPERATIONS[QF], doc["params"])
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Sandbox-Case"] == f"{QF}/200_nouveau.yaml"
    assert response.get_json()["data"]["quotient_familial"]["annee"] == clock.today().year


def test_new_like_copies_a_case_with_its_relative_dates(tmp_path):
    source = FIXTURES / QF / "200_bacasable_camille.yaml"
    result = run("new", "--operation", QF, "--like", "200_bacasable_camille", "--output", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    path = tmp_path / QF / "200_bacasable_camille_copie.yaml"
    assert result.stdout.strip() == str(path)
    assert path.read_text() == source.read_text()  # templates and comments kept
    assert "same params as 200_bacasable_camille.yaml" in result.stderr


@pytest.mark.parametrize("args, says", [
    (["--operation", "quotient"], "did you mean"),
    (["--operation", QF, "--like", "nobody"], "no case 'nobody'"),
])
def test_new_refuses_what_it_cannot_find(tmp_path, args, says):
    result = run("new", *args, "--output", str(tmp_path))
    assert result.exit_code == 2 and says in result.stderr
    assert not any(tmp_path.rglob("*.yaml"))


# --- fixtures export -----------------------------------------------------------------------
EXPORTED = [QF, "api_particulier_v3_france_travail_statut_with_identifiant", "api_particulier_v2_cnav_prime_activite",
            "api_particulier_v4_cnous_etudiant_boursier_with_ine", "api_particulier_v3_mesri_statut_etudiant_with_ine"]


def test_export_writes_the_staging_layout_with_dates_resolved(tmp_path):
    result = run("export", "--format", "staging", "--day", "2031-03-15", str(tmp_path / "out"),
                 *[a for op in EXPORTED for a in ("--operation", op)])
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "out" / QF
    doc = yaml.safe_load((folder / "200_bacasable_camille.yaml").read_text())
    assert isinstance(doc["payload"], str)  # the staging's payload: a JSON string
    quotient = json.loads(doc["payload"])["data"]["quotient_familial"]
    assert (quotient["annee"], quotient["mois"]) == (2031, 3)
    assert "{{" not in (folder / "200_bacasable_camille.yaml").read_text()
    readme = (folder / "README.md").read_text()
    assert "* [200_bacasable_camille.yaml](200_bacasable_camille.yaml)" in readme
    assert ("curl -H \"Authorization: Bearer $token\" \\\n    -G -d 'recipient=13002526500013' "
            "-d 'nomNaissance=BACASABLE' -d 'prenoms[]=Camille' -d 'prenoms[]=Marie'") in readme
    assert '--url "https://staging.particulier.api.gouv.fr/v3/dss/quotient_familial/identite"' in readme
    assert f"({QF})" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.slow  # exports, reloads and calls the whole bundled population: about 20 s
def test_exported_cases_load_back_and_answer_the_same(tmp_path, make_app, monkeypatch):
    day = datetime.date(2031, 3, 15)
    monkeypatch.setattr(clock, "_FROZEN", day)
    out = tmp_path / "out"
    result = run("export", str(out), *[a for op in EXPORTED for a in ("--operation", op)])
    assert result.exit_code == 0, result.stderr
    # the export adds no problem; on this day production already refuses the bundled cases whose
    # params carry an absolute year it no longer takes (a QF `annee` more than two years back)
    bundled = {p for p in _problems(run("check")) if p[0].split("/")[0] in EXPORTED}
    assert _problems(run("check", "--fixtures", str(out))) == bundled
    assert all("production refuses these params" in message for _, message in bundled)
    original = make_app(rate_limit="off", ip_rate_limit="off").test_client()
    exported = make_app(fixtures=[out], data_dir=tmp_path / "data2", rate_limit="off",
                        ip_rate_limit="off").test_client()
    sandbox = exported.application.extensions["sandbox"]
    compared = 0
    for operation_id in EXPORTED:
        op = OPERATIONS[operation_id]
        for case in sandbox.population.current.cases[operation_id].values():
            mine, theirs = call(original, op, case.params), call(exported, op, case.params)
            assert (theirs.status_code, theirs.get_json()) == (mine.status_code, mine.get_json()), case.id
            assert theirs.headers.get("X-Sandbox-Case") == mine.headers.get("X-Sandbox-Case")
            compared += theirs.headers.get("X-Sandbox-Case") == case.id  # not the cases the spec refuses (400, 422)
    assert compared > 60


def _problems(result) -> set:
    """`fixtures check`'s problems as {(operation folder/case file, what)}, wherever the files are."""
    found = set()
    for line in result.output.splitlines():
        path, sep, what = line.partition(": $")
        if sep:
            found.add(("/".join(Path(path).parts[-2:]), "$" + what))
    return found


def test_export_refuses_an_unknown_operation(tmp_path):
    result = run("export", str(tmp_path / "out"), "--operation", "nothing_here")
    assert result.exit_code == 2 and "no operation nothing_here" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_copied_bundled_folder_exports_france_connect_tokens_too(tmp_path):
    shutil.copytree(FIXTURES / "france_connect", tmp_path / "src" / "france_connect")
    shutil.copytree(FIXTURES / QF, tmp_path / "src" / QF)
    result = run("export", str(tmp_path / "out"), "--fixtures", str(tmp_path / "src"))
    assert result.exit_code == 0, result.stderr
    token = yaml.safe_load((tmp_path / "out" / "france_connect" / "tout.yml").read_text())
    assert json.loads(token["payload"])["token_introspection"]["family_name"]
