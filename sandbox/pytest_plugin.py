"""pytest plugin: a real API Particulier sandbox for a downstream application's tests.

Installing particulier-sandbox registers this plugin (entry point `pytest11`); with plugin
autoloading disabled, load it with `-p sandbox.pytest_plugin`. It gives one fixture,
`particulier_sandbox`: a sandbox served in this process on a free loopback port, with
`base_url`, a token factory and the request journal. See docs/ci.md.

Extra fixture folders (served beside the bundled ones), by increasing precedence:
- ini option `particulier_sandbox_fixtures` (paths, relative to the ini file);
- marker `@pytest.mark.particulier_sandbox(fixtures=[...], bundled=True, **settings)`;
- indirect parameter `@pytest.mark.parametrize("particulier_sandbox", [{"fixtures": [...]}], indirect=True)`.
Any other key of the marker or parameter is a sandbox setting (`rate_limit="off"`,
`faults=False`, `journal_size=50`...).

One server is started per distinct configuration and kept for the whole session, so the
sandbox costs its start-up (~1 s) once. Tests stay independent because each one mints its
own tokens, and the journal is per token.

Nothing heavy is imported at module level: this module is loaded by every pytest run of an
environment where the package is installed.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

ENTRY_POINT = "particulier_sandbox"  # its name in pyproject.toml [project.entry-points.pytest11]
RECIPIENT = "13002526500013"  # a SIRET with a valid Luhn key, for v3's mandatory `recipient`
INI_FIXTURES = "particulier_sandbox_fixtures"
INI_URL = "particulier_sandbox_url"
ENV_URL = "PARTICULIER_SANDBOX_URL"


def pytest_addoption(parser):
    parser.addini(INI_FIXTURES, type="paths", default=[],
                  help="particulier-sandbox: extra fixture folders served beside the bundled ones.")
    parser.addini(INI_URL, default="",
                  help=f"particulier-sandbox: use the sandbox already running at this URL instead of "
                       f"starting one (also ${ENV_URL}).")


def pytest_plugin_registered(plugin, plugin_name, manager):
    """`-p sandbox.pytest_plugin` registers this module under its module name, before the
    `particulier_sandbox` entry point loads it again, which pytest refuses ("already registered
    under a different name"). Blocking the entry point name then makes both spellings work."""
    if plugin is sys.modules[__name__] and plugin_name != ENTRY_POINT and not manager.is_blocked(ENTRY_POINT):
        manager.set_blocked(ENTRY_POINT)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "particulier_sandbox(fixtures=[...], bundled=True, **settings): serve these extra fixture folders "
        "(and settings) to this test's `particulier_sandbox` fixture.")


