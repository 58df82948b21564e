"""Slurm's commands, each with a deadline: running jobs (``squeue``), node states and reasons
(``scontrol show node``), drain and resume (``scontrol update``).

Imports ``config_slurm`` and the standard library (ClusterShell for hostlists). Every command runs
in its own process group, with stdin closed, and is killed (the whole group) at its deadline, so a
hung ``scontrol`` costs at most ``timeout_s``. Any failure (not found, non-zero exit, timeout,
output that does not parse) is a ``SlurmError`` with one line for the user: the caller then does
nothing to the nodes concerned, since an unknown state is neither healthy nor unhealthy.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ugro_health.config_slurm import SlurmSettings

MAX_OUTPUT = 32 * 1024 * 1024  # bytes read from one command; more is an error
# Flags that mean a node is out of service for a reason of its own (an admin, Slurm, a
# reboot, power saving): ugro-health leaves such a node and its reason alone.
OUT_OF_SERVICE = frozenset(
    {
        "DOWN",
        "DRAIN",
        "FAIL",
        "FAILING",
        "MAINT",
        "REBOOT_REQUESTED",
        "REBOOT_ISSUED",
        "POWERED_DOWN",
        "POWERING_DOWN",
        "POWER_DOWN",
        "POWERING_UP",
        "FUTURE",
        "INVAL",
    }
)
_STATE_RE = re.compile(r"(?:^|\s)State=(\S+)")
_NAME_RE = re.compile(r"^NodeName=(\S+)")
# Slurm prints the reason followed by who set it and when: "Reason=text [user@2026-12-03T16:00:00]"
_REASON_RE = re.compile(r"(?:^|\s)Reason=(.*) \[[^\]@]*@[^\]]*\]")
_REASON_BARE_RE = re.compile(r"(?:^|\s)Reason=(.*?)\s*$")


class SlurmError(Exception):
    """A Slurm command failed or timed out, or its output did not parse; one line."""


@dataclass(frozen=True, slots=True)
class SlurmNode:
    name: str
    flags: frozenset[str]  # State=IDLE+DRAIN -> {"IDLE", "DRAIN"}; "*" -> NOT_RESPONDING
    reason: str | None
    shown: str = ""  # the state as Slurm shows it: IDLE+DRAIN

    @property
    def state(self) -> str:
        return self.shown or "+".join(sorted(self.flags))

    @property
    def drained(self) -> bool:
        return "DRAIN" in self.flags

    @property
    def out_of_service(self) -> bool:
        return bool(self.flags & OUT_OF_SERVICE)

    def ours(self, prefix: str) -> bool:
        """Drained by ugro-health: its reason still starts with our prefix."""
        return self.reason is not None and self.reason.startswith(prefix)


@dataclass(frozen=True, slots=True)
class SlurmJob:
    job_id: str
    name: str
    user: str
    nodes: tuple[str, ...]  # Slurm node names
    started_at: float | None


class SlurmClient:
    def __init__(self, settings: SlurmSettings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.env = dict(env) if env is not None else None
        # A run's own end (``check --timeout``), on the monotonic clock: no command outlives it.
        self.deadline: float | None = None
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def run(self, argv: Sequence[str], timeout: float | None = None) -> str:
        """stdout of ``argv``; ``SlurmError`` (one line) on any failure or at the deadline."""
        limit = timeout or self.settings.timeout_s
        if self.deadline is not None:
            limit = min(limit, self.deadline - time.monotonic())
            if limit <= 0:
                raise SlurmError(f"{os.path.basename(argv[0])}: no time left in this run")
        if self._closed:
            raise SlurmError("stopped")
        return run_command(argv, limit, self.env, self._track)

    def _track(self, proc: subprocess.Popen[bytes], running: bool) -> None:
        with self._lock:
            if running:
                self._running.add(proc)
            else:
                self._running.discard(proc)
            kill = running and self._closed
        if kill:
            _kill_group(proc, wait=False)

    def close(self) -> None:
        """Kill the commands running now (their process groups) and refuse new ones: a hung
        ``scontrol`` never holds up a stop."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for proc in running:
            _kill_group(proc, wait=False)

    def nodes(self, names: Iterable[str]) -> dict[str, SlurmNode]:
        """Slurm's view of ``names`` (Slurm names); a name Slurm does not know is absent."""
        wanted = set(names)
        if not wanted:
            return {}
        # Every node, then ours: naming one Slurm does not know fails the whole call.
        out = self.run([self.settings.scontrol, "--oneliner", "show", "node"])
        return {n.name: n for n in parse_nodes(out) if n.name in wanted}

    def running_jobs(self, timeout: float | None = None) -> list[SlurmJob]:
        fmt = "%i|%u|%S|%N|%j"  # the job name last: it may contain the separator
        argv = [self.settings.squeue, "--noheader", "--states=RUNNING", f"--format={fmt}"]
        out = self.run(argv, timeout)
        return parse_jobs(out)

    def drain(self, name: str, reason: str) -> None:
        self.run(
            [
                self.settings.scontrol,
                "update",
                f"NodeName={name}",
                "State=DRAIN",
                f"Reason={reason}",
            ]
        )

    def resume(self, name: str) -> None:
        self.run([self.settings.scontrol, "update", f"NodeName={name}", "State=RESUME"])


