"""Cluster state: ``<state dir>/state.json``, what ``status`` reads without touching history.

Standard library only (and ``_fs``, ``model.as_float``). One JSON document::

    {"v": 1, "updated_at": <epoch>,
     "nodes": {name: {"status", "score", "reachable", "error", "error_kind", "alerts",
                      "polled_at", "last_seen", "metrics", "gpus", "summary", "breaker", ...}},
     "jobs": {name: {...}}, "silences": {id: {...}}}

Each node's ``lifecycle`` holds its alerts' lifecycle records (``engine.lifecycle``); the
``silences`` are those of ``ugro-health silence``.

Every change is a read-modify-write under ``flock`` on ``state.lock`` and lands with an atomic
replace (temporary file 0600 in the same directory, fsync, ``os.replace``, fsync of the
directory): concurrent ``check`` from cron, ``watch`` and ``jobs start`` lose nothing, and a crash
leaves either the old or the new file. Readers take no lock and do not rewrite the file
(``status`` run by another user must not take it over). A corrupt or foreign ``state.json`` is
set aside as ``state.json.corrupt-<time>`` (the one thing a reader does, under the lock) and
reported, never fatal; a valid file with some damaged records (a wrong type in any field,
``state_check``) keeps its good records: readers ignore the damaged ones, and the next writer
keeps a copy of the file as ``state.json.corrupt-<time>`` and writes it without them.

A job past its ``ttl_s`` is finished for everyone: every load marks it finished in memory (reason
``ttl``, at the moment its TTL ran out) and the next update persists that, so ``jobs list``,
``jobs start``, ``check`` and ``watch`` agree whoever looks first.
"""

from __future__ import annotations

import json
import os
import reprlib
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ugro_health.model import as_float
from ugro_health.store._fs import (
    LOCK_TIMEOUT_S,
    StoreError,
    ensure_private_dir,
    exclusive_lock,
    open_private,
    replace_atomically,
    write_all,
)
from ugro_health.store.state_check import drop_damaged, dropped_line

STATE_VERSION = 1
STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
DAMAGED_PREFIX = "state: "  # a reader's warning about damaged records (a writer repairs them)
# Per-GPU fields kept in state.json: enough for `status`, a fraction of the full sample.
GPU_FIELDS = ("index", "name", "util_pct", "mem_pct", "temp_c", "power_w")
_NODE_FIELDS = ("status", "score", "reachable", "error", "error_kind", "alerts", "metrics")


def empty_state() -> dict[str, Any]:
    return {"v": STATE_VERSION, "updated_at": None, "nodes": {}, "jobs": {}, "silences": {}}


class Loaded(NamedTuple):
    state: dict[str, Any]
    warning: str | None  # one line, e.g. the corrupt file was set aside


