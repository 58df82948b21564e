"""The one owner of the terminal: stdout and stderr consoles, and one-line errors.

Colour follows Rich's rules: off for pipes and when ``NO_COLOR`` is set. Under ``--nagios`` an
error is the plugin's one line on stdout (``UGRO-HEALTH UNKNOWN - reason``), which is what Nagios
and a cron ``| logger`` read.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
_nagios = False


def use_nagios(on: bool = True) -> None:
    """From now on, ``fail`` speaks the monitoring-plugins protocol on stdout."""
    global _nagios
    _nagios = on


def fail(message: str, code: int = 3) -> NoReturn:
    """Print ``ugro-health: message`` on one line to stderr (under ``--nagios``, the plugin's
    UNKNOWN line on stdout) and exit with ``code``."""
    if _nagios:
        from ugro_health.render.nagios import nagios_text

        sys.stdout.write(f"UGRO-HEALTH UNKNOWN - {nagios_text(message)}\n")
        sys.stdout.flush()
        sys.exit(code)
    from ugro_health.render.common import printable

    err_console.print(f"ugro-health: {printable(message)}", markup=False, soft_wrap=True)
    sys.exit(code)


def warn(message: str) -> None:
    err_console.print(f"ugro-health: warning: {message}", markup=False, soft_wrap=True)
