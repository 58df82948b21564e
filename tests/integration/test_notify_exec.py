"""The exec channel running real commands: small Python scripts written by each test."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from ugro_health.config_notify import ChannelConfig
from ugro_health.notify.base import AlertNotice, DeliveryError, Notification, public_json
from ugro_health.notify.exec import LINE_MAX, ExecChannel

T0 = 1_764_000_000.0


def notification(count: int = 1) -> Notification:
    alerts = tuple(
        AlertNotice(
            node=f"gpu{i}",
            code="gpu_temp_critical",
            severity="critical",
            message="GPU 0 temperature 91 °C",
            state="firing",
            starts_at=T0,
            value=91.0,
            gpu=0,
        )
        for i in range(count)
    )
    return Notification(id="n-7", cluster="prod", created_at=T0 + 5, alerts=alerts)


def script(tmp_path: Path, body: str, name: str = "hook.py") -> list[str]:
    path = tmp_path / name
    path.write_text("import os, sys, json, time, subprocess, signal\n" + body)
    return [sys.executable, str(path)]


def channel(command: list[str], timeout: float = 30.0) -> ExecChannel:
    options = {"command": tuple(command), "timeout": timeout}
    return ExecChannel(ChannelConfig(name="hook", type="exec", options=options))


def send_error(hook: ExecChannel, note: Notification, timeout: float = 30.0) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        hook.send(note, timeout)
    return info.value


def gone_or_zombie_elsewhere(pid: int) -> bool:
    """Not running: no such process, or a zombie that is not ours to reap (re-parented)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    state, ppid = stat.rpartition(")")[2].split()[:2]
    return state in ("Z", "X") and int(ppid) != os.getpid()


def wait_for(predicate: object, seconds: float = 20.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(predicate())  # type: ignore[operator]


def test_the_document_arrives_on_stdin_with_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    hook = script(
        tmp_path,
        f"""
doc = json.load(sys.stdin)
env = {{k: v for k, v in os.environ.items() if k.startswith("UGRO_HEALTH_")}}
open({str(out)!r}, "w").write(json.dumps({{"doc": doc, "env": env, "argv": sys.argv[1:]}}))
""",
    )
    note = notification(2)
    channel([*hook, "--flag", "two words; $(no shell)"]).send(note, 30.0)
    got = json.loads(out.read_text())
    assert got["doc"] == public_json(note)
    assert got["argv"] == ["--flag", "two words; $(no shell)"]
    assert got["env"] == {
        "UGRO_HEALTH_STATUS": "firing",
        "UGRO_HEALTH_SEVERITY": "critical",
        "UGRO_HEALTH_CLUSTER": "prod",
        "UGRO_HEALTH_NOTIFICATION_ID": "n-7",
        "UGRO_HEALTH_CHANNEL": "hook",
    }


def test_non_zero_exit_names_the_status_and_the_last_stderr_line(tmp_path: Path) -> None:
    hook = script(
        tmp_path,
        """
sys.stdin.read()
print("progress on stdout")
sys.stderr.write("first problem\\nreceiver said: 503 try later\\n\\n")
sys.exit(3)
""",
    )
    error = send_error(channel(hook), notification())
    assert not error.permanent
    assert str(error) == "python3 exited with status 3: receiver said: 503 try later".replace(
        "python3", Path(sys.executable).name
    )


def test_stdout_stands_in_for_an_empty_stderr(tmp_path: Path) -> None:
    hook = script(tmp_path, 'print("only stdout speaks")\nsys.exit(1)\n')
    assert str(send_error(channel(hook), notification())).endswith(": only stdout speaks")


def test_death_by_signal(tmp_path: Path) -> None:
    hook = script(tmp_path, "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(30)\n")
    assert "was killed by SIGTERM" in str(send_error(channel(hook), notification()))


def test_command_not_found_is_permanent(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-hook")
    error = send_error(channel([missing]), notification())
    assert error.permanent and str(error) == f"command not found: {missing}"
    not_executable = tmp_path / "not-executable.sh"
    not_executable.write_text("#!/bin/sh\n")
    error = send_error(channel([str(not_executable)]), notification())
    assert error.permanent and "not executable" in str(error)


@pytest.mark.slow
def test_timeout_kills_the_whole_group_and_reaps_it(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # sh, not Python: it starts in milliseconds even on a loaded machine, well within the timeout
    hook = ["sh", "-c", f'sleep 120 & echo $$ $! > "{pids}"; sleep 120']
    start = time.monotonic()
    error = send_error(channel(hook, timeout=30.0), notification(), timeout=2.0)
    elapsed = time.monotonic() - start
    assert not error.permanent
    assert str(error) == "sh did not finish within 2s (killed)"
    assert elapsed < 2 + 10  # generous: a loaded CI machine
    assert pids.exists()
    command_pid, sleep_pid = map(int, pids.read_text().split())
    assert not Path(f"/proc/{command_pid}").exists()  # killed and reaped: no zombie of ours
    assert wait_for(lambda: gone_or_zombie_elsewhere(sleep_pid))


def test_megabytes_of_output_do_not_block(tmp_path: Path) -> None:
    """Output written before stdin is read: a naive write-then-wait would deadlock."""
    hook = script(
        tmp_path,
        """
block = b"x" * 65535 + b"\\n"
for _ in range(128):  # 8 MiB each
    sys.stdout.buffer.write(block)
    sys.stderr.buffer.write(block)
sys.stdout.flush()
sys.stderr.flush()
sys.stdin.read()
sys.stderr.write("y" * 5000 + "\\n")
sys.exit(2)
""",
    )
    error = send_error(channel(hook), notification(2000))
    text = str(error)
    assert "exited with status 2: yyy" in text
    assert len(text) < LINE_MAX + 60 and text.endswith("...")


def test_command_that_ignores_stdin_succeeds(tmp_path: Path) -> None:
    """A big document and a command that never reads it: the broken pipe is its right."""
    hook = script(tmp_path, "sys.exit(0)\n")
    channel(hook).send(notification(3000), 30.0)


@pytest.mark.slow
def test_background_children_are_not_waited_for(tmp_path: Path) -> None:
    """The command exits, a child it left behind keeps the pipes open: delivered, no timeout."""
    pid_file = tmp_path / "pid"
    hook = script(
        tmp_path,
        f"""
sys.stdin.read()
child = subprocess.Popen(["sleep", "60"])
open({str(pid_file)!r}, "w").write(str(child.pid))
""",
    )
    try:
        channel(hook, timeout=20.0).send(notification(), 20.0)
    finally:
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
