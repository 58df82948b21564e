"""The remote probe's protocol stream is its own: what C libraries write to fd 1 goes to stderr.

NVML and psutil's C parts may write to file descriptor 1 directly, past ``sys.stdout``; here a
``sitecustomize`` does the same (``os.write(1, ...)``) from inside a sub-check, on every Python
the nodes may have.
"""

import os
from pathlib import Path

import pytest
from test_probe_protocol import PYTHONS, interpreter, replies, run_remote, stream

SITECUSTOMIZE = """
import os
_statvfs = os.statvfs
def _noisy_statvfs(path):
    os.write(1, b"C-LEVEL NOISE\\n")  # as a C library's write(1, ...) would
    print("PYTHON NOISE")
    return _statvfs(path)
os.statvfs = _noisy_statvfs
"""


@pytest.mark.parametrize("version", PYTHONS)
def test_writes_to_fd_1_do_not_reach_the_protocol_stream(version: str, tmp_path: Path) -> None:
    python = interpreter(version)
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    request = {"mounts": ["/"], "window_s": 0}
    result = run_remote(
        python, stream(request, request), env=dict(os.environ, PYTHONPATH=str(tmp_path))
    )
    assert result.returncode == 0, result.stderr
    docs = replies(result.stdout)
    assert [doc["ok"] for doc in docs] == [True, True]
    assert result.stderr.count(b"C-LEVEL NOISE") == 2
    assert result.stderr.count(b"PYTHON NOISE") == 2
