"""Flags and environment -> one Settings object.

Every knob has one name on the command line and one in the environment (README, Configuration);
the command line wins. Lists in the environment are os.pathsep-separated.
"""
from __future__ import annotations

import functools
import ipaddress
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# sandbox/bundled/ links to the repository's spec/ and fixtures/, so that a wheel (a plain
# `pip install`, the pytest plugin in another project) carries them as package data.
BUNDLED = Path(__file__).resolve().parent / "bundled"
BUNDLED_SPEC = BUNDLED / "spec" / "open-api.yml"
BUNDLED_FIXTURES = BUNDLED / "fixtures"


DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "particulier-sandbox"


class ConfigError(Exception):
    """A setting the sandbox cannot start with; the message is for a person."""


def _paths(value: str | None) -> tuple[Path, ...]:
    return tuple(Path(p) for p in (value or "").split(os.pathsep) if p)


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "off", "false", "no")


def parse_networks(value: str | None, setting: str) -> tuple:
    """`10.0.0.1, 10.1.0.0/16, ::1` -> ip networks (an address is a network of one)."""
    out = []
    for entry in (value or "").split(","):
        entry = entry.strip()
        if entry:
            try:
                out.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ConfigError(f"{setting} expects addresses or networks separated by commas, got {entry!r}") from None
    return tuple(out)


def in_networks(address: str | None, networks) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").split("%")[0])
    except ValueError:
        return False
    return any(ip in network for network in networks)


SIZE = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
        "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_size(value) -> int:
    """`262144`, `256KiB`, `16 MiB`, `1G` -> bytes (binary multiples)."""
    if isinstance(value, int):
        return value
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgib")
    unit = text[len(number):]
    if not number.isdigit() or unit not in SIZE or int(number) < 1:
        raise ConfigError(f"not a size: {value!r} (expected e.g. 65536, 256KiB, 16MiB)")
    return int(number) * SIZE[unit]


def parse_static_tokens(entries) -> dict[str, tuple[str, ...]]:
    """`VALUE=scope,scope` entries (CLI repeats, env separates by `;`) -> {value: scopes}."""
    tokens = {}
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        value, sep, scopes = entry.partition("=")
        if not sep or not value:
            raise ConfigError(f"--token expects VALUE=scope,scope, got {entry[:4]}...")
        tokens[value] = tuple(s for s in scopes.split(",") if s)
    return tokens


