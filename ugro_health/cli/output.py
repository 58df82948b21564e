"""The one owner of the terminal: stdout and stderr consoles, and one-line errors.

Colour follows Rich's rules: off for pipes and when ``NO_COLOR`` is set.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 3) -> NoReturn:
    """Print ``ugro-health: message`` on one line to stderr and exit with ``code``."""
    err_console.print(f"ugro-health: {message}", markup=False, soft_wrap=True)
    sys.exit(code)


def warn(message: str) -> None:
    err_console.print(f"ugro-health: warning: {message}", markup=False, soft_wrap=True)
