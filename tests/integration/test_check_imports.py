"""`check` of the local machine alone starts without paramiko (it is imported per need)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs the real CLI entry point in a fresh interpreter, then reports what it imported.
SCRIPT = """
import sys
from ugro_health.cli.app import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stderr.write("\\nIMPORTED paramiko=%s\\n" % ("paramiko" in sys.modules))
"""


def run_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], bool]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UGRO_HEALTH")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    env["UGRO_HEALTH_STATE_DIR"] = str(tmp_path / "state")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args, "check", "--json", "--no-record"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "IMPORTED paramiko=" in done.stderr, done.stderr
    return done, "IMPORTED paramiko=True" in done.stderr


def test_local_check_does_not_import_paramiko(tmp_path: Path) -> None:
    done, imported = run_check(tmp_path)  # no config anywhere: the built-in local default
    assert '"schema": "ugro-health/v1"' in done.stdout, done.stderr
    assert not imported


def test_local_check_from_a_config_file_does_not_import_paramiko(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text("nodes:\n  - name: here\n    host: localhost\n")
    done, imported = run_check(tmp_path, "--config", str(config))
    assert '"name": "here"' in done.stdout, done.stderr
    assert not imported


@pytest.mark.ssh
def test_a_remote_node_imports_paramiko(tmp_path: Path) -> None:
    # The control for the tests above: the script does see paramiko when a node needs SSH
    # (here a refused port: the node fails fast, but the transport was loaded).
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "ssh:\n  ssh_config: null\n  connect_timeout: 1\n"
        "nodes:\n  - name: far\n    host: 127.0.0.1\n    port: 9\n"
    )
    done, imported = run_check(tmp_path, "--config", str(config))
    assert '"name": "far"' in done.stdout, done.stderr
    assert imported
