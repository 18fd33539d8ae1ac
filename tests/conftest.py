"""Shared test fixtures: the app through its test client, real gunicorn servers on loopback
ports, a real redis-server, tokens.

Tests that need an outside program (redis-server, chromium...) call `require(...)`: on a
developer laptop without it they skip; under CI (SANDBOX_REQUIRE_ALL=1, set by .ci/run) the
skip becomes a failure, so a green CI means every test ran.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sandbox import Settings, create_app
from sandbox.api.auth import mint

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"
SECRET = "test-secret-" + "x" * 40
RECIPIENT = "13002526500013"
ARTIFACTS = ROOT / "test-artifacts"
# A downstream project of its own (own pytest.ini), run by test_pytest_plugin.py in a subprocess.
collect_ignore = ["example_downstream"]


def require(program: str) -> str:
    path = shutil.which(program)
    if path:
        return path
    message = f"{program} is not installed"
    if os.environ.get("SANDBOX_REQUIRE_ALL"):
        pytest.fail(message + " (SANDBOX_REQUIRE_ALL is set: CI must install it)")
    pytest.skip(message)


def require_reference() -> Path:
    """The shared reference folder sits beside the clone in CI; a user's clone may lack it."""
    if not REFERENCE.is_dir():
        if os.environ.get("SANDBOX_REQUIRE_ALL"):
            pytest.fail(f"{REFERENCE} is missing")
        pytest.skip("../shared/reference is not beside this clone")
    return REFERENCE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def _cache_folder(tmp_path_factory):
    """The parsed-case-file cache of every app and server of the run in a folder of the run's
    own, not in the home folder of the machine."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
def make_settings(tmp_path):
    def factory(**overrides) -> Settings:
        values = dict(token_secret=SECRET, data_dir=tmp_path / "data", reload_interval=0)
        values.update(overrides)
        return Settings(**values)
    return factory


@pytest.fixture
def make_app(make_settings):
    def factory(**overrides):
        return create_app(make_settings(**overrides))
    return factory


@pytest.fixture(scope="session")
def app(tmp_path_factory):
    """The bundled spec and population, built once: tests use their own tokens, so they do
    not see each other's journal or rate-limit counts."""
    return create_app(Settings(token_secret=SECRET, data_dir=tmp_path_factory.mktemp("shared-data"),
                               reload_interval=0, ip_rate_limit="off"))


@pytest.fixture
def client(app):
    return app.test_client()


def token_for(scopes=None, ttl=3600, secret=SECRET):
    from sandbox.production.scopes import ScopeCatalogue
    value, _ = mint(secret, scopes if scopes is not None else ScopeCatalogue().all_scopes(), ttl)
    return value


@pytest.fixture
def token():
    return token_for()


def v2_headers(token):
    return {"X-Api-Key": token}


def v3_headers(token):
    return {"Authorization": f"Bearer {token}"}


class Server:
    """A real `particulier-sandbox serve` (gunicorn) on a loopback port."""

    def __init__(self, args, env, port, log):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/api/ping", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def start_server(tmp_path):
    """start_server(*cli_args, env={...}, command=[...]) -> a ready Server; stopped at teardown."""
    servers = []

    def start(*args, env=None, command=None, wait=True, port=None):
        port = port or free_port()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
        full_env.update({"SANDBOX_TOKEN_SECRET": SECRET, "SANDBOX_DATA_DIR": str(tmp_path / "data"),
                         "SANDBOX_PORT": str(port), "SANDBOX_HOST": "127.0.0.1"})
        full_env.update(env or {})
        cmd = command or [sys.executable, "-m", "sandbox", "serve", *args]
        log = open(tmp_path / f"server-{port}.log", "w+")
        server = Server(cmd, full_env, port, log)
        servers.append(server)
        return server.wait_ready() if wait else server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free loopback port: yields its URL; `.restart()`/`.kill()` for faults."""
    binary = require("redis-server")

    class Redis:
        def __init__(self):
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
            self.process = None
            self.start()

        def start(self):
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    time.sleep(0.05)
            raise RuntimeError("redis-server did not start")

        def kill(self):
            self.process.kill()
            self.process.wait()

    server = Redis()
    yield server
    server.kill()
