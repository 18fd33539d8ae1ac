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
        values = {}
        if env.get("SANDBOX_HOST"):
            values["host"] = env["SANDBOX_HOST"]
        if env.get("SANDBOX_PORT"):
            values["port"] = int(env["SANDBOX_PORT"])
        if env.get("SANDBOX_SPEC"):
            values["specs"] = _paths(env["SANDBOX_SPEC"])
        if env.get("SANDBOX_FIXTURES"):
            values["fixtures"] = _paths(env["SANDBOX_FIXTURES"])
        if env.get("SANDBOX_WORKERS"):
            values["workers"] = int(env["SANDBOX_WORKERS"])
        if env.get("SANDBOX_THREADS"):
            values["threads"] = int(env["SANDBOX_THREADS"])
        if env.get("SANDBOX_REDIS_URL"):
            values["redis_url"] = env["SANDBOX_REDIS_URL"]
        if env.get("SANDBOX_TOKEN_SECRET"):
            values["token_secret"] = env["SANDBOX_TOKEN_SECRET"]
        if env.get("SANDBOX_DATA_DIR"):
            values["data_dir"] = Path(env["SANDBOX_DATA_DIR"])
        if env.get("SANDBOX_RATE_LIMIT"):
            values["rate_limit"] = env["SANDBOX_RATE_LIMIT"]
        if env.get("SANDBOX_IP_RATE_LIMIT"):
            values["ip_rate_limit"] = env["SANDBOX_IP_RATE_LIMIT"]
        if env.get("SANDBOX_SANDBOX_RATE_LIMIT"):
            values["sandbox_rate_limit"] = env["SANDBOX_SANDBOX_RATE_LIMIT"]
        values["faults"] = _flag(env.get("SANDBOX_FAULTS"), True)
        if env.get("SANDBOX_TOKENS"):
            values["static_tokens"] = parse_static_tokens(env["SANDBOX_TOKENS"].split(";"))
        if env.get("SANDBOX_CORS_ORIGINS"):
            values["cors_origins"] = env["SANDBOX_CORS_ORIGINS"]
        if env.get("SANDBOX_JOURNAL_SIZE"):
            values["journal_size"] = int(env["SANDBOX_JOURNAL_SIZE"])
        if env.get("SANDBOX_RELOAD_INTERVAL"):
            values["reload_interval"] = float(env["SANDBOX_RELOAD_INTERVAL"])
        if env.get("SANDBOX_AIRTABLE_SYNC"):
            values["airtable_sync"] = float(env["SANDBOX_AIRTABLE_SYNC"])
        if env.get("AIRTABLE_BASE_ID"):
            values["airtable_base"] = env["AIRTABLE_BASE_ID"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_env(self) -> dict[str, str]:
        """The environment that rebuilds these settings in another process (gunicorn workers)."""
        env = {
            "SANDBOX_HOST": self.host,
            "SANDBOX_PORT": str(self.port),
            "SANDBOX_SPEC": os.pathsep.join(str(p) for p in self.specs),
            "SANDBOX_FIXTURES": os.pathsep.join(str(p) for p in self.fixtures),
            "SANDBOX_WORKERS": str(self.workers),
            "SANDBOX_THREADS": str(self.threads),
            "SANDBOX_DATA_DIR": str(self.data_dir),
            "SANDBOX_RATE_LIMIT": self.rate_limit,
            "SANDBOX_IP_RATE_LIMIT": self.ip_rate_limit,
            "SANDBOX_SANDBOX_RATE_LIMIT": self.sandbox_rate_limit,
            "SANDBOX_FAULTS": "on" if self.faults else "off",
            "SANDBOX_CORS_ORIGINS": self.cors_origins,
            "SANDBOX_JOURNAL_SIZE": str(self.journal_size),
            "SANDBOX_RELOAD_INTERVAL": str(self.reload_interval),
        }
        if self.redis_url:
            env["SANDBOX_REDIS_URL"] = self.redis_url
        if self.token_secret:
            env["SANDBOX_TOKEN_SECRET"] = self.token_secret
        if self.static_tokens:
            env["SANDBOX_TOKENS"] = ";".join(f"{v}={','.join(s)}" for v, s in self.static_tokens.items())
        if self.airtable_sync:
            env["SANDBOX_AIRTABLE_SYNC"] = str(self.airtable_sync)
        return env

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
