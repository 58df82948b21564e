"""Training-job activity: register, finish, expire, and check a job's rank processes.

Jobs live in the state store's ``jobs`` section, changed only through ``StateStore.update`` (a
locked read-modify-write), so a launcher, cron and a running ``watch`` can all change them at
once without losing an update. Job activity drives ``watch``'s adaptive polling; the probe
reports processes matching each job's pattern, which ``rank_alerts`` compares with the expected
ranks per node.

A job past its TTL is finished for every reader: the state store finishes it on load and on
update (``store.state.expire_ttl_jobs``), and ``rank_alerts`` never counts one whose TTL ran out
by the sample's time, even in a list loaded before that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ugro_health.config import NODE_NAME_RE
from ugro_health.model import MAX_DURATION_S, Alert, NodeSample, Severity, as_float

FINISHED_KEEP_S = 24 * 3600.0  # how long finished jobs stay listed
DEFAULT_GRACE_S = 300.0  # processes gone from every node this long => the job is over


class JobError(Exception):
    """A job request that cannot be done; ``str()`` is one line for the user.

    Example::

        try:
            monitor.start_job("llama", ["gpu9"])
        except ugro_health.JobError as exc:
            print(exc)  # unknown node ...
    """


class StateUpdater(Protocol):
    def update(self, fn: Any) -> Any: ...

    def load(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    nodes: tuple[str, ...]
    started_at: float
    ranks: int | None = None  # expected matching processes per node
    match: str | None = None  # regex for the rank processes; None: the configured defaults
    ttl_s: float | None = None
    finished_at: float | None = None
    finish_reason: str | None = None  # finished | ttl | processes_gone
    procs_seen_at: float | None = None  # last time a matching process was seen on any node
    source: str = "ugro"  # "ugro": registered (jobs start, track_job); "slurm": read from squeue

    @property
    def active(self) -> bool:
        return self.finished_at is None

    @property
    def expires_at(self) -> float | None:
        """When the TTL runs out (None: no TTL)."""
        return None if self.ttl_s is None else self.started_at + self.ttl_s

    def over_by(self, now: float) -> bool:
        """Finished, or past its TTL at ``now``."""
        return not self.active or (self.expires_at is not None and now >= self.expires_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodes": list(self.nodes),
            "started_at": self.started_at,
            "ranks": self.ranks,
            "match": self.match,
            "ttl_s": self.ttl_s,
            "finished_at": self.finished_at,
            "finish_reason": self.finish_reason,
            "procs_seen_at": self.procs_seen_at,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        return cls(
            name=str(data["name"]),
            nodes=tuple(str(n) for n in data.get("nodes") or ()),
            started_at=float(data.get("started_at") or 0.0),
            ranks=data.get("ranks") if isinstance(data.get("ranks"), int) else None,
            match=data.get("match") if isinstance(data.get("match"), str) else None,
            ttl_s=as_float(data.get("ttl_s")),
            finished_at=as_float(data.get("finished_at")),
            finish_reason=data.get("finish_reason"),
            procs_seen_at=as_float(data.get("procs_seen_at")),
            source="slurm" if data.get("source") == "slurm" else "ugro",
        )


def jobs_of(state: Mapping[str, Any]) -> list[Job]:
    """Every job in a loaded state document, skipping entries too damaged to read."""
    out = []
    for data in (state.get("jobs") or {}).values():
        try:
            out.append(Job.from_json(data))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def active_jobs(state: Mapping[str, Any]) -> list[Job]:
    return [job for job in jobs_of(state) if job.active]


def last_activity(state: Mapping[str, Any]) -> float | None:
    """When a job last started or finished (None: never); drives the polling interval."""
    times = [t for job in jobs_of(state) for t in (job.started_at, job.finished_at) if t]
    return max(times) if times else None


def start_job(
    store: StateUpdater,
    name: str,
    nodes: Sequence[str],
    now: float,
    known_nodes: Iterable[str],
    ranks: int | None = None,
    match: str | None = None,
    ttl_s: float | None = None,
) -> Job:
    """Register an active job; raises ``JobError`` for a bad name, node, pattern or a clash.

    A node named twice counts once. A job of the same name that finished (or whose TTL ran out:
    the store finishes it as it loads) is replaced."""
    nodes = list(dict.fromkeys(nodes))
    _validate(name, nodes, known_nodes, ranks, match)
    if ttl_s is not None and not (0 < ttl_s <= MAX_DURATION_S):  # NaN fails this too
        raise JobError(f"the TTL must be more than 0 and at most 10 years, not {ttl_s}")
    job = Job(name=name, nodes=tuple(nodes), started_at=now, ranks=ranks, match=match, ttl_s=ttl_s)

    def apply(state: dict[str, Any]) -> None:
        jobs = state.setdefault("jobs", {})
        existing = jobs.get(name)
        if existing is not None and existing.get("finished_at") is None:
            raise JobError(f"job {name!r} is already active (finish it first)")
        jobs[name] = job.to_json()
        _prune(jobs, now)

    store.update(apply)
    return job


def finish_job(store: StateUpdater, name: str, now: float, reason: str = "finished") -> Job:
    """Mark an active job finished; raises ``JobError`` when there is no such active job.

    A job its TTL already finished is returned as it is: the launcher that ends it late (its
    ``jobs finish`` after a long run) has done nothing wrong, and must not fail its script.
    """
    finished: list[Job] = []

    def apply(state: dict[str, Any]) -> None:
        jobs = state.setdefault("jobs", {})
        data = jobs.get(name)
        if data is not None and data.get("finish_reason") == "ttl":
            finished.append(Job.from_json(data))
            return
        if data is None or data.get("finished_at") is not None:
            active = ", ".join(sorted(n for n, j in jobs.items() if j.get("finished_at") is None))
            raise JobError(f"no active job {name!r} (active: {active or 'none'})")
        data["finished_at"] = now
        data["finish_reason"] = reason
        finished.append(Job.from_json(data))

    store.update(apply)
    return finished[0]


def _validate(
    name: str,
    nodes: Sequence[str],
    known_nodes: Iterable[str],
    ranks: int | None,
    match: str | None,
) -> None:
    if not NODE_NAME_RE.match(name):
        raise JobError(f"invalid job name {name!r}: use letters, digits, '.', '_' and '-'")
    if not nodes:
        raise JobError("a job needs at least one node (--nodes A,B)")
    known = set(known_nodes)
    unknown = [n for n in nodes if n not in known]
    if unknown:
        raise JobError(
            f"unknown node(s) {', '.join(unknown)} (configured: {', '.join(sorted(known)[:8])})"
        )
    if ranks is not None and ranks < 1:
        raise JobError("--ranks must be 1 or more")
    if match is not None:
        try:
            re.compile(match)
        except re.error as exc:
            raise JobError(f"invalid --match pattern {match!r}: {exc}") from None


def _prune(jobs: dict[str, Any], now: float) -> None:
    for name in [
        n for n, j in jobs.items() if (j.get("finished_at") or now) < now - FINISHED_KEEP_S
    ]:
        del jobs[name]


def expire_jobs(
    store: StateUpdater,
    now: float,
    procs_by_node: Mapping[str, Mapping[str, int]],
    grace_s: float = DEFAULT_GRACE_S,
) -> list[Job]:
    """Finish jobs whose TTL passed or whose processes are gone from all nodes for ``grace_s``.

    ``procs_by_node`` maps each node polled this cycle to its matched-process count per pattern;
    a job none of whose nodes was polled keeps its last sighting.
    """
    expired: list[Job] = []

    def apply(state: dict[str, Any]) -> None:
        for data in (state.get("jobs") or {}).values():
            if data.get("finished_at") is not None:
                continue
            job = Job.from_json(data)
            seen = _seen_now(job, procs_by_node)
            if seen:
                data["procs_seen_at"] = now
                job = Job.from_json(data)
            reason = _expiry_reason(job, now, grace_s)
            if reason:
                # A TTL ends at its moment, as the store's own expiry has it.
                data["finished_at"] = job.expires_at if reason == "ttl" else now
                data["finish_reason"] = reason
                expired.append(Job.from_json(data))

    store.update(apply)
    return expired


def _seen_now(job: Job, procs_by_node: Mapping[str, Mapping[str, int]]) -> bool:
    return any(_count_for(job, procs_by_node.get(node) or {}) > 0 for node in job.nodes)


def _expiry_reason(job: Job, now: float, grace_s: float) -> str | None:
    if job.over_by(now):
        return "ttl"
    last = job.procs_seen_at if job.procs_seen_at is not None else job.started_at
    if now - last >= grace_s:
        return "processes_gone"
    return None


def _count_for(job: Job, counts: Mapping[str, int]) -> int:
    if job.match is not None:
        return counts.get(job.match, 0)
    return counts.get("*", 0)


def _matched_by_key(sample: NodeSample, jobs: Sequence[Job]) -> dict[str, list[Mapping[str, Any]]]:
    """Matched processes per job pattern (``"*"``: any default pattern)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    own = {job.match for job in jobs if job.match is not None}
    for proc in sample.matched_processes:
        pattern = proc.get("pattern")
        groups.setdefault(pattern if pattern in own else "*", []).append(proc)
    return groups


