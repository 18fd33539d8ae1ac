"""The command lines README.md and the persona catalogue show, run as a newcomer runs them.

A newcomer has run `make serve` in the clone and opens another terminal: the clone is the
working folder, `.venv` is NOT on PATH (nothing activates it). The lines are taken from the
README and from /docs/personas as they are; the only change is the server's address (the
README says 127.0.0.1:8000, the test's server listens on a free port). The server and the
offline `make token` share their secret through the data folder, as they do on a laptop.
"""
from __future__ import annotations

import html
import os
import re
import subprocess

import pytest
import requests

from .conftest import ROOT

pytestmark = pytest.mark.slow
README_URL = "http://127.0.0.1:8000"


def _newcomer_env(data_dir) -> dict:
    """The environment of a fresh terminal: no venv on PATH, no SANDBOX_* but the data folder
    (the default one on a laptop, shared by `serve` and `token`)."""
    venv_bins = {str(ROOT / ".venv" / "bin"), os.path.dirname(os.path.realpath(os.sys.executable))}
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and os.path.realpath(p) not in {os.path.realpath(b) for b in venv_bins}]
    # a fresh terminal is not inside a make: MAKELEVEL etc. from `make test` must not leak in
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SANDBOX_") and k not in {"VIRTUAL_ENV", "MAKELEVEL", "MAKEFLAGS", "MFLAGS"}}
    env.update(PATH=os.pathsep.join(path), SANDBOX_DATA_DIR=str(data_dir))
    return env


def _run(script: str, env) -> str:
    # the newcomer's PATH must not find the command: else the test would prove nothing
    done = subprocess.run(["bash", "-c", "! command -v particulier-sandbox >/dev/null || exit 99\n"
                           "set -eo pipefail\n" + script],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, script, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def _journal(server, token) -> list:
    answer = requests.get(server.url + "/sandbox/requests", headers={"X-Api-Key": token}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["requests"] if isinstance(answer.json(), dict) else answer.json()


def _readme_shell_lines() -> list[str]:
    """Every line of the README's ```sh blocks but `make serve` / `make test...` (the server is
    already up; the suite is what runs this), continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#") and not re.match(r"make (serve|test)\b", line):
                lines.append(line)
    return lines


@pytest.fixture
def server(start_server, tmp_path):
    # no secret given: the server keeps its generated one in the data folder, as `make serve` does
    return start_server("--workers", "1", env={"SANDBOX_TOKEN_SECRET": ""})


def test_the_readme_s_shell_lines_work_as_shown(server, tmp_path):
    lines = _readme_shell_lines()
    assert any(line.startswith("TOKEN=$(make token)") for line in lines), lines
    script = "\n".join(line.replace(README_URL, server.url) for line in lines)
    out = _run(script + '\necho\necho "TOKEN=$TOKEN"', _newcomer_env(tmp_path / "data"))
    token = out.strip().splitlines()[-1].removeprefix("TOKEN=")
    calls = _journal(server, token)
    assert sorted((c["path"], c["status"]) for c in calls) == [
        ("/api/v2/situations-pole-emploi", 200), ("/v3/france_travail/statut/identifiant", 200)], calls
    assert '"scopes":["pole_emploi_identite","pole_emploi_inscription"]' in out.replace(" ", "")


def test_the_readme_s_inline_token_commands_work(server, tmp_path):
    inline = [c for c in re.findall(r"`([^`\n]+)`", (ROOT / "README.md").read_text())
              if c.startswith(("make token", ".venv/bin/particulier-sandbox token"))]
    assert len(inline) >= 2, inline
    env = _newcomer_env(tmp_path / "data")
    for command in inline:
        token = _run(command, env).strip()
        answer = requests.get(server.url + "/api/introspect", headers={"X-Api-Key": token}, timeout=10)
        assert answer.status_code == 200, (command, answer.text)
        assert answer.json()["scopes"] == ["cnaf_enfants"], command


def test_the_catalogue_s_shell_lines_work_as_shown(server, tmp_path):
    page = requests.get(server.url + "/docs/personas", timeout=10).text
    shell = [html.unescape(c) for c in re.findall(r'<pre class="sbx-curl sbx-shell"><code>(.*?)</code></pre>', page, re.S)]
    inline = [html.unescape(c) for c in re.findall(r"<code>(export TOKEN=[^<]*)</code>", page)]
    assert shell and inline, "the catalogue shows how to set TOKEN"
    # the first answered case of a v2 and of a v3 route, its curl line as shown
    cases = {}
    for section in re.findall(r'<section class="sbx-operation".*?</section>', page, re.S):
        if "FranceConnect" in section or "sbx-retired" in section:
            continue
        version = "v2" if "/api/v2/" in section else "v3"
        row = re.search(r'data-status="200">.*?<pre class="sbx-curl"><code>(.*?)</code></pre>', section, re.S)
        if row and version not in cases:
            cases[version] = html.unescape(row.group(1))
    assert set(cases) == {"v2", "v3"}, cases
    env = _newcomer_env(tmp_path / "data")
    for setter in shell + inline:
        out = _run(f"{setter}\n{cases['v2']}\n{cases['v3']}\necho\necho \"TOKEN=$TOKEN\"", env)
        token = out.strip().splitlines()[-1].removeprefix("TOKEN=")
        calls = _journal(server, token)
        assert [c["status"] for c in calls] == [200, 200], (setter, calls)
