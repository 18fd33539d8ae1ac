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
