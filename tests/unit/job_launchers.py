"""Real process trees standing in for a training job's launcher (tests only): a launcher that
starts N workers, each with a child of its own (as a DataLoader worker would be), optionally
behind a shell wrapper that starts it with ``exec -a`` under the job's name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LAUNCHER = """
import subprocess, sys, time
worker = "import subprocess, time; subprocess.Popen(['sleep', '120']); time.sleep(120)"
# argv[2]: the interpreter (under exec -a, sys.executable cannot be found from argv[0])
procs = [subprocess.Popen([sys.argv[2], "-c", worker]) for _ in range(int(sys.argv[1]))]
time.sleep(120)
"""


@contextmanager
def launched_job(
    tmp_path: Path, token: str, workers: int, wrapper: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """``python launcher.py N PYTHON <token>`` (its command line carries the job's pattern, as
    torchrun's would; its workers' do not), or a bash script named ``<token>`` that runs it in
    a subshell as ``exec -a <token>-agent python ...``: two matching processes, one launcher."""
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)
    argv = [sys.executable, str(script), str(workers), sys.executable, token]
    if wrapper:
        shell = tmp_path / token
        shell.write_text(f'#!/bin/bash\n(exec -a {token}-agent "$@")\nwait\n')
        shell.chmod(0o755)
        argv = [str(shell), *argv]
    proc = subprocess.Popen(argv, start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """Poll ``check`` until it returns something true; its last value on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)
