"""Flags and environment -> one Settings object.

Every knob has one name on the command line and one in the environment (INTERFACE.md);
the command line wins. Lists in the environment are os.pathsep-separated.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

# sandbox/bundled/ links to the repository's spec/ and fixtures/, so that a wheel (a plain
# `pip install`, the pytest plugin in another project) carries them as package data.
BUNDLED = Path(__file__).resolve().parent / "bundled"
BUNDLED_SPEC = BUNDLED / "spec" / "open-api.yml"
BUNDLED_FIXTURES = BUNDLED / "fixtures"


class ConfigError(Exception):
    """A setting the sandbox cannot start with; the message is for a person."""


def _paths(value: str | None) -> tuple[Path, ...]:
    return tuple(Path(p) for p in (value or "").split(os.pathsep) if p)


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "off", "false", "no")


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


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    specs: tuple[Path, ...] = (BUNDLED_SPEC,)
    fixtures: tuple[Path, ...] = (BUNDLED_FIXTURES,)
    workers: int = 2
    threads: int = 8
    redis_url: str | None = None
    token_secret: str | None = None
    data_dir: Path = field(default_factory=lambda: Path.home() / ".local" / "share" / "particulier-sandbox")
    rate_limit: str = "20/second"
    ip_rate_limit: str = "1000/minute"
    sandbox_rate_limit: str = "100/second"
    faults: bool = True
    static_tokens: dict = field(default_factory=dict)
    cors_origins: str = "*"
    journal_size: int = 1000
    reload_interval: float = 1.0
    airtable_sync: float | None = None
    airtable_base: str | None = None
    default_token_ttl: int = 86400

    @classmethod
    def from_env(cls, env=os.environ, **overrides) -> "Settings":
        values = {name: parse(env[var]) for var, (name, parse, _) in ENVIRONMENT.items() if env.get(var)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_env(self) -> dict[str, str]:
        """The environment that rebuilds these settings in another process."""
        return {var: show(getattr(self, name)) for var, (name, _, show) in ENVIRONMENT.items()
                if getattr(self, name) not in (None, "", {})}

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
        self.data_dir.mkdir(parents=True, exist_ok=True)
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


def _join(paths) -> str:
    return os.pathsep.join(str(p) for p in paths)


# environment variable -> (Settings field, parse the variable, write the field back)
ENVIRONMENT = {
    "SANDBOX_HOST": ("host", str, str),
    "SANDBOX_PORT": ("port", int, str),
    "SANDBOX_SPEC": ("specs", _paths, _join),
    "SANDBOX_FIXTURES": ("fixtures", _paths, _join),
    "SANDBOX_WORKERS": ("workers", int, str),
    "SANDBOX_THREADS": ("threads", int, str),
    "SANDBOX_REDIS_URL": ("redis_url", str, str),
    "SANDBOX_TOKEN_SECRET": ("token_secret", str, str),
    "SANDBOX_DATA_DIR": ("data_dir", Path, str),
    "SANDBOX_RATE_LIMIT": ("rate_limit", str, str),
    "SANDBOX_IP_RATE_LIMIT": ("ip_rate_limit", str, str),
    "SANDBOX_SANDBOX_RATE_LIMIT": ("sandbox_rate_limit", str, str),
    "SANDBOX_FAULTS": ("faults", lambda v: _flag(v, True), lambda on: "on" if on else "off"),
    "SANDBOX_TOKENS": ("static_tokens", lambda v: parse_static_tokens(v.split(";")),
                       lambda tokens: ";".join(f"{v}={','.join(s)}" for v, s in tokens.items())),
    "SANDBOX_CORS_ORIGINS": ("cors_origins", str, str),
    "SANDBOX_JOURNAL_SIZE": ("journal_size", int, str),
    "SANDBOX_RELOAD_INTERVAL": ("reload_interval", float, str),
    "SANDBOX_AIRTABLE_SYNC": ("airtable_sync", float, str),
    "AIRTABLE_BASE_ID": ("airtable_base", str, str),
}
