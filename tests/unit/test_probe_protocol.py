"""The remote protocol: the exact BOOTSTRAP command fed the probe source and request lines.

The source is what the control host sends (``probe_source.lazy_source``: functions compiled on
first call); one test runs the plain module too.

Runs under every Python the nodes may have (pyenv's 3.6 to 3.13). Those interpreters have no
psutil and no pynvml, so these runs also exercise the /proc and nvidia-smi fallbacks. A missing
interpreter skips its case, except under CI=true, where it fails.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ugro_health import probe
from ugro_health.transport.probe_source import lazy_source

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probe"
PYENV_ROOTS = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv"), "/root/.pyenv"]
PYTHONS = ["3.6.15", "3.8.18", "3.11.7", "3.13.0"]


def interpreter(version: str) -> str:
    """pyenv's Python ``version``, from $PYENV_ROOT, ~/.pyenv or root's (where readable)."""
    tried = []
    for root in filter(None, PYENV_ROOTS):
        path = Path(root) / "versions" / version / "bin" / "python"
        tried.append(str(path))
        try:
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
        except OSError:  # e.g. /root not readable by a developer's own account
            continue
    if os.environ.get("CI") == "true":
        pytest.fail(f"Python {version} is required under CI but missing: {', '.join(tried)}")
    pytest.skip(f"Python {version} not installed (or not readable): {', '.join(tried)}")


def stream(*requests: Any, plain: bool = False) -> bytes:
    """What the transport writes: source length, source, then one request per line."""
    source = probe.source_bytes() if plain else lazy_source(probe.source_bytes())
    lines = b"".join(
        (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in requests
    )
    return b"%d\n" % len(source) + source + lines


def run_remote(
    python: str, data: bytes, env: dict[str, str] | None = None, timeout: float = 60
) -> "subprocess.CompletedProcess[bytes]":
    return subprocess.run(
        [python, "-c", probe.BOOTSTRAP],
        input=data,
        capture_output=True,
        env=env,
        timeout=timeout,
    )


def replies(stdout: bytes) -> list[dict[str, Any]]:
    lines = stdout.decode().splitlines()
    assert all(line.startswith(probe.PREFIX) for line in lines), lines
    return [json.loads(line[len(probe.PREFIX) :]) for line in lines]


def test_bootstrap_is_the_documented_command() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "probe-protocol.md").read_text()
    assert f"<python> -c '{probe.BOOTSTRAP}'" in doc


def test_bootstrap_has_no_single_quote() -> None:
    assert "'" not in probe.BOOTSTRAP  # documented inside '...'; shlex.quote keeps it one word


def test_an_old_python_is_told_why_it_cannot_run_the_probe() -> None:
    # Python 2.7 is not among the interpreters the probe supports, so it is optional here.
    if not any(
        (Path(root) / "versions/2.7.18/bin/python").exists() for root in filter(None, PYENV_ROOTS)
    ):
        pytest.skip("Python 2.7.18 not installed")
    result = run_remote(interpreter("2.7.18"), stream({"window_s": 0}))
    assert result.returncode == 1
    assert result.stdout == b""
    assert (
        result.stderr.decode()
        .strip()
        .startswith("ugro-health: the probe needs Python 3.6 or newer; ")
    )
    assert result.stderr.decode().strip().endswith(" is 2.7.18")


@pytest.mark.parametrize("plain", [False, True], ids=["sent", "plain"])
@pytest.mark.parametrize("version", PYTHONS)
def test_two_requests_over_one_channel(version: str, plain: bool) -> None:
    python = interpreter(version)
    result = run_remote(
        python,
        stream(
            {"op": "sample", "mounts": ["/"], "window_s": 0.2, "match": ["nothing-matches-this"]},
            {"op": "sample", "mounts": ["/"], "window_s": 0.2},
            plain=plain,
        ),
    )
    assert result.returncode == 0, result.stderr.decode()
    first, second = replies(result.stdout)
    for doc in (first, second):
        assert doc["ok"] is True, doc
        assert doc["python"] == version
        assert doc["cpu"]["cores"] == os.cpu_count()
        assert doc["memory"]["total_bytes"] > 0  # /proc/meminfo: no psutil in this interpreter
        assert doc["disks"][0]["total_bytes"] > 0
        assert doc["processes"]["count"] > 1
        assert doc["gpus"] == [] or "nvidia-smi" in doc["gpu_info"].values()
    assert first["matched_processes"] == []
    assert second["time"] > first["time"]


def test_garbage_lines_are_answered_and_the_probe_goes_on() -> None:
    python = interpreter("3.6.15")
    result = run_remote(
        python,
        stream(b"this is not json", {"op": "frobnicate"}, b"[1, 2]", {"window_s": 0}),
    )
    assert result.returncode == 0
    garbage, unknown_op, not_an_object, good = replies(result.stdout)
    assert garbage["ok"] is False and garbage["error"].startswith("bad request")
    assert unknown_op == {
        "probe_version": 1,
        "ok": False,
        "error": "bad request: unknown op 'frobnicate'",
    }
    assert not_an_object["ok"] is False
    assert good["ok"] is True


def test_oversized_response_is_replaced_not_truncated() -> None:
    python = interpreter("3.8.18")
    result = run_remote(python, stream({"window_s": 0, "max_output_bytes": 300}))
    (doc,) = replies(result.stdout)
    assert doc["ok"] is False
    assert "exceeds max_output_bytes 300" in doc["error"]
    assert len(result.stdout) <= 300


def test_exit_op_stops_before_later_requests() -> None:
    python = interpreter("3.11.7")
    started = time.monotonic()
    result = run_remote(python, stream({"window_s": 0}, {"op": "exit"}, {"window_s": 0}))
    assert result.returncode == 0
    assert len(replies(result.stdout)) == 1
    assert time.monotonic() - started < 10


def test_exits_on_eof_without_any_request() -> None:
    result = run_remote(interpreter("3.6.15"), stream())
    assert (result.returncode, result.stdout) == (0, b"")


def test_nvidia_smi_fallback_on_python_36(tmp_path: Path) -> None:
    python = interpreter("3.6.15")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    script = FIXTURES / "fake_nvidia_smi.py"
    fake.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    result = run_remote(python, stream({"window_s": 0}), env=env)
    (doc,) = replies(result.stdout)
    assert doc["gpu_info"]["source"] == "nvidia-smi"
    assert doc["gpus"][0]["mem_total_bytes"] == 81559 * 1024 * 1024
    assert len(doc["gpus"][0]["processes"]) == 3


SITECUSTOMIZE = """
import atexit, os, sys, time
_statvfs = os.statvfs
def _hanging_statvfs(path):
    if path == "/proc":  # a real mount point, so the probe goes on to measure it
        time.sleep(3600)  # a dead NFS server
    return _statvfs(path)
