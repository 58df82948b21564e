"""``--help`` of every command reads well on an 80-column terminal.

Commands are discovered from the app, so a new one is covered without touching this file.
"""

from __future__ import annotations

import re

import pytest
import typer
from cli_helpers import run_cli
from typer.main import get_command
from typer.testing import CliRunner

from ugro_health.cli.app import app
from ugro_health.cli.help_format import TidyHelpGroup

TYPER_OWN_FLAGS = ("--help", "--install-completion", "--show-completion")


def command_paths() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(get_command(app), ())
    return paths


PATHS = command_paths()


def help_of(path: tuple[str, ...], tmp_path) -> str:
    result = run_cli(*path, "--help", cwd=tmp_path, env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout


def test_every_command_is_covered():
    names = {" ".join(p) for p in PATHS}
    assert {"check", "watch", "demo", "status", "history", "jobs start", "config validate"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "root")
def test_help_fits_80_columns_with_an_example(path: tuple[str, ...], tmp_path):
    text = help_of(path, tmp_path)
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert not too_long, too_long
    assert "…" not in text, "a word was cut off: reword the help text"
    assert "[[" not in text, "doubled brackets in usage: drop the brackets from the metavar"
    if path:  # the root lists the commands; each command shows how to use it
        assert "Example:" in text
    for line in text.splitlines():
        if "<bool>" in line:
            assert any(flag in line for flag in TYPER_OWN_FLAGS), f"flag needs metavar='': {line}"


@pytest.mark.xfail(
    not isinstance(get_command(app), TidyHelpGroup),
    reason="Typer adds --help and --install/show-completion with a <bool> type; "
    "needs cls=TidyHelpGroup on the root Typer in cli/app.py",
    strict=True,
)
@pytest.mark.parametrize("path", [(), ("check",), ("jobs", "start")], ids=["root", "check", "jobs"])
def test_no_flag_shows_a_type(path: tuple[str, ...], tmp_path):
    assert "<bool>" not in help_of(path, tmp_path)


def test_tidy_help_group_blanks_every_flag_of_the_tree():
    demo = typer.Typer(cls=TidyHelpGroup, rich_markup_mode="rich")
    sub = typer.Typer()

    @demo.command("go")
    def go(fast: bool = typer.Option(False, "--fast"), n: int = typer.Option(1, "--n")) -> None:
        """Go."""

    @sub.command("deep")
    def deep(loud: bool = typer.Option(False, "--loud")) -> None:
        """Deep."""

    @sub.command("other")
    def other() -> None:
        """Other."""

    demo.add_typer(sub, name="sub")
    runner = CliRunner()
    for args in (["--help"], ["go", "--help"], ["sub", "deep", "--help"], ["sub", "--help"]):
        result = runner.invoke(demo, args, env={"COLUMNS": "80", "NO_COLOR": "1"})
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output and "--help" in result.output
    go_help = runner.invoke(demo, ["go", "--help"], env={"COLUMNS": "80"}).output
    assert re.search(r"--n\s+<int>", go_help)  # options with a value keep their type
