"""`particulier-sandbox airtable init|pull|push`: the spreadsheet side of the fixtures.

Output: the plan or the diff on stdout, progress bars and errors on stderr. Exit codes: 0 done,
1 the sync failed (nothing half-done; the message names the table, record and field), 2 bad
set-up (no token, no base, broken spec). The token is never printed.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import SyncError
from ..settings import ConfigError, Settings


def _progress(label, length):
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True,
                             item_show_func=lambda item: item)


def _context(specs, fixture_dir):
    """(operations by x-operationId, the fixture folder) from flags, environment, defaults."""
    from ..production.spec import load_specs
    settings = Settings.from_env(specs=tuple(specs) or None)
    try:
        operations = load_specs(settings.specs).by_operation_id()
    except ConfigError as exc:
        click.echo(f"spec: {exc}", err=True)
        sys.exit(2)
    return operations, Path(fixture_dir) if fixture_dir else Path(settings.fixtures[0])


def _warn_skipped(target, operations):
    from .files import synced_folders
    try:
        _, skipped = synced_folders(target, operations)
    except SyncError:
        return  # the command itself reports it
    for name in skipped:
        click.echo(f"airtable: skipping {target / name}: no loaded spec has this x-operationId", err=True)


def _fail(exc):
    from .common import SetupError, scrub
    click.echo(f"airtable: {scrub(str(exc))}", err=True)
    sys.exit(2 if isinstance(exc, SetupError) else 1)


def _common(command):
    command = click.option("--spec", "specs", multiple=True, type=click.Path(path_type=Path),
                           help="OpenAPI spec the fixtures are checked against (repeatable) "
                                "[bundled; SANDBOX_SPEC].")(command)
    command = click.option("--fixtures", "fixture_dir", type=click.Path(path_type=Path),
                           help="Fixture folder [bundled fixtures/, or the first of SANDBOX_FIXTURES].")(command)
    command = click.option("--base", envvar="AIRTABLE_BASE_ID", required=True,
                           help="Airtable base id, appXXXXXXXXXXXXXX [AIRTABLE_BASE_ID].")(command)
    return command


@click.group()
def airtable():
    """Edit the fixtures in Airtable: one table per operation, one record per case.

    Needs AIRTABLE_TOKEN (a personal access token with data.records:read/write and
    schema.bases:read/write); AIRTABLE_ENDPOINT_URL points at another server. See docs/airtable.md.
    """


@airtable.command()
@_common
@click.option("--dry-run", is_flag=True, help="Print the tables and fields that are missing; create nothing.")
def init(base, fixture_dir, specs, dry_run):
    """Create the missing tables and fields (meta API)."""
    operations, target = _context(specs, fixture_dir)
    _warn_skipped(target, operations)
    try:
        from .push import init as init_tables
        plans = init_tables(base, target, operations, dry_run=dry_run, progress=_progress)
    except SyncError as exc:
        _fail(exc)
    verb = "would create" if dry_run else "created"
    for plan in plans:
        if plan.new_table:
            click.echo(f"{plan.table}: {verb} table with {len(plan.new_fields)} fields")
        elif plan.new_fields:
            click.echo(f"{plan.table}: {verb} fields {', '.join(plan.new_fields)}")
    click.echo(f"init: {sum(p.new_table for p in plans)} table(s) and "
               f"{sum(len(p.new_fields) for p in plans if not p.new_table)} field(s) {verb}, "
               f"{len(plans)} table(s) in the layout")


@airtable.command()
@_common
@click.option("--dry-run", is_flag=True, help="Print the diff of the fixture files; write nothing.")
def pull(base, fixture_dir, specs, dry_run):
    """Airtable -> YAML fixtures, checked against the spec, written all or nothing."""
    operations, target = _context(specs, fixture_dir)
    try:
        from .pull import pull as pull_tables
        result = pull_tables(base, target, operations, dry_run=dry_run, progress=_progress)
    except SyncError as exc:
        _fail(exc)
    if result.skipped:
        click.echo(f"airtable: skipped {len(result.skipped)} record(s) without a case: "
                   f"{', '.join(result.skipped)}", err=True)
    if dry_run and result.diff:
        click.echo(result.diff, nl=False)
    verb = "would change" if dry_run else "changed"
    click.echo(f"pull: {result.records} records, {len(result.changed)} file(s) {verb}"
               + (f": {', '.join(result.changed)}" if result.changed else ""), err=dry_run)


@airtable.command()
@_common
@click.option("--dry-run", is_flag=True, help="Print the plan (creates, updates, deletes); write nothing.")
@click.option("--prune", is_flag=True, help="Delete the records whose case file no longer exists.")
def push(base, fixture_dir, specs, dry_run, prune):
    """YAML fixtures -> Airtable: upsert every case on its `case` key (idempotent)."""
    operations, target = _context(specs, fixture_dir)
    _warn_skipped(target, operations)
    try:
        from .push import push as push_tables
        plans = push_tables(base, target, operations, prune=prune, dry_run=dry_run, progress=_progress)
    except SyncError as exc:
        _fail(exc)
    would = "would " if dry_run else ""
    for plan in plans:
        if plan.new_table or plan.new_fields:
            what = "table" if plan.new_table else f"fields {', '.join(plan.new_fields)}"
            click.echo(f"{plan.table}: {would}create {what}")
        for verb, cases in (("create", plan.create), ("update", plan.update),
                            ("delete", [c for c, _ in plan.delete])):
            if cases:
                click.echo(f"{plan.table}: {would}{verb} {len(cases)}: {', '.join(cases)}")
        if plan.stray:
            click.echo(f"{plan.table}: {len(plan.stray)} record(s) have no case file (kept; --prune deletes "
                       f"them): {', '.join(map(str, plan.stray))}")
    click.echo(f"push: {sum(len(p.create) for p in plans)} created, {sum(len(p.update) for p in plans)} updated, "
               f"{sum(len(p.delete) for p in plans)} deleted, {sum(p.unchanged for p in plans)} unchanged"
               + (" (dry run: nothing written)" if dry_run else ""))