class StateStore:
    def __init__(
        self,
        directory: Path,
        clock: Callable[[], float] = time.time,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self.clock = clock
        self.lock_timeout_s = lock_timeout_s
        self.last_warning: str | None = None  # what the last update() found (and repaired)

    def load(self, strict: bool = False) -> Loaded:
        """The current state; missing -> empty, corrupt -> empty plus a warning.

        Never raises, unless ``strict``: then a state that exists but cannot be read (another
        user's 0600 file) raises ``StoreError``, for a reader whose whole answer is the state.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Loaded(empty_state(), None)
        except OSError as exc:
            if strict:
                raise StoreError.from_os("state not read", exc, self.path) from None
            return Loaded(empty_state(), f"state not read: {exc.strerror} ({self.path})")
        state, problem, dropped = _parse(raw)
        if problem is None:
            # A reader keeps the good records and says what it ignored; the next writer keeps a
            # copy of the file and writes it without the damaged ones.
            loaded = self._with_ttl_expired(state)
            if dropped:
                return Loaded(loaded.state, self._damaged(dropped))
            return loaded
        try:  # set it aside under the lock, unless a writer has replaced it meanwhile
            with exclusive_lock(self.directory / LOCK_FILE, self.lock_timeout_s):
                return self._quarantine_locked(problem)
        except OSError:
            return Loaded(empty_state(), f"state ignored: {problem} ({self.path})")

    def update(self, fn: Callable[[dict[str, Any]], None]) -> Loaded:
        """Lock, load, apply ``fn`` (mutating the state in place), write atomically.

        Raises ``StoreError`` (one line) if the state cannot be written; the old file stays.
        """
        self.last_warning = None
        try:
            ensure_private_dir(self.directory)
            with exclusive_lock(self.directory / LOCK_FILE, self.lock_timeout_s):
                state, warning = self._load_locked()
                self.last_warning = warning
                fn(state)
                state["v"] = STATE_VERSION
                state["updated_at"] = self.clock()
                self._write_locked(state)
        except OSError as exc:
            raise StoreError.from_os("state not saved", exc, self.path) from None
        return Loaded(state, warning)

    def record_cycle(
        self,
        records: Iterable[Mapping[str, Any]],
        now: float | None = None,
        also: Callable[[dict[str, Any]], None] | None = None,
    ) -> Loaded:
        """Merge one poll's records (history records or ``NodeReport.to_json()`` documents).

        Only the sample's fields are replaced: ``breaker``, ``jobs`` and any other key written
        by other modules stay as they are. ``last_seen`` moves only when the node answered.
        ``also`` changes the same state in the same write (``watch``: the breakers).
        """
        records = list(records)

        def merge(state: dict[str, Any]) -> None:
            nodes = state.setdefault("nodes", {})
            for record in records:
                name = str(record.get("node") or record.get("name"))
                entry = nodes.setdefault(name, {})
                merge_node(entry, record, now)
            if also is not None:
                also(state)

        return self.update(merge)

    # -- internals ---------------------------------------------------------------------------

    def _with_ttl_expired(self, state: dict[str, Any]) -> Loaded:
        """``state`` with its jobs past their TTL finished: in memory only (every reader
        finishes them alike; the next update writes it)."""
        expire_ttl_jobs(state, self.clock())
        return Loaded(state, None)

    def _load_locked(self) -> Loaded:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Loaded(empty_state(), None)
        state, problem, dropped = _parse(raw)
        if problem is not None:
            return self._quarantine_locked(problem)
        expire_ttl_jobs(state, self.clock())
        if not dropped:
            return Loaded(state, None)
        aside = self._aside_path()
        fd = open_private(aside, os.O_WRONLY | os.O_TRUNC)
        try:
            write_all(fd, raw)
        except OSError:
            aside.unlink()  # a full disk: no half copy; the update fails, the file stays
            raise
        finally:
            os.close(fd)
        return Loaded(state, f"state repaired: {dropped_line(dropped)}; original kept as {aside}")

    def _damaged(self, dropped: list[str]) -> str:
        return f"{DAMAGED_PREFIX}{dropped_line(dropped)} ({self.path})"

    def _aside_path(self) -> Path:
        return self.path.with_name(f"{STATE_FILE}.corrupt-{int(self.clock())}")

    def _quarantine_locked(self, problem: str) -> Loaded:
        """Set a bad state.json aside (we hold the lock) and start from an empty state."""
        try:
            state, again, dropped = _parse(self.path.read_bytes())
        except FileNotFoundError:
            return Loaded(empty_state(), None)
        if again is None:  # a writer replaced it while we waited for the lock
            expire_ttl_jobs(state, self.clock())
            warning = self._damaged(dropped) if dropped else None
            return Loaded(state, warning)
        aside = self._aside_path()
        os.replace(self.path, aside)
        return Loaded(empty_state(), f"state reset: state.json was {again}; kept as {aside}")

    def _write_locked(self, state: Mapping[str, Any]) -> None:
        data = json.dumps(state, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        self._remove_orphans_locked()
        replace_atomically(self.path, data)
        _fsync_dir(self.directory)

    def _remove_orphans_locked(self) -> None:
        """Temporary files of writers killed between their write and their replace.

        A writer makes its temporary file only while it holds the lock, which we hold now:
        any such file left is an orphan, whatever its pid.
        """
        for orphan in self.directory.glob(f".{STATE_FILE}.*.tmp"):
            try:
                orphan.unlink()
            except OSError:
                pass  # a directory by that name, or gone: never a reason to fail the write


def ttl_deadline(job: Mapping[str, Any]) -> float | None:
    """When an active job's TTL runs out; None for a finished job or one without a TTL."""
    if job.get("finished_at") is not None:
        return None
    ttl, started = as_float(job.get("ttl_s")), as_float(job.get("started_at"))
    if ttl is None or started is None:
        return None
    return started + ttl


def expire_ttl_jobs(state: dict[str, Any], now: float) -> list[str]:
    """Mark finished (reason ``ttl``) every active job whose TTL ran out by ``now``, in place.

    The finish time is the moment the TTL ran out, not ``now``: whoever looks first, every
    reader sees the same job. Returns the names of the jobs it finished.
    """
    expired = []
    for name, job in (state.get("jobs") or {}).items():
        deadline = ttl_deadline(job) if isinstance(job, dict) else None
        if deadline is not None and now >= deadline:
            job["finished_at"] = deadline
            job["finish_reason"] = "ttl"
            expired.append(name)
    return expired


def merge_node(entry: dict[str, Any], record: Mapping[str, Any], now: float | None = None) -> None:
    """Update one node's state ``entry`` in place from a record of the latest poll."""
    polled_at = record.get("t", record.get("polled_at", now))
    for key in _NODE_FIELDS:
        entry[key] = record.get(key)
    entry["polled_at"] = polled_at
    gpus = [g for g in record.get("gpus") or () if isinstance(g, Mapping)]
    entry["gpus"] = [{k: g.get(k) for k in GPU_FIELDS} for g in gpus]
    if record.get("summary") is not None:
        entry["summary"] = record["summary"]
    if record.get("reachable"):
        entry["last_seen"] = polled_at
    else:
        entry.setdefault("last_seen", None)


def _parse(raw: bytes) -> tuple[dict[str, Any], str | None, list[str]]:
    """(state, why the whole file is unusable or None, the damaged records dropped from it)."""
    try:
        state = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return empty_state(), f"not valid JSON ({exc.__class__.__name__})", []
    if not isinstance(state, dict):
        return empty_state(), "not a JSON object", []
    if state.get("v") != STATE_VERSION or isinstance(state.get("v"), bool):
        return empty_state(), f"unknown version {reprlib.repr(state.get('v'))}", []
    if not all(isinstance(state.get(k, {}), dict) for k in ("nodes", "jobs", "silences")):
        return empty_state(), "malformed nodes, jobs or silences", []
    state.setdefault("nodes", {})
    state.setdefault("jobs", {})
    state.setdefault("silences", {})
    return state, None, drop_damaged(state)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the replace itself is done
    finally:
        os.close(fd)
