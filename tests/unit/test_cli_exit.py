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
