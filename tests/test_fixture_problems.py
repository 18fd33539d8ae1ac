"""How a fixture problem reads: the file the user edited, named once, and where in it."""
from __future__ import annotations

from click.testing import CliRunner

from sandbox.cli import main
from sandbox.population.files import Problem, read_case_file
from sandbox.settings import BUNDLED_FIXTURES

from .conftest import ROOT

OPERATION = "api_particulier_v2_cnaf_quotient_familial"


def test_a_problem_in_the_bundled_fixtures_names_the_clone_s_file(monkeypatch):
    """sandbox/bundled/fixtures is a link to the clone's fixtures/: the user edits fixtures/..."""
    monkeypatch.chdir(ROOT)
    case = sorted((BUNDLED_FIXTURES / OPERATION).glob("*.yaml"))[0]
    assert str(case).startswith(str(ROOT / "sandbox" / "bundled"))
    data, problems = read_case_file(case)
    assert data and not problems
    problem = Problem(case, "$.status", "missing or not an HTTP status code")  # as the loader names it
    assert str(problem) == f"fixtures/{OPERATION}/{case.name}: $.status: missing or not an HTTP status code"
    monkeypatch.chdir("/")
    assert str(problem).startswith(f"{ROOT / 'fixtures' / OPERATION / case.name}: ")


def test_broken_yaml_is_told_once_with_its_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "mine" / OPERATION
    folder.mkdir(parents=True)
    (folder / "broken.yaml").write_text("params:\n  numeroAllocataire: '1\nstatus: 200\n")
    result = CliRunner().invoke(main, ["fixtures", "check", "--fixtures", str(tmp_path / "mine")])
    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if "broken.yaml" in line)
    assert line.count("broken.yaml") == 1, line
    assert line.startswith(f"{folder / 'broken.yaml'}: $: not valid YAML: line "), line
    assert "while scanning a quoted scalar at line 2, column 22" in line, line


# --- a broken edit said on the HTTP side ---------------------------------------------------------
def _stale_app(make_app, tmp_path):
    from .test_fixtures import V2_OP, write_case
    root = tmp_path / "fixtures"
    write_case(root / V2_OP, "200_paul.yaml", {"identifiant": "paul"})
    app = make_app(fixtures=(root,))
    return app, root / V2_OP


def test_a_broken_edit_is_said_on_every_answer_until_fixed(make_app, tmp_path, token):
    from urllib.parse import unquote
    from .test_fixtures import V2_OP, write_case
    app, folder = _stale_app(make_app, tmp_path)
    client, population = app.test_client(), app.extensions["sandbox"].population
    v2 = "/api/v2/situations-pole-emploi?identifiant=paul"

    def answer(path=v2):
        return client.get(path, headers={"X-Api-Key": token})

    assert "X-Sandbox-Fixtures-Stale" not in answer().headers
    status = client.get("/sandbox/status").get_json()["fixtures"]
    assert status["up_to_date"] and status["last_reload"] is None and status["served"]["cases"] == 1

    (folder / "200_léa.yaml").write_text("params: {identifiant: lea\nstatus: 200\n")
    assert population.reload_if_changed() is False
    for response in (answer(), answer("/api/v2/situations-pole-emploi?identifiant=nobody"), client.get("/sandbox/personas"),
                     client.get("/api/ping")):
        stale = response.headers["X-Sandbox-Fixtures-Stale"]
        assert stale.isascii() and "\n" not in stale
        assert unquote(stale).startswith(f"{folder / '200_léa.yaml'}: $: not valid YAML: line 2, column "), stale
    assert answer().get_json()["nom"] == "ESSAI", "the last good set answers meanwhile"
    status = client.get("/sandbox/status").get_json()["fixtures"]
    assert not status["up_to_date"]
    assert status["stale"] == status["last_reload"]["problems"] and len(status["stale"]) == 1
    assert "200_léa.yaml: $: not valid YAML" in status["stale"][0]
    assert status["last_reload"]["served"] is False and status["last_reload"]["at"].endswith("Z")
    assert status["served"]["cases"] == 1

    write_case(folder, "200_léa.yaml", {"identifiant": "lea"})
    assert population.reload_if_changed() is True
    assert "X-Sandbox-Fixtures-Stale" not in answer().headers
    status = client.get("/sandbox/status").get_json()["fixtures"]
    assert status["up_to_date"] and status["stale"] == []
    assert status["last_reload"]["served"] is True and status["served"]["cases"] == 2


def test_many_broken_files_are_counted_in_one_header_line(make_app, tmp_path, token):
    app, folder = _stale_app(make_app, tmp_path)
    for n in range(3):
        (folder / f"broken{n}{'é' * 100}.yaml").write_text("status: [\n")
    app.extensions["sandbox"].population.reload_if_changed()
    stale = app.test_client().get("/sandbox/scopes").headers["X-Sandbox-Fixtures-Stale"]
    assert stale.endswith("(and 2 more: GET /sandbox/status)"), stale
    assert len(stale) <= 400
