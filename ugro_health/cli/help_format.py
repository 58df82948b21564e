"""Clean flag rows in ``--help``: Typer 0.29's Rich help prints a ``<bool>`` type beside every
flag, although a flag takes no value.

Typer offers no per-option way to change this for the flags it adds itself (``--help`` on every
command, ``--install-completion``, ``--show-completion``), so ``TidyHelpGroup`` (the root
group's ``cls``) blanks the metavar of every flag of the command tree, ours included, as commands
are resolved. Typer only; imported by ``cli.app``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from typer import _click
from typer.core import TyperGroup, TyperOption


class TidyHelpGroup(TyperGroup):
    """A ``TyperGroup`` whose help, and its sub-commands' help, shows no type for flags."""

    def get_params(self, ctx: _click.Context) -> list[_click.Parameter]:
        params = super().get_params(ctx)
        _blank_flag_metavars(params)
        return params

    def resolve_command(
        self, ctx: _click.Context, args: list[str]
    ) -> tuple[str | None, _click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            _tidy_tree(command, ctx)
        return name, command, rest


def _tidy_tree(command: _click.Command, ctx: _click.Context) -> None:
    _blank_flag_metavars([*command.params, command.get_help_option(ctx)])
    for sub in getattr(command, "commands", {}).values():
        _tidy_tree(sub, ctx)


def _blank_flag_metavars(params: Iterable[Any]) -> None:
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
