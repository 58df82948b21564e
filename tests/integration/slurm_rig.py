"""A real Slurm on loopback: munged, slurmctld and two ``slurmd -N`` nodes, all in a temp dir.

Used by the Slurm integration tests (fixtures ``slurm_rig`` / ``slurm`` in ``conftest.py``) and by
``tests/fixtures/slurm/record.py``, which records this Slurm's real outputs for the parser tests.
``SlurmRig.start()`` brings up a cluster of nodes ``gpu01`` and ``gpu02`` (partition ``gpu``) and
returns once ``scontrol`` reports both idle; ``rig.env`` (``SLURM_CONF`` set) is what a
subprocess needs to talk to it and ``rig.bin`` holds the client binaries' paths.

Everything is the rig's own: the munge key, socket and seed, the slurm.conf, free ports (never
6817/6818), state, spool, pid and log files. Nothing touches /etc/slurm or /run/munge, so a system
Slurm on the same machine is left alone. Needs root (slurmd runs jobs as their submitter and
``SlurmUser=root``). Each node has one CPU, so one job fills it (state ALLOCATED).

Every process the rig starts, and every job step under it, carries ``UGRO_SLURM_RIG=<temp dir>``
in its environment; ``close()`` kills whatever still carries it (slurmstepd ignores SIGTERM and
outlives its slurmd).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sshd_rig import free_port

NODES = ("gpu01", "gpu02")
PARTITION = "gpu"
CLIENTS = ("scontrol", "sinfo", "squeue", "sbatch", "srun", "scancel")
DAEMONS = {
    "munged": "/usr/sbin/munged",
    "slurmctld": "/usr/sbin/slurmctld",
    "slurmd": "/usr/sbin/slurmd",
}
MARKER = "UGRO_SLURM_RIG"
START_TIMEOUT_S = 60.0  # a loaded 2-core CI machine; it starts in well under a second when idle
COMMAND_TIMEOUT_S = 30.0
# "State=IDLE+DRAIN" anywhere; "Reason=<text> [user@time]" is the last field of `show node -o`.
_STATE = re.compile(r"(?:^| )State=(\S+)")
_REASON = re.compile(r" Reason=(.*?)(?: \[[^\]]*@[^\]]*\])?$")
_NODE_NAME = re.compile(r"^NodeName=(\S+)")


class SlurmRigError(RuntimeError):
    """The rig could not do what was asked; the message carries stderr or the daemons' logs."""


def missing_requirements() -> str | None:
    """Why the rig cannot run here (not root, a binary missing), or None when it can."""
    if os.geteuid() != 0:
        return "the Slurm rig needs root (slurmd runs jobs as their submitter)"
    absent = [
        path for path in [*DAEMONS.values(), "/usr/sbin/mungekey"] if not os.access(path, os.X_OK)
    ]
    absent += [name for name in CLIENTS if shutil.which(name) is None]
    if absent:
        return "Slurm/munge not installed (missing: " + ", ".join(absent) + ")"
    return None


def parse_show_node(text: str) -> dict[str, tuple[set[str], str | None]]:
    """``scontrol show node -o`` lines -> {name: (state flags, reason or None)}."""
    nodes: dict[str, tuple[set[str], str | None]] = {}
    for line in text.splitlines():
        name = _NODE_NAME.match(line)
        state = _STATE.search(line)
        if name is None or state is None:
            continue
        reason = _REASON.search(line)
        flags = set(state.group(1).upper().split("+"))
        nodes[name.group(1)] = (flags, reason.group(1) if reason else None)
    return nodes


