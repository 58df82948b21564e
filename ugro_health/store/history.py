"""The history store: JSON lines under ``<state dir>/history/``, one line per node sample.

Imports ``model`` and the standard library only. Layout and guarantees:

- Hourly segments named by the record's UTC time, ``history/20250131T14.jsonl``: retention
  deletes whole files (listdir + stat, never a rewrite) and ``--since 1h`` opens two files.
  Their age is judged against a reference time that a wall-clock step cannot push forward,
  and the segments being written are never dropped (``retention.py``).
- A line is ``{"v":1,"t":<epoch>,"node":<name>,"summary":{...},<NodeReport.to_json() fields but
  "name">}``. ``summary`` (status, reachability, every metric of ``summary.METRICS``, alert
  codes) comes first so that ``iter_points`` can decode a few hundred bytes instead of the line.
- ``append`` writes one poll cycle with a single ``os.write`` on an O_APPEND descriptor while
  holding ``flock`` on ``history/.lock``: concurrent writers (cron ``check`` + ``watch``) never
  interleave. A torn tail left by a killed writer gets a newline before the next record, and a
  failed write (ENOSPC) is truncated back, so the store only ever holds whole lines plus at
  most one torn line per crash, which readers skip and count.
- Appends are not fsync'd: a crash of the machine may lose the last seconds of history, which
  readers tolerate; an fsync per cycle would cost milliseconds and flash wear. ``state.json``,
  which ``status`` relies on, is fsync'd (see ``state.py``).
"""

from __future__ import annotations

import calendar
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ugro_health.model import NodeReport
from ugro_health.store._fs import (
    LOCK_TIMEOUT_S,
    StoreError,
    ensure_private_dir,
    exclusive_lock,
    open_private,
    write_all,
)
from ugro_health.store.history_read import SCHEMA_VERSION, ReadStats, read_segment
from ugro_health.store.retention import Elapsed, boot_clock, reference_time, segments_to_drop
from ugro_health.store.summary import summary_of

SEGMENT_S = 3600
DEFAULT_RETENTION_S = 86400.0
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
RETENTION_EVERY_S = 60.0  # how often one writer re-checks retention between new segments
_SEGMENT_RE = re.compile(r"^(\d{8}T\d{2})\.jsonl$")
_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def record_from_json(report: Mapping[str, Any], t: float | None = None) -> dict[str, Any]:
    """A history record from a ``NodeReport.to_json()`` document (``t`` defaults to polled_at)."""
    record: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "t": float(report["polled_at"] if t is None else t),
        "node": str(report["name"]),
        "summary": summary_of(report),
    }
    for key, value in report.items():
        if key not in record and key != "name":
            record[key] = value
    return record


def record_from_report(report: NodeReport, t: float | None = None) -> dict[str, Any]:
    return record_from_json(report.to_json(), t)


def segment_name(t: float) -> str:
    return time.strftime("%Y%m%dT%H", time.gmtime(t)) + ".jsonl"


