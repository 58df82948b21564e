"""The exec channel: run a command with the notification as JSON on its stdin.

Standard library only (subprocess, selectors) plus ``notify.base``. ``command`` is an argument
list run without a shell, so nothing from an alert is ever parsed by one; its stdin gets the
public v1 document (``public_json``) and then end-of-file. Its environment is ugro-health's own
plus ``UGRO_HEALTH_STATUS`` (firing|resolved), ``UGRO_HEALTH_SEVERITY``,
``UGRO_HEALTH_CLUSTER``, ``UGRO_HEALTH_NOTIFICATION_ID`` and ``UGRO_HEALTH_CHANNEL``.

The command runs in a session (and process group) of its own, bounded by the send's timeout: at
the deadline the whole group is killed (SIGKILL) and the command reaped, so a hung script leaves
neither a process nor a zombie behind. Its stdout and stderr are read as they come (a command
printing megabytes cannot block on a full pipe) and only their last few KiB are kept, for the
error message. Once the command itself has exited, children it left in the background are not
waited for.

How a failure is classified: a command that cannot be run (not found, not executable) is refused
for good (``permanent``); a non-zero exit, a death by signal or a timeout is retried later,
since a script's own failures (a receiver down, a network blip) usually pass.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field

from ugro_health.config_notify import ChannelConfig
from ugro_health.notify.base import DeliveryError, Notification, public_json

TAIL_BYTES = 4096  # of stdout and stderr, kept for the error message
LINE_MAX = 200  # characters of the command's last line quoted in an error
CHUNK = 65536
TICK_S = 0.25  # how often the command's exit is checked while its pipes stay open
REAP_S = 5.0  # for a killed command to be reaped (SIGKILL cannot be ignored, but D state)


@dataclass(slots=True)
class _Run:
    """What the command has written so far: the tail of each stream."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)

    def last_line(self) -> str:
        """The last non-empty line of stderr (else of stdout), on one line, bounded."""
        for tail in (self.stderr, self.stdout):
            text = tail.decode("utf-8", "replace")
            for line in reversed(text.splitlines()):
                shown = " ".join("".join(c if c.isprintable() else " " for c in line).split())
                if shown:
                    return shown if len(shown) <= LINE_MAX else shown[: LINE_MAX - 3] + "..."
        return ""


class _Timeout(Exception):
    pass


class ExecChannel:
    """Runs ``command`` once per notification."""

    def __init__(self, config: ChannelConfig) -> None:
        self.name = config.name
        self.command: tuple[str, ...] = tuple(config.options["command"])
        self.timeout: float = float(config.options.get("timeout") or 30.0)
        self.program = os.path.basename(self.command[0]) if self.command else "?"

    def __repr__(self) -> str:
        return f"ExecChannel({self.name!r}, {self.program})"

    def send(self, notification: Notification, timeout: float) -> None:
        if not self.command:
            raise DeliveryError("no command to run", permanent=True)
        budget = max(min(timeout, self.timeout), 0.1)
        document = (json.dumps(public_json(notification)) + "\n").encode()
        env = dict(os.environ)
        env.update(
            UGRO_HEALTH_STATUS=notification.status,
            UGRO_HEALTH_SEVERITY=notification.severity,
            UGRO_HEALTH_CLUSTER=notification.cluster,
            UGRO_HEALTH_NOTIFICATION_ID=notification.id,
            UGRO_HEALTH_CHANNEL=self.name,
        )
        proc = self._start(env)
        run = _Run()
        try:
            _exchange(proc, document, time.monotonic() + budget, run)
        except _Timeout:
            raise DeliveryError(
                f"{self.program} did not finish within {budget:g}s (killed)"
            ) from None
        finally:
            if proc.returncode is None:  # the timeout, or anything unforeseen: never leave it
                _kill(proc)
            _close(proc)
        if proc.returncode != 0:
            raise DeliveryError(self._failure(proc.returncode, run))

    def _start(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group, killed as one at the deadline
            )
        except FileNotFoundError:
            raise DeliveryError(f"command not found: {self.command[0]}", permanent=True) from None
        except PermissionError:
            raise DeliveryError(
                f"command not executable: {self.command[0]}", permanent=True
            ) from None
        except OSError as exc:
            raise DeliveryError(f"{self.program} could not start: {exc.strerror}") from None

    def _failure(self, status: int, run: _Run) -> str:
        if status < 0:
            try:
                how = f"was killed by {signal.Signals(-status).name}"
            except ValueError:
                how = f"was killed by signal {-status}"
        else:
            how = f"exited with status {status}"
        line = run.last_line()
        return f"{self.program} {how}" + (f": {line}" if line else "")


def _exchange(proc: subprocess.Popen[bytes], document: bytes, deadline: float, run: _Run) -> None:
    """Feed stdin, drain stdout and stderr, until the command exits; _Timeout at the deadline."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    tails = {proc.stdout.fileno(): run.stdout, proc.stderr.fileno(): run.stderr}
    pending = memoryview(document)
    with selectors.DefaultSelector() as selector:
        os.set_blocking(proc.stdin.fileno(), False)
        selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
        for fd in tails:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout
            for key, _ in selector.select(min(left, TICK_S)):
                if key.fd in tails:
                    if _read(key.fd, tails[key.fd]) == 0:
                        selector.unregister(key.fd)
                    continue
                pending = _write(key.fd, pending)
                if not pending:
                    selector.unregister(key.fd)
                    proc.stdin.close()  # end-of-file: the document is complete
            if proc.poll() is not None:
                for fd in tails:  # what it wrote before exiting is in the pipes: take it
                    while _read(fd, tails[fd]) > 0:
                        pass
                return
    left = deadline - time.monotonic()
    try:
        proc.wait(max(left, 0.0))
    except subprocess.TimeoutExpired:
        raise _Timeout from None


def _read(fd: int, tail: bytearray) -> int:
    """Read what is there into ``tail`` (kept bounded): bytes read, 0 at end-of-file, -1 when
    nothing is there right now."""
    try:
        chunk = os.read(fd, CHUNK)
    except BlockingIOError:
        return -1
    except OSError:
        return 0
    tail += chunk
    del tail[:-TAIL_BYTES]
    return len(chunk)


def _write(fd: int, pending: memoryview) -> memoryview:
    """Write what the pipe takes; what is left (empty once done or once the reader is gone)."""
    try:
        written = os.write(fd, pending[:CHUNK])
    except BlockingIOError:
        return pending
    except OSError:  # BrokenPipeError: the command does not read its stdin, which is its right
        return pending[:0]
    return pending[written:]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's whole process group, then reap the command."""
    if proc.returncode is None:  # not reaped yet: its pid, hence its group id, is still ours
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.wait(REAP_S)
    except subprocess.TimeoutExpired:
        pass  # stuck in the kernel (D state): Popen reaps it later, on its next poll


def _close(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
