"""What a person or a CI runner meets when starting the server: the banner, two instances side
by side with default settings, fixtures that break the spec (served and flagged; refused with
--strict)."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import pytest
import requests

from .conftest import RECIPIENT, ROOT, SECRET, token_for

pytestmark = pytest.mark.slow
V2 = "/api/v2/situations-pole-emploi?identifiant=default"


def _default_env(tmp_path) -> dict:
    """An environment with no SANDBOX_DATA_DIR: the defaults a user gets (HOME moved to a test folder)."""
    return {"HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp"), "SANDBOX_DATA_DIR": ""}


def test_the_banner_says_where_to_go(start_server):
    server = start_server()
    output = server.output()
    assert f"{server.url}/docs" in output
    assert f"{server.url}/docs/personas" in output
    assert f"curl -s -X POST {server.url}/sandbox/tokens" in output


def test_two_instances_with_default_settings_do_not_interfere(start_server, tmp_path):
    """Per-address counters and journals are each instance's own; stopping one leaves the other
    serving, and each instance's own store goes with it."""
    (tmp_path / "tmp").mkdir()
    env = _default_env(tmp_path)
    first = start_server("--ip-rate-limit", "5/minute", env=env)
    second = start_server("--ip-rate-limit", "5/minute", env=env)
    token = token_for()
    on_first = [requests.get(first.url + V2, headers={"X-Api-Key": token}, timeout=10).status_code for _ in range(6)]
    assert on_first == [200] * 5 + [429]
    assert requests.get(second.url + V2, headers={"X-Api-Key": token}, timeout=10).status_code == 200
    journal = requests.get(second.url + "/sandbox/requests", headers={"X-Api-Key": token}, timeout=10).json()
    assert len(journal["requests"]) == 1
    stores = glob.glob(str(tmp_path / "tmp" / "particulier-sandbox-store-*"))
    assert len(stores) == 2
    assert first.stop() == 0
    assert requests.get(second.url + "/api/ping", timeout=10).status_code == 200
    assert requests.get(second.url + V2, headers={"X-Api-Key": token}, timeout=10).status_code == 200
    assert second.stop() == 0
    assert glob.glob(str(tmp_path / "tmp" / "particulier-sandbox-store-*")) == []
    assert not (tmp_path / "home" / ".gunicorn").exists()  # no control socket to fight over


def test_two_instances_naming_one_data_folder_share_their_counters(start_server, tmp_path):
    first = start_server("--ip-rate-limit", "3/minute")
    second = start_server("--ip-rate-limit", "3/minute")  # same SANDBOX_DATA_DIR (the fixture's)
    token = token_for()
    statuses = [requests.get(server.url + V2, headers={"X-Api-Key": token}, timeout=10).status_code
                for server in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429]


def _broken_fixtures(tmp_path):
    root = tmp_path / "cassés"
    folder = root / "api_particulier_v3_france_travail_statut_with_identifiant"
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "fixtures" / folder.name / "200_default.yaml", folder / "200_default.yaml")
    (folder / "200_casse.yaml").write_text(
        "description: un cas qui ne respecte pas le schéma\nparams:\n  identifiant: casse\nstatus: 200\n"
        "payload:\n  data:\n    identifiant: 12\n")
    return root


def test_a_case_that_breaks_the_spec_is_served_and_flagged(start_server, tmp_path):
    server = start_server("--fixtures", str(_broken_fixtures(tmp_path)))
    answer = requests.get(server.url + "/v3/france_travail/statut/identifiant",
                          params={"identifiant": "casse", "recipient": RECIPIENT},
                          headers={"Authorization": f"Bearer {token_for()}"}, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["X-Sandbox-Fixture-Invalid"].startswith("$.payload")


def test_strict_refuses_to_start_on_a_case_that_breaks_the_spec(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env.update(SANDBOX_TOKEN_SECRET=SECRET, SANDBOX_DATA_DIR=str(tmp_path / "data"))
    run = subprocess.run([sys.executable, "-m", "sandbox", "serve", "--strict", "--port", "1",
                          "--fixtures", str(_broken_fixtures(tmp_path))],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "200_casse.yaml" in run.stderr and "--strict" in run.stderr
