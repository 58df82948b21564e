"""The CLI exits with its code even when a poll thread is stuck past its deadline."""

from __future__ import annotations

import subprocess
import sys
import time

STUCK = """
import threading, time
from concurrent.futures import ThreadPoolExecutor
from ugro_health.cli.app import _exit
from ugro_health.engine import POLL_THREAD_PREFIX

pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix=POLL_THREAD_PREFIX)
pool.submit(time.sleep, 60)  # a call that ignores every deadline
pool.submit(lambda: None)  # and an idle worker
pool.shutdown(wait=False)
print("report printed", end="")  # unflushed: _exit must flush it
_exit(2)
"""


def test_a_stuck_poll_thread_does_not_hold_the_exit() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", STUCK], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == "report printed"
    assert time.monotonic() - started < 20  # not the 60 s the stuck call would take


def test_idle_poll_threads_exit_normally() -> None:
    idle = STUCK.replace("pool.submit(time.sleep, 60)", "pool.submit(time.sleep, 0.01)")
    idle = idle.replace(
        "_exit(2)", "import atexit; atexit.register(print, ' atexit ran')\n_exit(0)"
    )
    result = subprocess.run([sys.executable, "-c", idle], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "report printed atexit ran\n")


def test_ctrl_c_during_check_says_so_and_exits_130(tmp_path) -> None:
    """A node that accepts TCP and never speaks keeps `check` waiting; Ctrl-C ends it at once
    with one line (exit 130, listed in the README's table), nothing recorded."""
    import signal
    import socket

    from cli_helpers import cli_env

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        (tmp_path / "cluster.yaml").write_text(
            "ssh: {connect_timeout: 120}\n"
            f"nodes:\n  - name: mute\n    host: 127.0.0.1\n    port: {port}\n    transport: ssh\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "ugro_health", "check"],
            cwd=tmp_path,
            env=cli_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        silent.settimeout(60)
        conn, _ = silent.accept()  # its connection is in: it now waits for a banner
        with conn:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err == "ugro-health: interrupted\n" and out == ""
    assert not (tmp_path / "state" / "ugro-health" / "state.json").exists()


def test_a_state_dir_under_a_file_is_named_as_such(tmp_path) -> None:
    from cli_helpers import run_cli

    (tmp_path / "afile").write_text("")
    for command in (["status"], ["check", "--json"], ["history"], ["jobs", "list"]):
        result = run_cli("--state-dir", str(tmp_path / "afile" / "sub"), *command, cwd=tmp_path)
        assert result.returncode == 3, command
        assert result.stderr == (
            f"ugro-health: state directory {tmp_path}/afile/sub: {tmp_path}/afile is a file, "
            "not a directory (see --state-dir)\n"
        ), command