def parse_provider_states(entries) -> dict[str, str]:
    """`KEY=maintenance|failure|ok` entries (CLI repeats, env separates by `;` or `,`) -> {key: state}:
    the providers (production's ping keys, production/data/pings.yml) put in a state for the run.
    Keys and states are checked against production's table when the app is built."""
    states = {}
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        key, sep, state = (part.strip() for part in entry.partition("="))
        if not sep or not key or not state:
            raise ConfigError(f"--provider-state expects PROVIDER=maintenance|failure|ok, got {entry!r}")
        states[key] = state.lower()
    return states


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    specs: tuple[Path, ...] = (BUNDLED_SPEC,)
    fixtures: tuple[Path, ...] = (BUNDLED_FIXTURES,)
    workers: int = 2
    threads: int = 1
    redis_url: str | None = None
    token_secret: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    rate_limit: str | None = None  # one per-token limit for every version, instead of the profile's
    rate_limit_profile: str = "production"  # sandbox/production/data/rate_limits.yml: production, pr416
    provider_limits: bool = True  # providers' own limits (CNAV: 100/minute per person and route)
    ip_rate_limit: str = "1000/minute"
    sandbox_rate_limit: str = "100/second"
    faults: bool = True
    provider_states: dict = field(default_factory=dict)  # ping key -> maintenance|failure (production/pings.py)
    static_tokens: dict = field(default_factory=dict)
    cors_origins: str = ""  # browser origins allowed beyond production's own (comma-separated)
    strict: bool = False    # refuse to start on any fixture problem, schema problems included
    serve_retired: bool = False  # keep serving the CAF v1 route production retired (production/retired.py)
    journal_size: int = 1000
    # Bounds of what callers can grow in the store (docs/ci.md, "Quotas"; store/calls.Bounds):
    journal_row_bytes: int = 2048          # one journal row; longer values are cut, the row marked truncated
    journal_token_bytes: int = 1 << 20     # one token's journal (its oldest rows dropped beyond)
    journal_bytes: int = 256 << 20         # every journal together (the oldest rows of all dropped beyond)
    revocations: int = 100_000             # revoked tokens kept (each until its token expires)
    persona_bytes: int = 256 << 10         # one runtime persona, as stored (413 beyond)
    token_personas: int = 50               # runtime personas of one token (429 beyond)
    token_persona_bytes: int = 2 << 20     # their size together (429 beyond)
    personas: int = 1000                   # runtime personas of every token together (429 beyond)
    personas_bytes: int = 32 << 20         # their size together (429 beyond)
    persona_ttl: int = 7 * 86400           # the longest a runtime persona lives (and never past its token)
    reload_interval: float = 1.0
    airtable_sync: float | None = None
    airtable_base: str | None = None
    default_token_ttl: int = 86400
    franceconnect_clients: str | None = None  # `id:secret[=uri,uri]` entries, `;`-separated (docs/franceconnect.md)
    franceconnect_ttl: int = 60  # seconds a built-in FranceConnect access token lives, as FranceConnect's own
    franceconnect_port: int | None = None  # also serve the provider there, at FranceConnect's own paths (/api/v2/...)
    # where the default FranceConnect client may send a browser back (origins or addresses,
    # comma-separated), beside loopback and the sandbox's own origin; None: anywhere, unless public
    franceconnect_redirects: str | None = None
    public: bool = False  # the shared-instance profile (docs/public-instance.md)
    trusted_proxies: str = ""  # peers whose X-Forwarded-For/-Proto are believed (addresses or networks)
    metrics_from: str | None = None  # who may read /metrics: None = anyone, or loopback only when public

    def __post_init__(self):
        if self.public:  # a shared instance: one client's injected failure must never reach another
            object.__setattr__(self, "faults", False)
        if self.franceconnect_port is not None:
            if not 0 < self.franceconnect_port < 65536:
                raise ConfigError(f"--franceconnect-port: {self.franceconnect_port} is not a port")
            if self.franceconnect_port == self.port:
                raise ConfigError("--franceconnect-port must differ from --port: FranceConnect's paths "
                                  "(/api/v2/...) are API Particulier's v2 routes on the main port")

    @classmethod
    def from_env(cls, env=os.environ, **overrides) -> "Settings":
        values = {name: parse(env[var]) for var, (name, parse) in ENVIRONMENT.items() if env.get(var)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def bounds(self):
        from .store.calls import Bounds
        return Bounds(journal_rows=self.journal_size, row_bytes=self.journal_row_bytes,
                      token_bytes=self.journal_token_bytes, journal_bytes=self.journal_bytes,
                      revocations=self.revocations, persona_bytes=self.persona_bytes,
                      token_personas=self.token_personas, token_persona_bytes=self.token_persona_bytes,
                      personas=self.personas, personas_bytes=self.personas_bytes, persona_ttl=self.persona_ttl)

    @property
    def owns_store_dir(self) -> bool:
        """Whether the store folder is this instance's alone (removed when it stops)."""
        return self.data_dir == DEFAULT_DATA_DIR

    @functools.cached_property
    def store_dir(self) -> Path:
        """The embedded store's folder. With the default data folder, each instance gets a
        fresh one of its own (two sandboxes on one CI runner must not share per-address
        counters or journals); a data folder named by --data-dir is shared by the instances
        that name it, and kept across restarts."""
        if not self.owns_store_dir:
            return self.data_dir / "store"
        return Path(tempfile.mkdtemp(prefix="particulier-sandbox-store-"))

    def resolved_secret(self) -> str:
        """The signing secret: given, or generated once and kept in the data folder so that a
        restart (and the offline `token` command) keeps minted tokens valid."""
        if self.token_secret:
            return self.token_secret
        path = self.data_dir / "token-secret"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        candidate = secrets.token_urlsafe(48)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(candidate)
        try:
            os.link(tmp, path)  # first writer wins, so concurrent starts agree on one secret
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text().strip()


# environment variable -> (Settings field, parse the variable)
ENVIRONMENT = {
    "SANDBOX_HOST": ("host", str),
    "SANDBOX_PORT": ("port", int),
    "SANDBOX_SPEC": ("specs", _paths),
    "SANDBOX_FIXTURES": ("fixtures", _paths),
    "SANDBOX_WORKERS": ("workers", int),
    "SANDBOX_THREADS": ("threads", int),
    "SANDBOX_REDIS_URL": ("redis_url", str),
    "SANDBOX_TOKEN_SECRET": ("token_secret", str),
    "SANDBOX_DATA_DIR": ("data_dir", Path),
    "SANDBOX_RATE_LIMIT": ("rate_limit", str),
    "SANDBOX_RATE_LIMIT_PROFILE": ("rate_limit_profile", str),
    "SANDBOX_PROVIDER_LIMITS": ("provider_limits", lambda v: _flag(v, True)),
    "SANDBOX_IP_RATE_LIMIT": ("ip_rate_limit", str),
    "SANDBOX_SANDBOX_RATE_LIMIT": ("sandbox_rate_limit", str),
    "SANDBOX_FAULTS": ("faults", lambda v: _flag(v, True)),
    "SANDBOX_PROVIDER_STATES": ("provider_states", lambda v: parse_provider_states(v.replace(",", ";").split(";"))),
    "SANDBOX_TOKENS": ("static_tokens", lambda v: parse_static_tokens(v.split(";"))),
    "SANDBOX_CORS_ORIGINS": ("cors_origins", str),
    "SANDBOX_STRICT": ("strict", lambda v: _flag(v, False)),
    "SANDBOX_SERVE_RETIRED": ("serve_retired", lambda v: _flag(v, False)),
    "SANDBOX_JOURNAL_SIZE": ("journal_size", int),
    "SANDBOX_JOURNAL_ROW_BYTES": ("journal_row_bytes", parse_size),
    "SANDBOX_JOURNAL_TOKEN_BYTES": ("journal_token_bytes", parse_size),
    "SANDBOX_JOURNAL_BYTES": ("journal_bytes", parse_size),
    "SANDBOX_REVOCATIONS": ("revocations", int),
    "SANDBOX_PERSONA_BYTES": ("persona_bytes", parse_size),
    "SANDBOX_TOKEN_PERSONAS": ("token_personas", int),
    "SANDBOX_TOKEN_PERSONA_BYTES": ("token_persona_bytes", parse_size),
    "SANDBOX_PERSONAS": ("personas", int),
    "SANDBOX_PERSONAS_BYTES": ("personas_bytes", parse_size),
    "SANDBOX_PERSONA_TTL": ("persona_ttl", int),
    "SANDBOX_RELOAD_INTERVAL": ("reload_interval", float),
    "SANDBOX_AIRTABLE_SYNC": ("airtable_sync", float),
    "AIRTABLE_BASE_ID": ("airtable_base", str),
    "SANDBOX_FRANCECONNECT_CLIENTS": ("franceconnect_clients", str),
    "SANDBOX_FRANCECONNECT_TTL": ("franceconnect_ttl", int),
    "SANDBOX_FRANCECONNECT_PORT": ("franceconnect_port", int),
    "SANDBOX_FRANCECONNECT_REDIRECTS": ("franceconnect_redirects", str),
    "SANDBOX_PUBLIC": ("public", lambda v: _flag(v, False)),
    "SANDBOX_TRUSTED_PROXIES": ("trusted_proxies", str),
    "SANDBOX_METRICS_FROM": ("metrics_from", str),
}