def segment_start(name: str) -> float | None:
    """The UTC epoch at which segment ``name`` begins, or None if it is not a segment's name."""
    match = _SEGMENT_RE.match(name)
    if not match:
        return None
    try:
        return float(calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H")))
    except ValueError:
        return None


class HistoryStore:
    """Append-only sample history with retention by age and by size (see module docstring)."""

    def __init__(
        self,
        directory: Path,
        retention_s: float = DEFAULT_RETENTION_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
        elapsed: Elapsed = boot_clock,
    ) -> None:
        self.state_dir = Path(directory)
        self.elapsed = elapsed  # real time, blind to wall-clock steps (see retention.py)
        self.lock_timeout_s = lock_timeout_s
        self.directory = self.state_dir / "history"
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self.clock = clock
        self._retention_checked_up = -math.inf

    # -- writing -----------------------------------------------------------------------------

    def append(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append one cycle's records (from ``record_from_report``); returns the number written.

        Raises ``StoreError`` (one line) when the disk is full, the directory read-only or the
        lock held for too long; the store is then unchanged.
        """
        batches: dict[str, list[str]] = {}
        count = 0
        for record in records:
            line = encode_record(record)
            batches.setdefault(segment_name(record["t"]), []).append(line)
            count += 1
        if not batches:
            return 0
        lock = self.directory / ".lock"
        try:
            ensure_private_dir(self.state_dir)
            ensure_private_dir(self.directory)
            with exclusive_lock(lock, self.lock_timeout_s):
                created = False
                for name, lines in batches.items():
                    created |= self._write_segment(self.directory / name, "".join(lines))
                up = self.elapsed()[1]
                if created or abs(up - self._retention_checked_up) >= RETENTION_EVERY_S:
                    written = {self.directory / name for name in batches}
                    self._enforce_retention_locked(self.clock(), written)
        except OSError as exc:
            raise StoreError.from_os("history not recorded", exc, self.directory) from None
        return count

    def _write_segment(self, path: Path, text: str) -> bool:
        """Append ``text`` to segment ``path`` under the lock; True if the file was new."""
        data = text.encode()
        fd = open_private(path, os.O_RDWR | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a killed writer left a torn line: end it, start clean
            try:
                write_all(fd, data)
            except OSError:
                try:
                    os.ftruncate(fd, size)  # never leave a partial line behind
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)
        return size == 0

    # -- retention ---------------------------------------------------------------------------

    def segments(self) -> list[tuple[float, Path, int]]:
        """(start, path, size) of every segment, oldest first."""
        out = []
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        for entry in entries:
            start = segment_start(entry.name)
            if start is None:
                continue
            try:
                size = entry.stat().st_size
            except FileNotFoundError:
                continue
            out.append((start, Path(entry.path), size))
        out.sort()
        return out

    def enforce_retention(self) -> list[Path]:
        """Drop segments older than the retention, then the oldest while over ``max_bytes``.

        Age is judged against a reference time a wall-clock step cannot push (``retention``).
        """
        if not self.directory.is_dir():
            return []
        try:
            with exclusive_lock(self.directory / ".lock", self.lock_timeout_s):
                return self._enforce_retention_locked(self.clock(), set())
        except OSError as exc:
            raise StoreError.from_os("history retention failed", exc, self.directory) from None

    def _enforce_retention_locked(self, now: float, written: set[Path]) -> list[Path]:
        elapsed = self.elapsed()
        self._retention_checked_up = elapsed[1]
        ref = reference_time(self.directory, now, elapsed)
        current = self.directory / segment_name(now)  # the hour being written
        drop = segments_to_drop(
            self.segments(), ref, self.retention_s, self.max_bytes, SEGMENT_S, written | {current}
        )
        dropped = []
        for path in drop:
            try:
                path.unlink()
                dropped.append(path)
            except (FileNotFoundError, IsADirectoryError):
                pass  # gone meanwhile, or not a segment we wrote: readers skip and report it
        return dropped

    # -- reading -----------------------------------------------------------------------------

    def iter_records(
        self,
        since: float | None = None,
        until: float | None = None,
        nodes: set[str] | None = None,
        stats: ReadStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream whole records in file order, skipping and counting lines that are not one.

        Raises ``StoreError`` (one line), when first advanced, if the history directory cannot
        be listed; a segment that cannot be opened is skipped and counted in ``stats``."""
        return self._iter(since, until, nodes, stats, summary_only=False)

    def iter_points(
        self,
        since: float | None = None,
        until: float | None = None,
        nodes: set[str] | None = None,
        stats: ReadStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream ``{"v", "t", "node", "summary"}`` only: what ``summarize`` needs, ~10x faster.

        Only the head of a line is decoded, so a line damaged after its summary still counts;
        a line cut short (no closing brace) is skipped as ``truncated``.
        """
        return self._iter(since, until, nodes, stats, summary_only=True)

    def _iter(
        self,
        since: float | None,
        until: float | None,
        nodes: set[str] | None,
        stats: ReadStats | None,
        summary_only: bool,
    ) -> Iterator[dict[str, Any]]:
        stats = ReadStats() if stats is None else stats
        try:
            segments = self.segments()
        except OSError as exc:  # the state dir is a file, or unreadable
            raise StoreError.from_os("history not read", exc, self.directory) from None
        for start, path, _ in segments:
            if since is not None and start + SEGMENT_S <= since:
                continue
            if until is not None and start > until:
                continue
            yield from read_segment(path, since, until, nodes, stats, summary_only)


def encode_record(record: Mapping[str, Any]) -> str:
    """One line, with ``v``, ``t``, ``node`` and ``summary`` first (what the readers rely on)."""
    t = record["t"]
    node = record["node"]
    if not isinstance(t, int | float) or not math.isfinite(t) or isinstance(t, bool):
        raise ValueError(f"history record needs a finite numeric 't', got {t!r}")
    if not isinstance(node, str) or not node or '"' in node or "\\" in node:
        raise ValueError(f"history record needs a plain 'node' name, got {node!r}")
    summary = record.get("summary")
    out: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "t": float(t),
        "node": node,
        "summary": summary if isinstance(summary, Mapping) else summary_of(record),
    }
    for key, value in record.items():
        if key not in out:
            out[key] = value
    return _ENCODE(out) + "\n"