def matched_counts(sample: NodeSample, jobs: Sequence[Job]) -> dict[str, int]:
    """Rank processes per job pattern (``"*"``: any default pattern) in ``sample``."""
    return {
        key: len(rank_processes(sample, procs))
        for key, procs in _matched_by_key(sample, jobs).items()
    }


def _pid(proc: Mapping[str, Any], key: str = "pid") -> int | None:
    value = proc.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def rank_processes(
    sample: NodeSample, matched: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The ranks among ``matched`` and the processes below them, one per worker.

    Matched processes nested in another matched one (an ``exec -a torchrun`` wrapper around
    the real launcher) are one launcher tree. In each tree the ranks are the processes using
    a GPU, when any does; else the innermost matched processes when there are several (workers
    whose arguments match too, their DataLoader children left out); else the children of the
    one innermost matched process (torchrun's agent is not a rank, its workers are), or that
    process itself when it started none (a pattern that names the ranks)."""
    procs = {pid: p for p in (*matched, *sample.matched_descendants) if (pid := _pid(p))}
    wanted = {pid for p in matched if (pid := _pid(p)) is not None}
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        ppid = _pid(proc, "ppid")
        if ppid is not None and ppid in procs and ppid != pid:
            children.setdefault(ppid, []).append(pid)
    on_gpu = {p.pid for gpu in sample.gpus for p in gpu.processes}
    ranks: list[int] = []
    for root in sorted(wanted - {c for pid in wanted for c in _below(pid, children)}):
        tree = [root, *_below(root, children)]
        using_gpu = sorted(pid for pid in tree if pid in on_gpu)
        if using_gpu:
            ranks.extend(using_gpu)
            continue
        inner = [p for p in tree if p in wanted and not wanted.intersection(_below(p, children))]
        if len(inner) > 1:  # workers whose own command lines match, below their launcher
            ranks.extend(sorted(inner))
        else:  # the launcher: its workers, or itself when it started none
            ranks.extend(sorted(children.get(inner[0], ())) or inner)
    return [procs[pid] for pid in dict.fromkeys(ranks)]


def _below(pid: int, children: Mapping[int, list[int]]) -> list[int]:
    out: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        if child not in out and child != pid:  # a pid cycle in a damaged answer ends here
            out.append(child)
            todo.extend(children.get(child, ()))
    return out


def job_ranks(node: str, sample: NodeSample, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """For ``--json`` and the dashboard: per job on ``node``, the rank processes found and the
    matched launchers that are not ranks themselves."""
    groups = _matched_by_key(sample, jobs)
    out = []
    for job in jobs:
        if node not in job.nodes or not job.active:
            continue
        matched = groups.get(job.match if job.match is not None else "*", [])
        ranks = rank_processes(sample, matched)
        rank_pids = {_pid(p) for p in ranks}
        out.append(
            {
                "job": job.name,
                "ranks_expected": job.ranks,
                "ranks_seen": len(ranks),
                "ranks": [_brief(p) for p in ranks],
                "launchers": [_brief(p) for p in matched if _pid(p) not in rank_pids],
            }
        )
    return out


def _brief(proc: Mapping[str, Any]) -> dict[str, Any]:
    return {"pid": proc.get("pid"), "ppid": proc.get("ppid"), "cmdline": proc.get("cmdline")}


def patterns_for(node: str, jobs: Sequence[Job], defaults: Sequence[str]) -> list[str]:
    """The process patterns the probe should match on ``node`` (empty: no job there)."""
    patterns: list[str] = []
    for job in jobs:
        if node in job.nodes:
            wanted = [job.match] if job.match is not None else list(defaults)
            patterns.extend(p for p in wanted if p not in patterns)
    return patterns


def rank_alerts(node: str, sample: NodeSample, jobs: Sequence[Job]) -> list[Alert]:
    """WARNING for each job on ``node`` with fewer matching processes than its ranks.

    A job finished, or past its TTL when the sample was taken, expects nothing any more."""
    alerts = []
    counts = matched_counts(sample, jobs)
    for job in jobs:
        if node not in job.nodes or job.ranks is None:
            continue
        if not job.active or (sample.time is not None and job.over_by(sample.time)):
            continue
        seen = _count_for(job, counts)
        if seen < job.ranks:
            alerts.append(
                Alert(
                    Severity.WARNING,
                    "job_ranks_low",
                    f"job {job.name}: {seen} of {job.ranks} rank processes running",
                    seen,
                    subject=job.name,
                )
            )
    return alerts
