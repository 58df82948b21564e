"""Run the real entry point in a subprocess with an isolated environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UGRO_HEALTH_")}
    env.update(
        {
            "XDG_CONFIG_HOME": str(home / "xdg"),
            "XDG_STATE_HOME": str(home / "state"),
            "COLUMNS": "120",
            "NO_COLOR": "1",
        }
    )
    env.pop("STATE_DIRECTORY", None)
    env.update(extra or {})
    return env


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ugro_health", *args],
        cwd=cwd,
        env=cli_env(cwd, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn_cli(
    *args: str, cwd: Path, entry: tuple[str, ...] = ("-m", "ugro_health")
) -> subprocess.Popen[str]:
    """The entry point (or ``entry``, e.g. ``("-c", CODE)``) started with ``args`` in the
    isolated environment, its output piped: for commands that run on, such as ``watch``."""
    return subprocess.Popen(
        [sys.executable, *entry, *args],
        cwd=cwd,
        env=cli_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# Thresholds no test machine reaches, for tests that need the local node to stay OK whatever
# else the machine is doing (a loaded CI box would otherwise turn it WARNING on load).
CALM_THRESHOLDS = (
    "thresholds: {load_warn_per_core: 1000, mem_warn_pct: 99.9, mem_crit_pct: 100,"
    " disk_warn_pct: 99.9, disk_crit_pct: 100, swap_warn_pct: 100, zombie_warn: 100000,"
    " clock_skew_warn_s: 100000, net_errors_warn_per_s: 1000000}\n"
)


def tab_completions(cwd: Path, line: str, env: dict[str, str] | None = None) -> list[str]:
    """What TAB offers at the end of ``line`` (Typer's bash protocol, as the committed
    completions/ scripts ask it)."""
    words = line.split(" ")
    result = run_cli(
        cwd=cwd,
        env={
            "_UGRO_HEALTH_COMPLETE": "complete_bash",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1),
            **(env or {}),
        },
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result.stdout.split()
