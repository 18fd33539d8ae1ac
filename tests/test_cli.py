"""The command line as every CLI: --version, -h and --help on every command, options described."""
from __future__ import annotations

import importlib.metadata

import click
import pytest
from click.testing import CliRunner

from sandbox.cli import main


def _commands(group=main, ctx=None, prefix=()):
    ctx = ctx or click.Context(main, info_name="particulier-sandbox")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from _commands(command, click.Context(command, parent=ctx, info_name=name), prefix + (name,))


COMMANDS = [(), *(path for path, _ in _commands())]


def test_version_comes_from_the_package_metadata():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"particulier-sandbox, version {importlib.metadata.version('particulier-sandbox')}"


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "main")
def test_every_command_takes_h_and_help(path):
    short = CliRunner().invoke(main, [*path, "-h"])
    long = CliRunner().invoke(main, [*path, "--help"])
    assert short.exit_code == 0 and long.exit_code == 0, short.output
    assert short.output == long.output and short.output.startswith("Usage:")
    assert "-h, --help" in short.output


@pytest.mark.parametrize("path", [p for p in COMMANDS if p], ids=" ".join)
def test_every_option_is_described(path):
    command = main
    for name in path:
        command = command.get_command(click.Context(command), name)
    undescribed = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
    assert not undescribed, f"{' '.join(path)}: options without help: {undescribed}"


def test_fixtures_check_help_describes_its_options():
    output = CliRunner().invoke(main, ["fixtures", "check", "-h"]).output
    assert "--spec FILE" in output and "spec" in output.split("--spec FILE")[1].split("--fixtures")[0].lower()
    assert "--fixtures DIR" in output and "Fixture folder to check" in output
