"""The real Prometheus tools for the export tests: ``promtool``, the ``prometheus`` server and
node_exporter (``prometheus-node-exporter``).

Debian's ``prometheus`` and ``prometheus-node-exporter`` packages bring them (``.ci/run``
installs both). Without them the tests
skip, except under CI (env ``CI`` set), where a missing tool fails them so CI cannot pass by
skipping, as the sshd tests do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def require(tool: str) -> str:
    """The path of ``tool`` (``promtool``, ``prometheus``), or skip / fail (under CI)."""
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} not installed (Debian package prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: the Prometheus tests must run)")
        pytest.skip(reason)
    return path


def check_metrics(text: bytes | str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` (format and naming lint) on an exposition."""
    data = text.decode() if isinstance(text, bytes) else text
    return subprocess.run(
        [require("promtool"), "check", "metrics"],
        input=data,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_clean(text: bytes | str) -> None:
    result = check_metrics(text)
    # promtool prints lint problems ("... counter metrics should have "_total" suffix") and
    # exits non-zero (3 for lint alone); clean input prints nothing.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
