"""The `particulier-sandbox` command (also `python -m sandbox`)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from .settings import ConfigError, Settings, parse_provider_states, parse_size, parse_static_tokens


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


# `airtable` is imported only when used: `serve` starts without it. Subcommands inherit -h.
@click.group(cls=LazyGroup, lazy={"airtable": ".airtable.cli:airtable"},
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="particulier-sandbox", prog_name="particulier-sandbox")
def main():
    """A sandbox of API Particulier: same routes, validation, errors, masking and rate limit."""


def _on_off(value):
    return None if value is None else value == "on"


# How a `serve` flag becomes a Settings field, where it is not the same name and value: a flag
# left out is None (or an empty tuple) and leaves the environment's value in force.
SERVE_FLAGS = {
    "specs": ("specs", lambda v: tuple(v) or None),
    "fixture_dirs": ("fixtures", lambda v: tuple(v) or None),
    "tokens": ("static_tokens", lambda v: parse_static_tokens(v) if v else None),
    "provider_states": ("provider_states", lambda v: parse_provider_states(v) if v else None),
    "provider_limits": ("provider_limits", _on_off),
    "faults": ("faults", _on_off),
    "journal_bytes": ("journal_bytes", lambda v: parse_size(v) if v else None),
    "personas_bytes": ("personas_bytes", lambda v: parse_size(v) if v else None),
}


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
                   "every instance that names it [embedded LMDB store; SANDBOX_REDIS_URL].")
@click.option("--token-secret", help="HS256 secret of the tokens [generated, kept in the data folder; SANDBOX_TOKEN_SECRET].")
@click.option("--token", "tokens", multiple=True, metavar="VALUE=scope,scope",
              help="Declare a fixed opaque token (repeatable) [SANDBOX_TOKENS, ';'-separated].")
@click.option("--rate-limit", metavar="RATE", help="Per-token limit on every version, e.g. 5/second, 100/minute "
              "or off, instead of the profile's [SANDBOX_RATE_LIMIT].")
@click.option("--rate-limit-profile", type=click.Choice(["production", "pr416"]),
              help="Per-token limits: production's (20/s on v2, 20/s on v3+) or pull request #416's "
                   "(60/min on v2, 250/min on v3+) [production; SANDBOX_RATE_LIMIT_PROFILE].")
@click.option("--provider-limits", type=click.Choice(["on", "off"]),
              help="Providers' own limits, e.g. CNAV's 100/min per person [on; SANDBOX_PROVIDER_LIMITS].")
@click.option("--ip-rate-limit", metavar="RATE", help="Per-client-address limit on API routes, or off "
              "[1000/minute; SANDBOX_IP_RATE_LIMIT].")
@click.option("--faults", type=click.Choice(["on", "off"]), help="Header-driven fault injection [on; SANDBOX_FAULTS].")
@click.option("--provider-state", "provider_states", multiple=True, metavar="PROVIDER=STATE",
              help="Put a provider (a ping key of GET /api/pings) in maintenance or failure for the run: its "
                   "ping and its routes answer so (repeatable) [SANDBOX_PROVIDER_STATES, ';'-separated].")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the token secret and the embedded store live; instances naming the same folder share counters and journal [each instance its own store; SANDBOX_DATA_DIR].")
@click.option("--airtable-sync", type=float, metavar="SECONDS", help="Pull fixtures from Airtable every SECONDS.")
@click.option("--strict", is_flag=True, default=None,
              help="Refuse to start on any fixture problem, payloads that break the spec included [SANDBOX_STRICT].")
@click.option("--serve-retired", is_flag=True, default=None,
              help="Keep serving the CAF v1 route production answers 410 (/api/v2/composition-familiale) "
                   "[off; SANDBOX_SERVE_RETIRED].")
@click.option("--franceconnect-port", type=int, metavar="PORT",
              help="Also serve the built-in FranceConnect on this port, at FranceConnect's own paths "
                   "(/api/v2/authorize, ...), for clients configured with a base address only "
                   "[off; SANDBOX_FRANCECONNECT_PORT].")
@click.option("--public", is_flag=True, default=None,
              help="A shared instance: faults off, no global personas, fixture FranceConnect tokens refused on "
                   "/sandbox/*, FranceConnect redirects limited (docs/public-instance.md) [off; SANDBOX_PUBLIC].")
@click.option("--trusted-proxies", metavar="ADDRESSES",
              help="Proxies whose X-Forwarded-For/-Proto are believed, addresses or networks, comma-separated "
                   "[none; SANDBOX_TRUSTED_PROXIES].")
@click.option("--franceconnect-redirects", metavar="ORIGINS",
              help="Where the default FranceConnect client may send a browser back beside loopback and the "
                   "sandbox itself, comma-separated [anywhere, or nowhere else when public; "
                   "SANDBOX_FRANCECONNECT_REDIRECTS].")
@click.option("--metrics-from", metavar="ADDRESSES",
              help="Who may read /metrics beside loopback, comma-separated [anyone, or loopback only when public; "
                   "SANDBOX_METRICS_FROM].")
@click.option("--journal-bytes", metavar="SIZE", help="Every journal together, e.g. 256MiB; beyond, the oldest "
              "rows are dropped [256MiB; SANDBOX_JOURNAL_BYTES].")
@click.option("--personas-bytes", metavar="SIZE", help="Runtime personas of every token together, e.g. 32MiB; "
              "beyond, new ones are refused 429 [32MiB; SANDBOX_PERSONAS_BYTES].")
@click.option("--persona-ttl", type=int, metavar="SECONDS", help="The longest a runtime persona lives "
              "[604800; SANDBOX_PERSONA_TTL].")
def serve(**options):
    """Serve the API with gunicorn."""
    fields = {}
    for flag, value in options.items():
        field, convert = SERVE_FLAGS.get(flag, (flag, None))
        fields[field] = convert(value) if convert else value
    try:
        settings = _settings(**fields)
        from .api.ratelimit import parse_rate
        for rate in (settings.rate_limit, settings.ip_rate_limit, settings.sandbox_rate_limit):
            parse_rate(rate)  # a typo in a rate stops the start at once, before the app is built
        from .metrics import prepare_multiprocess
        prepare_multiprocess()  # before the app is built: gunicorn's workers add up their metrics
        from .application import create_app
        app = create_app(settings, start=False)
    except ConfigError as exc:
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
    from .api.auth import mint
    from .production.scopes import ScopeCatalogue
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
    """Check, scaffold and export fixture folders."""


@fixtures.command("check")
@click.option("--spec", "specs", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
              help="OpenAPI spec the fixtures are checked against (repeatable) [bundled spec/open-api.yml; "
                   "SANDBOX_SPEC].")
@click.option("--fixtures", "fixture_dirs", multiple=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Fixture folder to check (repeatable) [bundled fixtures/; SANDBOX_FIXTURES].")
@click.option("--summary", is_flag=True, help="Also print, per operation, its cases and their statuses.")
def fixtures_check(specs, fixture_dirs, summary):
    """Check every fixture against the spec: one line per problem, exit 1 when any."""
    from .population import fixtures as fixture_module
    from .production.spec import load_specs
    settings = _settings(specs=tuple(specs) or None, fixtures=tuple(fixture_dirs) or None)
    try:
        operations = load_specs(settings.specs).by_operation_id()
    except ConfigError as exc:
        click.echo(f"spec: {exc}", err=True)
        sys.exit(2)
    loaded = fixture_module.load(settings.fixtures, operations)
    problems = loaded.check()
    for problem in problems:
        click.echo(str(problem))
    if summary:
        for operation_id, cases in sorted(loaded.ordered.items()):
            statuses = sorted({c.status for c in cases})
            answered = sum(c.status == 200 for c in cases)
            click.echo(f"{operation_id}: {len(cases)} cases, {answered} answered (200), "
                       f"statuses {' '.join(map(str, statuses))}", err=True)
    count = sum(len(cases) for cases in loaded.ordered.values())
    click.echo(f"{count} cases in {len(loaded.ordered)} operations, {len(loaded.france_connect)} FranceConnect "
               f"tokens, {len(problems)} problem(s)", err=True)
    sys.exit(1 if problems else 0)


def _operations(specs):
    from .production.spec import load_specs
    try:
        return load_specs(_settings(specs=tuple(specs) or None).specs).by_operation_id()
    except ConfigError as exc:
        click.echo(f"spec: {exc}", err=True)
        sys.exit(2)


@fixtures.command("new")
@click.option("--operation", required=True, metavar="ID|ROUTE",
              help="The case's operation: its x-operationId (the fixture folder's name) or its route.")
@click.option("--like", metavar="CASE", help="Copy this case of the operation (its file name, with or "
              "without .yaml) instead of starting from the schema.")
@click.option("--name", help="File name of the new case, without .yaml [200_nouveau, or CASE_copie].")
@click.option("--output", type=click.Path(path_type=Path), metavar="DIR",
              help="Fixture folder to write into (the case goes to DIR/<operation>/) [the first --fixtures].")
@click.option("--spec", "specs", multiple=True, type=click.Path(path_type=Path), help="OpenAPI spec (repeatable).")
@click.option("--fixtures", "fixture_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Fixture folders where --like looks (repeatable) [bundled fixtures/; SANDBOX_FIXTURES].")
def fixtures_new(operation, like, name, output, specs, fixture_dirs):
    """Write a new case to complete and print its path.

    From the operation's 200 schema (every field, dates as {{ today }}), or a copy of --like
    CASE. Edit its params and payload, then run `fixtures check`."""
    from .population import scaffold
    operations = _operations(specs)
    dirs = _settings(fixtures=tuple(fixture_dirs) or None).fixtures
    try:
        op = scaffold.find_operation(operations, operation)
        folder = Path(output or dirs[0]) / op.operation_id
        if like:
            source = scaffold.like_file(dirs, op, like)
            text = source.read_text()
            path = scaffold.free_name(folder, name or f"{source.stem}_copie")
        else:
            from .population.fixtures import load
            existing = load(dirs, operations)
            doc = scaffold.new_case(op, existing)
            text = scaffold.case_text(doc)
            path = scaffold.free_name(folder, name or "200_nouveau")
    except scaffold.ScaffoldError as exc:
        click.echo(f"particulier-sandbox: {exc}", err=True)
        sys.exit(2)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    import yaml
    for where, message in scaffold.check(op, yaml.safe_load(text), operations):
        click.echo(f"{path}: {where}: {message}", err=True)
    from .population.lookup import case_key
    if like:
        click.echo(f"same params as {source.name}: change them, or {source.name} keeps answering", err=True)
    elif case_key(op.operation_id, doc["params"]) in existing.cases.get(op.operation_id, {}):
        same = existing.cases[op.operation_id][case_key(op.operation_id, doc["params"])].file.name
        click.echo(f"same params as {same}: change them, or {same} keeps answering", err=True)
    click.echo(str(path))


@fixtures.command("export")
@click.argument("target", type=click.Path(path_type=Path), metavar="DIR")
@click.option("--format", "fmt", type=click.Choice(["staging"]), default="staging", show_default=True,
              help="Layout: the official staging's (payload as a JSON string, a README per folder).")
@click.option("--operation", "only", multiple=True, metavar="ID", help="Export this operation only (repeatable).")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), help="Resolve relative dates on this day [today].")
@click.option("--base-url", default=None, help="Host of the READMEs' curl lines [the official staging].")
@click.option("--spec", "specs", multiple=True, type=click.Path(path_type=Path), help="OpenAPI spec (repeatable).")
@click.option("--fixtures", "fixture_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Fixture folders to export (repeatable) [bundled fixtures/; SANDBOX_FIXTURES].")
def fixtures_export(target, fmt, only, day, base_url, specs, fixture_dirs):
    """Write the cases into DIR in the official staging's format, relative dates resolved.

    One folder per operation, one file per case (params, status, payload as a JSON string) and
    a README.md per folder with each case's parameters, answer and curl line."""
    from .population import fixtures as fixture_module, scaffold
    from .production import clock
    operations = _operations(specs)
    unknown = sorted(set(only) - set(operations) - {fixture_module.FRANCE_CONNECT})
    if unknown:
        click.echo(f"particulier-sandbox: no operation {', '.join(unknown)}", err=True)
        sys.exit(2)
    previous = clock._FROZEN
    if day:
        clock.freeze(day.date())  # descriptions and payloads alike, for this export only
    try:
        dirs = _settings(fixtures=tuple(fixture_dirs) or None).fixtures
        loaded = fixture_module.load(dirs, operations)
        for problem in loaded.fatal:
            click.echo(f"not exported: {problem}", err=True)
        written = scaffold.export_staging(loaded, operations, dirs, target, clock.today(), set(only),
                                          base_url or scaffold.STAGING_URL)
        click.echo(f"{len(written)} case file(s) written to {target} (relative dates resolved on "
                   f"{clock.today().isoformat()})")
    finally:
        clock.freeze(previous)


if __name__ == "__main__":
    main()
