"""The open-file limit: raise the soft ``RLIMIT_NOFILE`` when the node count needs it.

Standard library only. Measured (``benchmarks/bench_open_files.py``, ``docs/benchmarks.md``):
a node costs one descriptor, its SSH socket, in ``watch`` (the persistent session stays open)
and in ``check`` while its poll runs (so ``check`` holds at most ``ssh.max_workers`` at once);
the rest is a handful (standard streams, the metrics server's socket, a store file while it is
written). The estimate budgets above that::

    needed = connections + busy + BASE
    busy = min(nodes, workers), workers the fan-out pool: ssh.max_workers (watch: at least
           min(nodes, 256), its size in engine.collect)
    connections = nodes (watch) or busy (check)

``busy``: a connection being set up also reads its key, known_hosts and ssh_config files
(one at a time); ``BASE`` (64): the store and its locks, the notify outbox and its HTTP, SMTP
or exec deliveries, metrics scrapes in flight, Slurm's commands, a ProxyCommand's pipes.

When ``needed`` exceeds the soft limit, the soft limit is raised to ``2 x needed`` (headroom for
jump hosts and scrapes; raising the soft limit costs nothing) or to the hard limit, whichever is
lower. When even the hard limit is below ``needed``: one warning with about how many nodes fit
(the limit less ``IN_USE``: the 4 descriptors measured besides the connections, with a margin)
and the fix (``ulimit -n``, systemd's ``LimitNOFILE=``), and the run goes on: a node whose
socket cannot be opened is a CRITICAL report with ``Too many open files`` in its error
(``explain`` adds the fix to it), never a crash.

Where: ``engine.runs``, which ``check``, ``watch`` and the Python API's ``check()`` and
``HealthMonitor`` all go through, before the first connection.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

BASE = 64
IN_USE = 16  # descriptors a run measured to hold besides its connections (4), with a margin
HEADROOM = 2  # the soft limit is raised to this many times the estimate, when the hard allows
# How a socket that could not be opened reads in a node's error (EMFILE, ENFILE).
EXHAUSTED = (os.strerror(errno.EMFILE), os.strerror(errno.ENFILE))
FIX = "raise it with `ulimit -n` (systemd: LimitNOFILE=)"


@dataclass(frozen=True, slots=True)
class Limit:
    """What ``ensure`` found and did: the soft limit before and after, the hard limit, and
    the descriptors the run needs by the estimate."""

    needed: int
    soft_before: int
    soft: int
    hard: int

    @property
    def raised(self) -> bool:
        return self.soft > self.soft_before

    @property
    def enough(self) -> bool:
        return self.soft >= self.needed


def needed(nodes: int, workers: int, persistent: bool) -> int:
    """Descriptors a run over ``nodes`` nodes needs, by the formula above."""
    busy = min(nodes, workers)
    return (nodes if persistent else busy) + busy + BASE


def connections_fitting(limit: int) -> int:
    """About how many connections a soft limit of ``limit`` holds open at once: by what a run
    measured to use besides them (``IN_USE``), not by the budget."""
    return max(0, limit - IN_USE)


def ensure(nodes: int, workers: int, persistent: bool) -> Limit | None:
    """Raise the soft ``RLIMIT_NOFILE`` when ``needed`` exceeds it; None where there is no
    such limit (not a POSIX system) or it cannot be read."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    want = needed(nodes, workers, persistent)
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft >= want:
        return Limit(want, soft, soft, hard)
    target = HEADROOM * want if hard == resource.RLIM_INFINITY else min(hard, HEADROOM * want)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        # macOS refuses more than OPEN_MAX with RLIM_INFINITY as the hard limit: try that.
        target = min(target, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else soft)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, soft), hard))
        except (OSError, ValueError):
            return Limit(want, soft, soft, hard)
    return Limit(want, soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)


def warning(limit: Limit, nodes: int, workers: int, persistent: bool) -> str | None:
    """The one line for a limit still too low, or None."""
    if limit.enough:
        return None
    fits = connections_fitting(limit.soft)
    wanted = nodes if persistent else min(nodes, workers)
    what = "nodes" if persistent else "parallel connections"
    if fits >= wanted:
        fit = f"the {wanted} {what} fit with little to spare, a reconnect or a scrape may not"
    else:
        fit = f"about {fits} of the {wanted} {what} fit, the others fail with 'Too many open files'"
    return (
        f"open-file limit {limit.soft} (hard {limit.hard}) is below the {limit.needed} "
        f"descriptors {nodes} nodes need: {fit}; {FIX}"
    )


def explain(message: str) -> str:
    """A node's error with the fix added when its socket could not be opened for want of
    descriptors."""
    if any(text in message for text in EXHAUSTED) and FIX not in message:
        return f"{message} (the open-file limit: {FIX})"
    return message