def run_command(
    argv: Sequence[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    track: Callable[[subprocess.Popen[bytes], bool], None] | None = None,
) -> str:
    """stdout of ``argv`` run with ``timeout``; ``track(proc, running)`` hears it start and
    end (to kill it from another thread)."""
    command = os.path.basename(argv[0])
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # its own process group: killed whole at the deadline
        )
    except OSError as exc:
        raise SlurmError(f"{command}: {exc.strerror or exc}") from None
    if track is not None:
        track(proc, True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise SlurmError(f"{command} timed out after {timeout:.3g} s") from None
    finally:
        if track is not None:
            track(proc, False)
    if proc.returncode < 0:
        raise SlurmError(f"{command} was killed (signal {-proc.returncode})")
    if len(stdout) > MAX_OUTPUT:
        raise SlurmError(f"{command}: more than {MAX_OUTPUT // 2**20} MiB of output")
    if proc.returncode != 0:
        # scontrol says some failures on stdout ("Node nosuch not found").
        lines = (stderr or stdout).decode("utf-8", "replace").strip().splitlines()
        why = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise SlurmError(f"{command} failed: {why}"[:300])
    return stdout.decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen[bytes], wait: bool = True) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    if not wait:
        return
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):
        pass


def parse_nodes(text: str) -> list[SlurmNode]:
    """``scontrol --oneliner show node`` output, one node per line."""
    nodes = []
    for line in text.splitlines():
        name = _NAME_RE.match(line.strip())
        if not name:
            continue
        state = _STATE_RE.search(line)
        if state is None:
            raise SlurmError(f"scontrol: no State= for node {name.group(1)}")
        raw = state.group(1)
        flags = {f for f in raw.rstrip("*$~#!%@^-").split("+") if f}
        if raw.endswith("*"):
            flags.add("NOT_RESPONDING")
        nodes.append(SlurmNode(name.group(1), frozenset(flags), _reason(line), raw))
    return nodes


def _reason(line: str) -> str | None:
    match = _REASON_RE.search(line) or _REASON_BARE_RE.search(line)
    if match is None:
        return None
    reason = match.group(1).strip()
    return reason if reason and reason != "(null)" else None


def parse_jobs(text: str) -> list[SlurmJob]:
    """``squeue --format=%i|%u|%S|%N|%j`` output."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 4)
        if len(parts) != 5:
            raise SlurmError(f"squeue: unexpected line {line[:80]!r}")
        job_id, user, start, nodelist, name = (p.strip() for p in parts)
        jobs.append(SlurmJob(job_id, name, user, expand_hostlist(nodelist), _start(start)))
    return jobs


def expand_hostlist(text: str) -> tuple[str, ...]:
    """Slurm's compressed node list (``gpu[01-03,07],cpu1``) as names."""
    text = text.strip()
    if not text or text in ("(null)", "n/a"):
        return ()
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    try:
        return tuple(NodeSet(text))
    except NodeSetException as exc:
        raise SlurmError(f"squeue: bad node list {text[:80]!r}: {exc}") from None


def _start(text: str) -> float | None:
    """squeue's %S (local time, ISO without a zone)."""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, OverflowError):
        return None