os.statvfs = _hanging_statvfs
atexit.register(lambda: sys.stderr.write("ATEXIT-RAN\\n"))
"""


@pytest.mark.parametrize(("mount", "hung"), [("/proc", True), ("/", False)])
def test_a_stuck_check_does_not_keep_the_process_alive(
    tmp_path: Path, mount: str, hung: bool
) -> None:
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    started = time.monotonic()
    request = {"mounts": [mount], "subcheck_timeout_s": 0.3, "window_s": 0}
    result = run_remote(interpreter("3.8.18"), stream(request), env=env, timeout=30)
    assert time.monotonic() - started < 10
    assert result.returncode == 0
    (doc,) = replies(result.stdout)
    assert ("disk:" + mount in doc["errors"]) is hung
    # with a thread still stuck the probe leaves through os._exit (atexit hooks do not run)
    assert (b"ATEXIT-RAN" in result.stderr) is not hung


def test_kmsg_reader_on_python_36(tmp_path: Path) -> None:
    # The sent source's /dev/kmsg reader, on the oldest Python, against the recorded excerpt.
    source = tmp_path / "probe_sent.py"
    source.write_bytes(lazy_source(probe.source_bytes()))
    script = (
        "import json, sys; ns = {'__name__': 'ugro_probe'}; "
        "exec(compile(open(sys.argv[1], 'rb').read(), 'ugro_probe', 'exec'), ns); "
        "ns['KMSG'] = sys.argv[2]; print(json.dumps(ns['read_kernel_xids'](5.0)))"
    )
    fixture = FIXTURES / "kmsg_excerpt_with_xids.txt"
    result = subprocess.run(
        [interpreter("3.6.15"), "-c", script, str(source), str(fixture)],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    xids = json.loads(result.stdout)
    assert [x["xid"] for x in xids] == [79, 13, 13, 13, 109, 31, 109, 79]


@pytest.mark.parametrize("version", PYTHONS)
def test_every_sent_function_compiles_on_every_python(version: str, tmp_path: Path) -> None:
    # A sample calls under half of them; the rest must load too, on each node's Python.
    source = tmp_path / "probe_sent.py"
    source.write_bytes(lazy_source(probe.source_bytes()))
    script = (
        "import sys; ns = {'__name__': 'ugro_probe'}; "
        "exec(compile(open(sys.argv[1], 'rb').read(), 'ugro_probe', 'exec'), ns); "
        "loaded = [ns['_ugro_lazy'](name) for name in sorted(ns['_UGRO_LAZY'])]; "
        "print(sum(ns[f.__name__] is f and f.__code__.co_filename == 'ugro_probe' "
        "for f in loaded))"
    )
    result = subprocess.run(
        [interpreter(version), "-c", script, str(source)], capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    assert int(result.stdout) == probe.source_bytes().count(b"\ndef ")
