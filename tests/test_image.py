"""The image built and run for real, without any container registry.

podman builds the Dockerfile `--from` a bare Debian made here by mmdebstrap (Debian's and PyPI's
servers are the only ones reached), runs it and calls it. compose.yml's services then run with
plain podman commands that mirror it (no compose tool: its `redis:7-alpine` and `nginx` images
would come from a registry):
- `redis` is the host's redis-server (the redis_server fixture);
- `sandbox-1`, `sandbox-2` are the image with compose's environment (the proxy they trust is
  127.0.0.1, where it is on the host's network);
- `proxy` is nginx from Debian on the same base (standing in for compose's `nginx` image),
  serving compose's own `configs.proxy` text.
All containers share the host's network (the one podman set-up that works on every machine we
run on): each service gets a free loopback port instead of its container port, the proxy's
`name:8000` upstreams and `listen 80` are rewritten to those ports, and the image's command runs
with `--host 127.0.0.1` instead of `0.0.0.0` so that nothing listens beyond loopback.

podman runs with its own storage in a temporary folder (vfs, runc, cgroupfs: no daemon, no
systemd, no overlay module). The Debian base is cached in test-artifacts/image/, keyed by its
package list. Timings and the image size go to test-artifacts/image/measurements.json.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from .conftest import ARTIFACTS, ROOT, free_port, require
from .test_container_command import compose_env

pytestmark = pytest.mark.slow

SUITE = "bookworm"
MIRRORS = [f"deb http://deb.debian.org/debian {SUITE} main",
           f"deb http://deb.debian.org/debian {SUITE}-updates main",
           f"deb http://deb.debian.org/debian-security {SUITE}-security main"]
# The smallest Debian that builds the Dockerfile: python3 (3.11 in bookworm) and its venv module;
# CA certificates for pip. merged-usr the modern way (the `usrmerge` package would pull in perl),
# no manuals, docs or translations.
MMDEBSTRAP = ["--variant=minbase", "--include=python3,python3-venv,ca-certificates",
              "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
              "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/info/*",
              "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
              "--dpkgopt=path-include=/usr/share/doc/*/copyright", SUITE]
# `podman import` keeps no environment; Debian's own images set this PATH.
BASE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GLOBAL = ["--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
          "--events-backend", "file"]
LIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
IMAGE_CMD = ["particulier-sandbox", "serve", "--host", "0.0.0.0"]
LOOPBACK_CMD = ["particulier-sandbox", "serve", "--host", "127.0.0.1"]
# compose's `nginx` image, from Debian: no service started at install time (policy-rc.d), no
# default site on port 80, the config in conf.d as the nginx image reads it.
PROXY_CONTAINERFILE = """\
FROM {base}
RUN printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \\
    && apt-get update && apt-get install -y --no-install-recommends nginx \\
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default
CMD ["nginx", "-g", "daemon off;"]
"""
ROUTE = "/api/v2/etudiants"
INE = "1234567890A"
MEASURED: dict[str, object] = {}


def cannot_run(reason: str):
    """As conftest.require: a skip on a laptop, a failure where CI promises everything runs."""
    if os.environ.get("SANDBOX_REQUIRE_ALL"):
        pytest.fail(reason + " (SANDBOX_REQUIRE_ALL is set: CI must be able to run it)")
    pytest.skip(reason)


def record(**values):
    MEASURED.update(values)
    folder = ARTIFACTS / "image"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "measurements.json").write_text(json.dumps(MEASURED, indent=2) + "\n")


class Podman:
    def __init__(self, binary: str, folder: Path):
        self.command = [binary, "--root", str(folder / "storage"), "--runroot", str(folder / "run"),
                        "--tmpdir", str(folder / "tmp"), *GLOBAL]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.command, *args], capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"podman {' '.join(args[:3])}... exited {done.returncode}:\n{done.stderr[-4000:]}"
        return done


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    binary = require("podman")
    require("runc")
    folder = tmp_path_factory.mktemp("podman")
    (folder / "tmp").mkdir()
    tool = Podman(binary, folder)
    probe = tool("info", check=False, timeout=60)
    if probe.returncode != 0:
        cannot_run(f"podman cannot run here: {probe.stderr.strip()[-500:]}")
    yield tool
    tool("rm", "--all", "--force", "--time", "0", check=False)
    if os.geteuid() != 0:  # rootless: the storage holds files of the user's sub-uids
        tool("unshare", "rm", "-rf", str(folder / "storage"), check=False, timeout=300)
    shutil.rmtree(folder, ignore_errors=True)


def debian_base() -> Path:
    """The base's tarball, made once per package list (CI starts from a fresh machine: once a run)."""
    require("mmdebstrap")
    key = hashlib.sha256(json.dumps([MMDEBSTRAP, MIRRORS]).encode()).hexdigest()[:16]
    tarball = ARTIFACTS / "image" / f"debian-{SUITE}-{key}.tar"
    if tarball.exists():
        record(base_seconds="cached", base_bytes=tarball.stat().st_size)
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(f".{os.getpid()}.partial.tar")  # mmdebstrap reads the format from ".tar"
    started = time.monotonic()
    done = subprocess.run(["mmdebstrap", "--quiet", *MMDEBSTRAP, str(partial), *MIRRORS],
                          capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        cannot_run(f"mmdebstrap could not make a Debian base: {done.stderr.strip()[-1500:]}")
    partial.rename(tarball)
    record(base_seconds=round(time.monotonic() - started), base_bytes=tarball.stat().st_size)
    return tarball


@pytest.fixture(scope="module")
def base_image(podman):
    tarball = debian_base()
    name = f"localhost/sandbox-debian-base:{tarball.stem.rsplit('-', 1)[-1]}"
    started = time.monotonic()
    podman("import", "--change", f"ENV {BASE_PATH}", str(tarball), name, timeout=600)
    record(import_seconds=round(time.monotonic() - started))
    return name


def trust_store() -> list[str]:
    """The build's pip gets this machine's CA bundle for the build only (bind mounts stay out of
    the image): behind an intercepting proxy, PyPI's certificate is signed by a local CA."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                      ssl.get_default_verify_paths().cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return ["--volume", f"{Path(candidate).resolve()}:/etc/ssl/certs/ca-certificates.crt:ro"]
    return []


def build(podman, *args: str) -> float:
    started = time.monotonic()
    # One layer for the whole build (--layers=false): vfs copies the file system at every
    # committed layer. The docker format keeps the HEALTHCHECK (OCI has none).
    podman("build", "--layers=false", "--format", "docker", "--network", "host", *LIMITS, *trust_store(),
           *args, timeout=1800)
    return round(time.monotonic() - started)


@pytest.fixture(scope="module")
def sandbox_image(podman, base_image):
    name = "localhost/particulier-sandbox:test"
    seconds = build(podman, "--from", base_image, "--tag", name, str(ROOT))
    size = int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout)
    record(build_seconds=seconds, image_bytes=size)
    return name


@pytest.fixture(scope="module")
def proxy_image(podman, base_image, tmp_path_factory):
    folder = tmp_path_factory.mktemp("proxy-image")
    (folder / "Containerfile").write_text(PROXY_CONTAINERFILE.format(base=base_image))
    name = "localhost/sandbox-proxy:test"
    record(proxy_build_seconds=build(podman, "--tag", name, str(folder)))
    return name


class Container:
    def __init__(self, podman, name: str, port: int):
        self.podman, self.name, self.port = podman, name, port
        self.url = f"http://127.0.0.1:{port}"

    def logs(self) -> str:
        done = self.podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def wait_ready(self, path: str = "/api/ping", timeout: float = 120) -> "Container":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.podman("inspect", "--format", "{{.State.Running}}", self.name, check=False).stdout.strip()
            assert state == "true", f"{self.name} stopped:\n{self.logs()[-4000:]}"
            try:
                if requests.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{self.name} not answering {path} after {timeout}s:\n{self.logs()[-4000:]}")


@pytest.fixture
def run(podman):
    """run(image, name, env, port, command=[...], options=[...]) -> a started Container, removed at teardown."""
    started = []

    def start(image: str, name: str, env: dict[str, str], port: int, command: list[str] = (),
              options: list[str] = ()) -> Container:
        name = f"{name}-{os.getpid()}"
        args = ["run", "--detach", "--name", name, "--network", "host", *LIMITS,
                "--health-interval", "disable", *options]  # no systemd timer; `podman healthcheck run` still works
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        podman(*args, image, *command)
        container = Container(podman, name, port)
        started.append(container)
        return container

    yield start
    for container in started:
        podman("rm", "--force", "--time", "0", container.name, check=False)


def the_image_command(podman, image: str) -> list[str]:
    """The image's CMD (as built), narrowed to loopback since the container shares the host's network."""
    command = json.loads(podman("image", "inspect", "--format", "{{json .Config.Cmd}}", image).stdout)
    assert command == IMAGE_CMD
    return LOOPBACK_CMD


def student(url: str, token: str) -> requests.Response:
    return requests.get(url + ROUTE, params={"ine": INE}, headers={"X-Api-Key": token}, timeout=30)


def test_the_image_builds_runs_and_answers(podman, sandbox_image, run):
    started = time.monotonic()
    port = free_port()
    sandbox = run(sandbox_image, "sandbox", {"SANDBOX_PORT": str(port)}, port,
                  the_image_command(podman, sandbox_image)).wait_ready()
    record(start_seconds=round(time.monotonic() - started, 1))

    assert requests.get(sandbox.url + "/api/ping", timeout=10).json() == "pong"
    minted = requests.post(sandbox.url + "/sandbox/tokens", json={"scopes": ["mesri_identite"]}, timeout=30)
    assert minted.status_code == 201, minted.text
    answer = student(sandbox.url, minted.json()["token"])
    assert answer.status_code == 200, answer.text
    assert (answer.json()["nom"], answer.json()["prenom"], answer.json()["dateNaissance"]) == \
        ("ESSAI-ROUSSEL", "Lina", "2003-05-21")

    # As the image promises: an unprivileged user, its store in /srv/sandbox/data, a health check.
    assert podman("exec", sandbox.name, "id", "-u").stdout.strip() == "10001"
    assert "data.mdb" in podman("exec", sandbox.name, "ls", "/srv/sandbox/data/store").stdout
    assert podman("healthcheck", "run", sandbox.name, check=False).returncode == 0
    # The access log on stdout (SANDBOX_ACCESS_LOG=-), without the query string.
    assert re.search(rf'"GET {ROUTE}" 200', sandbox.logs())
    assert INE not in sandbox.logs()


def proxy_config(compose: dict, ports: dict[str, int], listen: int) -> str:
    """compose's `configs.proxy`, as compose hands it over (`$$` -> `$`), on the test's ports."""
    text = compose["configs"]["proxy"]["content"].replace("$$", "$")
    for service, port in ports.items():
        text, count = re.subn(rf"\b{re.escape(service)}:8000\b", f"127.0.0.1:{port}", text)
        assert count == 1, f"the proxy config should name {service}:8000 once"
    text, count = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen};", text)
    assert count == 1
    return text


def test_compose_two_replicas_on_redis_behind_the_proxy(podman, sandbox_image, proxy_image, run, redis_server,
                                                        tmp_path):
    compose = yaml.safe_load((ROOT / "compose.yml").read_text())
    services = compose["services"]
    assert services["proxy"]["depends_on"] and services["proxy"]["configs"][0]["source"] == "proxy"
    names = sorted(name for name, service in services.items() if service.get("build") == ".")
    assert len(names) == 2
    ports = {name: free_port() for name in names}
    command = the_image_command(podman, sandbox_image)
    replicas = {}
    for name in names:
        env = compose_env(services[name])
        assert env.pop("SANDBOX_REDIS_URL") == "redis://redis:6379/0"
        assert env.pop("SANDBOX_TRUSTED_PROXIES") == services["proxy"]["networks"]["default"]["ipv4_address"]
        # On the host's network the proxy reaches the replicas from loopback.
        env.update(SANDBOX_REDIS_URL=redis_server.url, SANDBOX_PORT=str(ports[name]), SANDBOX_TRUSTED_PROXIES="127.0.0.1")
        replicas[name] = run(sandbox_image, name, env, ports[name], command)
    for replica in replicas.values():
        replica.wait_ready()

    listen = free_port()
    config = tmp_path / "default.conf"
    config.write_text(proxy_config(compose, ports, listen))
    target = services["proxy"]["configs"][0]["target"]
    proxy = run(proxy_image, "proxy", {}, listen, options=["--volume", f"{config}:{target}:ro"]).wait_ready()

    minted = requests.post(proxy.url + "/sandbox/tokens", json={"scopes": ["mesri_identite"]}, timeout=30)
    assert minted.status_code == 201, minted.text
    token = minted.json()["token"]
    for _ in range(4):
        answer = student(proxy.url, token)
        assert answer.status_code == 200, answer.text
        assert answer.json()["nom"] == "ESSAI-ROUSSEL"
    # Round robin: both replicas answered some of the calls, and the journal, in Redis, has them all.
    for replica in replicas.values():
        assert re.search(rf'"GET {ROUTE}" 200', replica.logs()), f"{replica.name} served no call"
    journal = requests.get(proxy.url + "/sandbox/requests", headers={"X-Api-Key": token}, timeout=30).json()
    assert [(e["path"], e["status"]) for e in journal["requests"]] == [(ROUTE, 200)] * 4

    # One replica down: the proxy sends every call to the other, the token still valid there.
    first, second = replicas.values()
    podman("stop", "--time", "10", first.name)
    for _ in range(3):
        assert student(proxy.url, token).status_code == 200
    assert student(second.url, token).status_code == 200

    # The proxy's own limits are in force: a body past client_max_body_size never reaches a replica.
    big = requests.post(proxy.url + "/sandbox/tokens", data=b"{" + b" " * (2 << 20) + b"}",
                        headers={"Content-Type": "application/json"}, timeout=30)
    assert big.status_code == 413
    assert big.headers["Content-Type"].startswith("text/html")  # nginx's page, not the sandbox's JSON error