class ParticulierSandbox:
    """What a test gets: where the sandbox is, tokens for it, and what it was asked."""

    recipient = RECIPIENT

    def __init__(self, base_url: str, app=None):
        import requests  # noqa: PLC0415  (kept out of module import, see the module docstring)

        self.base_url = base_url.rstrip("/")
        self.app = app  # the Flask app when served in-process, None for an outside sandbox
        self.http = requests.Session()
        self.minted: list[str] = []
        self.created: list[tuple[str, str]] = []  # (persona id, token): removed at the test's end

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    @property
    def problems(self) -> list[str]:
        """Problems found in the served fixtures (a case that does not fit the spec...)."""
        if self.app is None:
            return []
        return [str(p) for p in self.app.extensions["sandbox"].population.current.check()]

    def token(self, scopes=None, ttl: int | None = None) -> str:
        """A new token (v2 `X-Api-Key` and v3 `Authorization: Bearer`); all scopes when none given."""
        body = {}
        if scopes is not None:
            body["scopes"] = list(scopes)
        if ttl is not None:
            body["ttl"] = ttl
        answer = self.http.post(self.url("/sandbox/tokens"), json=body, timeout=10)
        if answer.status_code != 201:
            raise ValueError(f"the sandbox refused the token: {answer.status_code} {answer.text}")
        value = answer.json()["token"]
        self.minted.append(value)
        return value

    def persona(self, operation: str | None = None, params: dict | None = None, payload=None, status: int | None = None,
                like: str | None = None, global_: bool = False, ttl: int | None = None, token: str | None = None,
                description: str | None = None) -> dict:
        """A persona created now (POST /sandbox/personas), checked like a fixture file, removed
        when the test ends. `operation`: an x-operationId or a route (/v3/...); `like`: a case
        to start from (as X-Sandbox-Case names it), `params` merged over its own and `payload`
        deep-merged into its own. Visible to `token` only (default: the last token this fixture
        minted, a new one if none) unless `global_`. Returns the persona (`id`, `case`, `curl`...);
        a refusal raises ValueError with the sandbox's reason (the json path of the field)."""
        token = token or (self.minted[-1] if self.minted else self.token())
        body = {"global": global_}
        for name, value in (("operation", operation), ("params", params), ("payload", payload), ("like", like),
                            ("status", status), ("ttl", ttl), ("description", description)):
            if value is not None:  # status None: 200, or the status of the `like` case
                body[name] = value
        answer = self.http.post(self.url("/sandbox/personas"), json=body, headers={"X-Api-Key": token}, timeout=10)
        if answer.status_code != 201:
            raise ValueError(f"the sandbox refused the persona: {answer.status_code} {answer.text}")
        created = answer.json()
        self.created.append((created["id"], token))
        return created

    def remove_personas(self):
        """Delete the personas this fixture created (done at the test's end)."""
        while self.created:
            persona_id, token = self.created.pop()
            try:
                self.http.delete(self.url(f"/sandbox/personas/{persona_id}"), headers={"X-Api-Key": token}, timeout=10)
            except Exception:  # noqa: BLE001  (a sandbox already gone: nothing left to remove)
                pass

    def france_connect_token(self, persona: str, scopes=None, client_id: str = "sandbox",
                             client_secret: str = "sandbox") -> str:
        """A FranceConnect access token of the built-in FranceConnect: `persona` (an id of
        /franceconnect/personas, e.g. "cnaf_parent_isole") logs in and consents to `scopes`
        (API Particulier data scopes; None: every scope of the FranceConnect routes). It lives
        as FranceConnect's do (60 s unless SANDBOX_FRANCECONNECT_TTL says otherwise)."""
        import secrets  # noqa: PLC0415
        from urllib.parse import parse_qs, urlparse  # noqa: PLC0415

        if scopes is None:
            scopes = self.http.get(self.url("/franceconnect/essayer/config"), timeout=10).json()["scope"].split()
        callback = "http://127.0.0.1/particulier-sandbox/callback"
        query = {"client_id": client_id, "redirect_uri": callback, "response_type": "code",
                 "scope": " ".join(dict.fromkeys(["openid", "identite_pivot", *scopes])),
                 "state": secrets.token_urlsafe(32), "nonce": secrets.token_urlsafe(32), "acr_values": "eidas1",
                 "login_hint": persona, "prompt": "none"}
        answer = self.http.get(self.url("/franceconnect/api/v2/authorize"), params=query, allow_redirects=False,
                               timeout=10)
        back = parse_qs(urlparse(answer.headers.get("Location", "")).query)
        if answer.status_code != 302 or "code" not in back:
            raise ValueError(f"the sandbox's FranceConnect refused the login: {back.get('error_description') or answer.text}")
        token = self.http.post(self.url("/franceconnect/api/v2/token"), timeout=10, data={
            "grant_type": "authorization_code", "code": back["code"][0], "redirect_uri": callback,
            "client_id": client_id, "client_secret": client_secret})
        token.raise_for_status()
        return token.json()["access_token"]

    def requests(self, token: str | None = None, path: str | None = None, since: str | None = None) -> list:
        """Recorded calls, newest first: of `token`, or of every token minted through this fixture."""
        tokens = [token] if token else list(self.minted)
        params = {k: v for k, v in (("path", path), ("since", since)) if v}
        entries = []
        for value in tokens:
            answer = self.http.get(self.url("/sandbox/requests"), params=params,
                                   headers={"X-Api-Key": value}, timeout=10)
            answer.raise_for_status()
            entries.extend(answer.json()["requests"])
        if len(tokens) > 1:
            # Each journal is newest first; merged, `at` (same ISO format everywhere) orders them.
            entries.sort(key=lambda e: e["at"], reverse=True)
        return entries

    def clear_requests(self, token: str | None = None):
        for value in [token] if token else list(self.minted):
            self.http.delete(self.url("/sandbox/requests"), headers={"X-Api-Key": value},
                             timeout=10).raise_for_status()