class SlurmRig:
    """munged + slurmctld + one slurmd per node on 127.0.0.1, configured under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes = NODES
        self.conf = root / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.socket"
        self.bin = {name: str(shutil.which(name)) for name in CLIENTS}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), MARKER: str(root)}
        self.ports = {"slurmctld": free_port(), "slurmd": free_port()}
        self.ports.update({node: free_port() for node in NODES})
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._closed = False
        self._last = ""  # the last polled command's stdout, or its error

    # -- life cycle -------------------------------------------------------------------------

    @classmethod
    def start(cls) -> SlurmRig:
        """A running rig with both nodes idle; raises SlurmRigError (with log tails) if not."""
        reason = missing_requirements()
        if reason:
            raise SlurmRigError(reason)
        # munged demands a socket directory every user can traverse (mkdtemp makes it 0700).
        root = Path(tempfile.mkdtemp(prefix="ugro-slurm-"))
        root.chmod(0o755)
        rig = cls(root)
        atexit.register(rig.close)
        try:
            rig._write_files()
            rig._start_munged()
            rig.start_controller()
            for node in NODES:
                rig._start_slurmd(node)
            rig.wait_idle()
        except BaseException:
            rig.close()
            raise
        return rig

    def close(self) -> None:
        """Stop every daemon and job of the rig and remove its files (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._alive("slurmctld"):
            with contextlib.suppress(Exception):
                self._scancel_all()
        for name in [*NODES, "slurmctld", "munged"]:
            self._stop(name)
        self._kill_marked()
        shutil.rmtree(self.root, ignore_errors=True)

    def stop_controller(self) -> None:
        """Stop slurmctld (the nodes keep running): client commands then fail as in an outage."""
        self._stop("slurmctld")

    def start_controller(self) -> None:
        """Start slurmctld (again), recovering the state it saved; returns once it answers."""
        self._spawn("slurmctld", [DAEMONS["slurmctld"], "-D", "-f", str(self.conf)])
        self._wait(
            lambda: self._try("scontrol", "ping") and "UP" in self._last, "slurmctld to answer"
        )

    def reset(self) -> None:
        """Back to the start: no jobs, every node resumed and idle, every daemon running."""
        if not self._alive("munged"):
            self._start_munged()
        if not self._alive("slurmctld"):
            self.start_controller()
        for node in NODES:
            if not self._alive(node):
                self._start_slurmd(node)
        self.cancel_all()
        for node, (flags, _reason) in self.show_nodes().items():
            if flags & {"DRAIN", "DOWN", "FAIL"}:
                self.run("scontrol", "update", f"nodename={node}", "state=resume")
        self.wait_idle()

    # -- queries and actions ----------------------------------------------------------------

    def run(
        self, *argv: str, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client (a ``bin`` name or a path) with the rig's env; raise on failure."""
        command = [self.bin.get(argv[0], argv[0]), *argv[1:]]
        try:
            done = subprocess.run(
                command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise SlurmRigError(f"{' '.join(argv)}: no answer within {timeout:g}s") from exc
        if done.returncode != 0:
            # `scontrol show node NOSUCH` says "Node NOSUCH not found" on stdout, not stderr.
            said = done.stderr.strip() or done.stdout.strip()
            raise SlurmRigError(f"{' '.join(argv)}: exit {done.returncode}: {said}")
        return done

    def show_nodes(self) -> dict[str, tuple[set[str], str | None]]:
        """Every node's (state flags, reason) as slurmctld reports them now."""
        return parse_show_node(self.run("scontrol", "show", "node", "-o").stdout)

    def node_state(self, name: str) -> tuple[set[str], str | None]:
        """(state flags such as {"IDLE", "DRAIN"}, drain reason without its [user@time] or None)."""
        nodes = parse_show_node(self.run("scontrol", "show", "node", "-o", name).stdout)
        if name not in nodes:
            raise SlurmRigError(f"scontrol show node {name}: no such node in its output")
        return nodes[name]

    def admin_drain(self, name: str, reason: str) -> None:
        """Drain ``name`` as an administrator would, with ``reason`` verbatim."""
        self.run("scontrol", "update", f"nodename={name}", "state=drain", f"reason={reason}")

    def submit(self, node: str, seconds: float = 600, *, nnodes: int = 1) -> int:
        """``sbatch -w NODE --wrap 'sleep N'``; ``node`` may be a host list with ``nnodes`` > 1."""
        done = self.run(
            "sbatch", "--parsable", "-N", str(nnodes), "-w", node, "-J", "ugro-rig",
            "-o", str(self.root / "jobs" / "slurm-%j.out"), "--wrap", f"sleep {seconds:g}",
        )  # fmt: skip
        return int(done.stdout.strip().split(";")[0])

    def wait_running(self, jobid: int, timeout: float = START_TIMEOUT_S) -> str:
        """Wait until job ``jobid`` is RUNNING; returns its node list (e.g. ``gpu[01-02]``)."""
        fmt = ("-h", "-j", str(jobid), "-o", "%T|%N")

        def running() -> bool:
            if not self._try("squeue", *fmt):
                return False
            if not self._last:  # squeue forgets a job that ended (MinJobAge) or never existed
                raise SlurmRigError(f"job {jobid} left the queue without running")
            return self._last.startswith("RUNNING|")

        self._wait(running, f"job {jobid} to run", timeout)
        return self._last.split("|", 1)[1]

    def cancel_all(self) -> None:
        """Cancel every job and wait until the queue is empty (completing jobs included)."""
        self._scancel_all()
        self._wait(
            lambda: self._try("squeue", "-h", "-o", "%i") and not self._last, "the queue to empty"
        )

    def wait_idle(self, nodes: tuple[str, ...] = NODES, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until ``nodes`` are plain IDLE (no DRAIN, DOWN, COMPLETING, ... flag)."""

        def idle() -> bool:
            if not self._try("scontrol", "show", "node", "-o"):
                return False
            states = parse_show_node(self._last)
            return all(states.get(node, (set(), None))[0] == {"IDLE"} for node in nodes)

        self._wait(idle, f"{','.join(nodes)} idle", timeout)

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of every daemon log, for error messages."""
        parts = []
        for log in sorted([*self.root.glob("*.log"), *self.root.glob("*.stderr")]):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- internals --------------------------------------------------------------------------

    def _write_files(self) -> None:
        for sub in ("munge", "state", "spool", "jobs", *(f"spool/{node}" for node in NODES)):
            (self.root / sub).mkdir(mode=0o755)
        key = self.root / "munge" / "munge.key"
        subprocess.run(
            ["/usr/sbin/mungekey", "-c", "-k", str(key)], check=True, capture_output=True
        )
        key.chmod(0o400)
        (self.root / "plugstack.conf").write_text("")
        self.conf.write_text(self._slurm_conf())

    def _slurm_conf(self) -> str:
        root = self.root
        node_lines = [
            f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 Port={self.ports[node]}"
            " CPUs=1 RealMemory=100 State=UNKNOWN"
            for node in NODES
        ]
        settings = {
            "ClusterName": "ugrorig",
            "SlurmctldHost": "localhost(127.0.0.1)",
            "SlurmctldPort": self.ports["slurmctld"],
            "SlurmdPort": self.ports["slurmd"],
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "CredType": "cred/munge",
            "StateSaveLocation": root / "state",
            "SlurmdSpoolDir": root / "spool" / "%n",  # %n: one spool per slurmd
            "SlurmctldPidFile": root / "slurmctld.pid",
            "SlurmdPidFile": root / "slurmd-%n.pid",
            "SlurmctldLogFile": root / "slurmctld.log",
            "SlurmdLogFile": root / "slurmd-%n.log",
            "PlugStackConfig": root / "plugstack.conf",  # empty: no system SPANK plugins
            "ProctrackType": "proctrack/linuxproc",  # no cgroups in containers
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "SwitchType": "switch/none",
            "MpiDefault": "none",
            "SelectType": "select/linear",  # a job takes its whole (one-CPU) node
            # 1, not 2: with 2 a node an admin set DOWN under a job is back IDLE (reason cleared) within
            # milliseconds ("node_did_resp: node gpu02 returned to service"); with 1 only a node
            # that was DOWN for not responding comes back when its slurmd answers.
            "ReturnToService": 1,
            "SchedulerType": "sched/backfill",
            "SchedulerParameters": "sched_interval=1,bf_interval=1",
            "SlurmctldTimeout": 30,
            "SlurmdTimeout": 30,
            "MessageTimeout": 10,
            "InactiveLimit": 0,
            "KillWait": 1,  # cancelled `sleep` jobs end at once
            "MinJobAge": 2,
        }
        lines = [f"{key}={value}" for key, value in settings.items()]
        lines += node_lines
        lines.append(
            f"PartitionName={PARTITION} Nodes=gpu[01-02] Default=YES MaxTime=INFINITE State=UP"
        )
        return "\n".join(lines) + "\n"

    def _start_munged(self) -> None:
        munge = self.root / "munge"
        self._spawn(
            "munged",
            [
                DAEMONS["munged"], "--foreground", f"--socket={self.munge_socket}",
                f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={self.root / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}",
            ],
        )  # fmt: skip
        self._wait(self.munge_socket.exists, "munged's socket")

    def _start_slurmd(self, node: str) -> None:
        self._spawn(node, [DAEMONS["slurmd"], "-D", "-f", str(self.conf), "-N", node])

    def _spawn(self, name: str, argv: list[str]) -> None:
        with (self.root / f"{name}.stderr").open("ab") as err:
            self._procs[name] = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,  # a Ctrl-C in pytest's terminal is not theirs
            )

    def _alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _stop(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def _scancel_all(self) -> None:
        jobs = self.run("squeue", "-h", "-o", "%i").stdout.split()
        if jobs:
            self.run("scancel", *jobs)

    def _kill_marked(self) -> None:
        """SIGKILL leftovers of this rig: slurmstepd and job processes carry its marker."""
        needle = f"{MARKER}={self.root}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if needle in environ:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)

    def _try(self, *argv: str) -> bool:
        """Run a client without raising; its stdout (or stderr) is left in ``_last``."""
        try:
            self._last = self.run(*argv, timeout=10).stdout.strip()
            return True
        except SlurmRigError as exc:
            self._last = str(exc)
            return False

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmRigError(
                        f"{name} exited {proc.returncode} waiting for {what}\n{self.log_tails()}"
                    )
            if time.monotonic() > deadline:
                raise SlurmRigError(
                    f"no {what} within {timeout:g}s (last: {self._last})\n{self.log_tails()}"
                )
            time.sleep(0.2)
