"""The `particulier-sandbox` command (also `python -m sandbox`)."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from .settings import ConfigError, Settings, parse_static_tokens


def _settings(**flags) -> Settings:
    return Settings.from_env(**flags)


class LazyGroup(click.Group):
    """A group whose `lazy` subcommands ({name: "module:attribute"}) are imported when named or listed."""

    def __init__(self, *args, lazy=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx, name):
        if name in self.lazy and name not in self.commands:
            module, attribute = self.lazy[name].split(":")
            self.add_command(getattr(importlib.import_module(module, __package__), attribute), name)
        return super().get_command(ctx, name)


# `airtable` is imported only when used: `serve` starts without it.
@click.group(cls=LazyGroup, lazy={"airtable": ".airtable_cli:airtable"})
def main():
    """A sandbox of API Particulier: same routes, validation, errors, masking and rate limit."""


@main.command()
@click.option("--host", help="Address to listen on [127.0.0.1; SANDBOX_HOST].")
@click.option("--port", type=int, help="Port [8000; SANDBOX_PORT].")
@click.option("--spec", "specs", multiple=True, type=click.Path(path_type=Path),
              help="OpenAPI spec to serve (repeatable) [bundled spec/open-api.yml; SANDBOX_SPEC].")
@click.option("--fixtures", "fixture_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Fixture folder (repeatable) [bundled fixtures/; SANDBOX_FIXTURES].")
@click.option("--workers", type=int, help="gunicorn worker processes [2; SANDBOX_WORKERS].")
@click.option("--redis", "redis_url", metavar="URL",
              help="Keep counters, revocations and journal in Redis (redis://HOST:PORT/DB), shared by "
                   "every instance that names it [embedded SQLite in the data folder; SANDBOX_REDIS_URL].")
@click.option("--token-secret", help="HS256 secret of the tokens [generated, kept in the data folder; SANDBOX_TOKEN_SECRET].")
@click.option("--token", "tokens", multiple=True, metavar="VALUE=scope,scope",
              help="Declare a fixed opaque token (repeatable) [SANDBOX_TOKENS, ';'-separated].")
@click.option("--rate-limit", metavar="RATE", help="Per-token limit, e.g. 5/second, 100/minute or off "
              "[20/second; SANDBOX_RATE_LIMIT].")
@click.option("--ip-rate-limit", metavar="RATE", help="Per-client-address limit on API routes, or off "
              "[1000/minute; SANDBOX_IP_RATE_LIMIT].")
@click.option("--faults", type=click.Choice(["on", "off"]), help="Header-driven fault injection [on; SANDBOX_FAULTS].")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the secret and the embedded store live [SANDBOX_DATA_DIR].")
@click.option("--airtable-sync", type=float, metavar="SECONDS", help="Pull fixtures from Airtable every SECONDS.")
def serve(host, port, specs, fixture_dirs, workers, redis_url, token_secret, tokens, rate_limit,
          ip_rate_limit, faults, data_dir, airtable_sync):
    """Serve the API with gunicorn."""
    reading = None
    try:
        settings = _settings(host=host, port=port, specs=tuple(specs) or None,
                             fixtures=tuple(fixture_dirs) or None, workers=workers, redis_url=redis_url,
                             token_secret=token_secret, rate_limit=rate_limit, ip_rate_limit=ip_rate_limit,
                             faults=None if faults is None else faults == "on", data_dir=data_dir,
                             airtable_sync=airtable_sync,
                             static_tokens=parse_static_tokens(tokens) if tokens else None)
        # Start-up's order: the fixture files parse in a pool while this process loads the
        # spec; then they are checked against it in a pool while this process imports the app.
        from .fixtures import Reading
        from .spec import load_specs
        reading = Reading(settings.fixtures)
        specs = load_specs(settings.specs)
        reading.check(specs.by_operation_id())
        from .ratelimit import parse_rate
        for rate in (settings.rate_limit, settings.ip_rate_limit, settings.sandbox_rate_limit):
            parse_rate(rate)  # a typo in a rate stops the start at once, before the app is built
        os.environ.update(settings.to_env())
        from .application import create_app
        app = create_app(settings, reading, specs)
    except ConfigError as exc:
        if reading is not None:
            reading.close()
        click.echo(f"particulier-sandbox: cannot start: {exc}", err=True)
        sys.exit(2)
    from .server import run
    run(app, settings)


@main.command()
@click.option("--scope", "scopes", multiple=True, help="Scope to grant (repeatable) [all scopes].")
@click.option("--ttl", type=int, default=None, help="Validity in seconds [86400].")
@click.option("--token-secret", help="HS256 secret [SANDBOX_TOKEN_SECRET, or the data folder's].")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data folder holding the generated secret.")
def token(scopes, ttl, token_secret, data_dir):
    """Print one new token (usable on v2 and v3), minted offline."""
    from .auth import mint
    from .scopes import ScopeCatalogue
    settings = _settings(token_secret=token_secret, data_dir=data_dir)
    known = ScopeCatalogue().all_scopes()
    unknown = sorted(set(scopes) - set(known))
    if unknown:
        click.echo(f"unknown scope(s): {', '.join(unknown)}", err=True)
        sys.exit(2)
    value, _ = mint(settings.resolved_secret(), scopes or known, ttl or settings.default_token_ttl)
    click.echo(value)


@main.group()
def fixtures():
    """Check fixture folders."""


@fixtures.command("check")
@click.option("--spec", "specs", multiple=True, type=click.Path(path_type=Path))
@click.option("--fixtures", "fixture_dirs", multiple=True, type=click.Path(path_type=Path))
@click.option("--summary", is_flag=True, help="Also print, per operation, its cases and their statuses.")
def fixtures_check(specs, fixture_dirs, summary):
    """Check every fixture against the spec: one line per problem, exit 1 when any."""
    from . import fixtures as fixture_module
    from .spec import load_specs
    settings = _settings(specs=tuple(specs) or None, fixtures=tuple(fixture_dirs) or None)
    try:
        operations = load_specs(settings.specs).by_operation_id()
    except ConfigError as exc:
        click.echo(f"spec: {exc}", err=True)
        sys.exit(2)
    loaded = fixture_module.load(settings.fixtures, operations)
    for problem in loaded.problems:
        click.echo(str(problem))
    if summary:
        for operation_id, cases in sorted(loaded.ordered.items()):
            statuses = sorted({c.status for c in cases})
            answered = sum(c.status == 200 for c in cases)
            click.echo(f"{operation_id}: {len(cases)} cases, {answered} answered (200), "
                       f"statuses {' '.join(map(str, statuses))}", err=True)
    count = sum(len(cases) for cases in loaded.ordered.values())
    click.echo(f"{count} cases in {len(loaded.ordered)} operations, {len(loaded.france_connect)} FranceConnect "
               f"tokens, {len(loaded.problems)} problem(s)", err=True)
    sys.exit(1 if loaded.problems else 0)


if __name__ == "__main__":
    main()