class _InProcessServer:
    """The sandbox app under werkzeug's threaded server, in a daemon thread of this process."""

    def __init__(self, settings):
        from werkzeug.serving import WSGIRequestHandler, make_server

        from . import create_app

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args, **kwargs):
                pass  # one log line per call would bury a failing test's own output; the journal has them

        self.app = create_app(settings)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=QuietHandler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="particulier-sandbox", daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class _Servers:
    """One in-process sandbox per distinct configuration, for the whole session."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir
        self.running: dict = {}

    def get(self, fixtures: tuple, bundled: bool, overrides: dict) -> _InProcessServer:
        key = (fixtures, bundled, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
        server = self.running.get(key)
        if server is None:
            server = self.running[key] = _InProcessServer(self._settings(fixtures, bundled, overrides, len(self.running)))
        return server

    def _settings(self, fixtures, bundled, overrides, index):
        import secrets

        from .settings import BUNDLED_FIXTURES, Settings
        values = {"token_secret": secrets.token_urlsafe(32),
                  "data_dir": self.base_dir / f"sandbox-{index}",
                  "fixtures": ((BUNDLED_FIXTURES,) if bundled else ()) + fixtures,
                  "reload_interval": 0}  # a test session needs no file watcher thread
        values.update(overrides)
        return Settings(**values)

    def stop_all(self):
        for server in self.running.values():
            server.stop()
        self.running.clear()


@pytest.fixture(scope="session")
def _particulier_sandbox_servers(tmp_path_factory):
    servers = _Servers(tmp_path_factory.mktemp("particulier-sandbox"))
    yield servers
    servers.stop_all()


def _configuration(request) -> tuple[tuple, bool, dict]:
    """Extra fixture folders, whether the bundled ones are served, other settings."""
    fixtures = [Path(p) for p in request.config.getini(INI_FIXTURES)]
    bundled, overrides = True, {}
    sources = [m.kwargs for m in reversed(list(request.node.iter_markers("particulier_sandbox")))]
    param = getattr(request, "param", None)
    if param is not None:
        if not isinstance(param, dict):
            pytest.fail("particulier_sandbox: an indirect parameter must be a dict, "
                        "e.g. {'fixtures': ['tests/personas']}", pytrace=False)
        sources.append(param)
    for source in sources:
        source = dict(source)
        for folder in source.pop("fixtures", ()) or ():
            fixtures.append(Path(folder) if Path(folder).is_absolute() else request.config.rootpath / folder)
        bundled = source.pop("bundled", bundled)
        overrides.update(source)
    missing = [str(f) for f in fixtures if not f.is_dir()]
    if missing:
        pytest.fail(f"particulier_sandbox: fixture folder(s) not found: {', '.join(missing)}", pytrace=False)
    return tuple(f.resolve() for f in fixtures), bool(bundled), overrides


@pytest.fixture
def particulier_sandbox(request, _particulier_sandbox_servers):
    """A running API Particulier sandbox: `.base_url`, `.token(scopes=None, ttl=None)`,
    `.persona(operation, params=..., payload=...)`, `.requests(token=None, path=None, since=None)`,
    `.clear_requests(token=None)`, `.recipient`."""
    outside = request.config.getini(INI_URL) or os.environ.get(ENV_URL, "")
    if outside:
        if getattr(request, "param", None) or request.node.get_closest_marker("particulier_sandbox"):
            pytest.fail(f"particulier_sandbox: extra fixtures or settings cannot be applied to the sandbox "
                        f"already running at {outside}")
        handle = ParticulierSandbox(outside)
    else:
        from .settings import ConfigError
        fixtures, bundled, overrides = _configuration(request)
        try:
            server = _particulier_sandbox_servers.get(fixtures, bundled, overrides)
        except (ConfigError, TypeError) as exc:
            pytest.fail(f"particulier_sandbox: the sandbox cannot start: {exc}", pytrace=False)
        handle = ParticulierSandbox(server.base_url, server.app)
    yield handle
    handle.remove_personas()
    handle.http.close()
