"""The root of the command tree: global options, command registration and the exit-code policy.

Usage and configuration errors exit 3 (UNKNOWN) with one line, never Click's 2 (which a script
would read as CRITICAL) and never a traceback unless ``--debug``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import typer

from ugro_health import __version__, paths
from ugro_health.cli import (
    breaker,
    check,
    config_cmd,
    demo,
    history,
    jobs,
    notify,
    silence,
    slurm,
    status,
    watch,
)
from ugro_health.cli.context import AppContext
from ugro_health.cli.help_format import TidyHelpGroup
from ugro_health.cli.output import err_console, fail, use_nagios
from ugro_health.config import ConfigError
from ugro_health.engine import POLL_THREAD_PREFIX

app = typer.Typer(
    name="ugro-health",
    cls=TidyHelpGroup,
    help="Agentless health monitor for GPU training clusters, over SSH.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 80},
)


def _version(value: bool) -> None:
    if value:
        print(f"ugro-health {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    config: str | None = typer.Option(
        None,
        "--config",
        "-c",
        envvar="UGRO_HEALTH_CONFIG",
        metavar="PATH",
        help="Cluster file. Default: ./cluster.yaml, then cluster.yaml in "
        "$XDG_CONFIG_HOME/ugro-health, else this machine alone.",
    ),
    state_dir: str | None = typer.Option(
        None,
        "--state-dir",
        envvar="UGRO_HEALTH_STATE_DIR",
        metavar="PATH",
        help="Where history and state live. Default: $STATE_DIRECTORY, then "
        "$XDG_STATE_HOME/ugro-health.",
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for unexpected errors."),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    ctx.obj = AppContext(
        config_path=paths.find_config(config),
        state_dir=paths.state_dir(state_dir),
        debug=debug,
    )
    if ctx.invoked_subcommand != "config":
        problem = _state_dir_problem(ctx.obj.state_dir)
        if problem is not None:
            fail(f"state directory {ctx.obj.state_dir}: {problem} (see --state-dir)")


def _state_dir_problem(path: Path) -> str | None:
    """Why ``path`` can never be the state directory (a file in the way), else None.

    Checked up front: the store would otherwise report ``File exists`` or ``Not a directory``
    against a path the user did not name."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else f"{candidate} is a file, not a directory"
    return None


app.command("check")(check.check_command)
app.command("watch")(watch.watch_command)
app.command("status")(status.status_command)
app.command("history")(history.history_command)
app.command("demo")(demo.demo_command)
app.add_typer(jobs.app, name="jobs")
app.add_typer(config_cmd.app, name="config")
app.add_typer(breaker.app, name="breaker")
app.add_typer(silence.app, name="silence")
app.add_typer(notify.app, name="notify")
app.add_typer(slurm.app, name="slurm")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; maps every failure to an exit code and one line."""
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    # Read before parsing, so that even a usage error answers Nagios in its own protocol.
    options = args[: args.index("--")] if "--" in args else args
    use_nagios("--nagios" in options)
    try:
        code = app(args=argv, prog_name="ugro-health", standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    except typer.TyperException as exc:  # Click's usage errors, vendored by Typer
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message())
            sys.exit(0)
        context = getattr(exc, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        fail(f"{exc.format_message()}{hint}")
    except ConfigError as exc:
        fail(exc.one_line())
    except Exception as exc:
        if debug:
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)")
    if code == EXIT_INTERRUPTED:  # Typer's answer to a KeyboardInterrupt in a command
        _interrupted()
    _exit(code if isinstance(code, int) else 0)


EXIT_INTERRUPTED = 130  # as a shell reports a process killed by SIGINT


def _interrupted() -> NoReturn:
    """Ctrl-C (outside ``watch``, which stops cleanly and exits 0): one line, exit 130, at
    once; a poll still in flight is abandoned, not awaited, and nothing of it is recorded."""
    err_console.print("ugro-health: interrupted", markup=False)
    _exit(EXIT_INTERRUPTED)


_EXIT_GRACE_S = 0.5  # for idle poll threads to notice the pool's shutdown


def _exit(code: int) -> NoReturn:
    """Exit with ``code``, never held by a poll thread stuck past its node's deadline.

    Every remote call has a deadline, and the report already says which node did not answer;
    but Python joins pool threads at exit, so one call that ignored its deadline (a library
    bug, a wedged driver) would keep ``check`` from ever returning. Idle workers end at once.
    """
    end = time.monotonic() + _EXIT_GRACE_S
    for thread in threading.enumerate():
        if thread.name.startswith(POLL_THREAD_PREFIX):
            thread.join(max(0.0, end - time.monotonic()))
    if any(t.name.startswith(POLL_THREAD_PREFIX) and t.is_alive() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
