"""The history store: JSON lines under ``<state dir>/history/``, one line per node sample.

Imports ``model`` and the standard library only. Layout and guarantees:

- Hourly segments named by the record's UTC time, ``history/20250131T14.jsonl``: retention
  deletes whole files (listdir + stat, never a rewrite) and ``--since 1h`` opens two files.
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
from dataclasses import dataclass, field
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
from ugro_health.store.summary import summary_of

SCHEMA_VERSION = 1
SEGMENT_S = 3600
DEFAULT_RETENTION_S = 86400.0
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
RETENTION_EVERY_S = 60.0  # how often one writer re-checks retention between new segments
_SEGMENT_RE = re.compile(r"^(\d{8}T\d{2})\.jsonl$")
_PREFIX = b'{"v":1,"t":'
_NODE_KEY = b'"node":"'
_SUMMARY_KEY = ',"summary":'
_HEAD_BYTES = 2048  # a summary head is ~300 bytes; longer ones fall back to a full decode
_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
_DECODE = json.JSONDecoder()


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


@dataclass(slots=True)
class ReadStats:
    """What a read skipped and why; ``message()`` is the one line a command prints."""

    records: int = 0
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    first: str | None = None  # "path:line" of the first skipped line
    segments_skipped: int = 0  # segment files that could not be opened (a directory, EACCES)
    first_segment: str | None = None  # "reason (path)" of the first

    def skip(self, reason: str, path: Path, line: int) -> None:
        self.skipped += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if self.first is None:
            self.first = f"{path}:{line}"

    def skip_segment(self, path: Path, exc: OSError) -> None:
        self.segments_skipped += 1
        if self.first_segment is None:
            self.first_segment = f"{exc.strerror or type(exc).__name__} ({path})"

    def message(self) -> str | None:
        parts = []
        if self.skipped:
            why = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items()))
            parts.append(
                f"skipped {self.skipped} unreadable history line(s) ({why}; first at {self.first})"
            )
        if self.segments_skipped:
            parts.append(
                f"skipped {self.segments_skipped} unreadable history segment(s) "
                f"(first: {self.first_segment})"
            )
        return "; ".join(parts) or None


class HistoryStore:
    """Append-only sample history with retention by age and by size (see module docstring)."""

    def __init__(
        self,
        directory: Path,
        retention_s: float = DEFAULT_RETENTION_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
    ) -> None:
        self.state_dir = Path(directory)
        self.lock_timeout_s = lock_timeout_s
        self.directory = self.state_dir / "history"
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self.clock = clock
        self._retention_checked_at = -math.inf

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
                now = self.clock()
                if created or now - self._retention_checked_at >= RETENTION_EVERY_S:
                    self._enforce_retention_locked(now)
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
        """Drop segments older than the retention, then the oldest while over ``max_bytes``."""
        if not self.directory.is_dir():
            return []
        try:
            with exclusive_lock(self.directory / ".lock", self.lock_timeout_s):
                return self._enforce_retention_locked(self.clock())
        except OSError as exc:
            raise StoreError.from_os("history retention failed", exc, self.directory) from None

    def _enforce_retention_locked(self, now: float) -> list[Path]:
        self._retention_checked_at = now
        segments = self.segments()
        cutoff = now - self.retention_s
        drop = [s for s in segments if s[0] + SEGMENT_S <= cutoff]
        keep = [s for s in segments if s[0] + SEGMENT_S > cutoff]
        total = sum(size for _, _, size in keep)
        while total > self.max_bytes and len(keep) > 1:  # the newest segment is never dropped
            total -= keep[0][2]
            drop.append(keep.pop(0))
        dropped = []
        for _, path, _ in drop:
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
            yield from _read_segment(path, since, until, nodes, stats, summary_only)


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


def _read_segment(
    path: Path,
    since: float | None,
    until: float | None,
    nodes: set[str] | None,
    stats: ReadStats,
    summary_only: bool,
) -> Iterator[dict[str, Any]]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, generator may be abandoned
    except FileNotFoundError:
        return  # dropped by retention meanwhile
    except OSError as exc:  # a directory or an unreadable file where a segment should be
        stats.skip_segment(path, exc)
        return
    with handle:
        for number, raw in enumerate(handle, 1):
            if not raw.endswith(b"\n"):
                # The last line of the file without its newline: a writer killed mid-line (the
                # next append ends it) or, rarely, one writing right now.
                if raw.strip():
                    stats.skip("incomplete", path, number)
                continue
            head = _parse_head(raw)
            if head is not None:
                t, node, _ = head
                if (since is not None and t < since) or (until is not None and t > until):
                    continue
                if nodes is not None and node not in nodes:
                    continue
            record = _decode(raw, summary_only, head)
            if isinstance(record, str):
                if record != "blank":
                    stats.skip(record, path, number)
                continue
            if head is None and not _wanted(record, since, until, nodes):
                continue
            stats.records += 1
            yield record


def _parse_head(raw: bytes) -> tuple[float, str, int] | None:
    """``(t, node, end of node)`` from a line as ``encode_record`` writes it, without decoding."""
    if not raw.startswith(_PREFIX):
        return None
    comma = raw.find(b",", 11)
    if comma < 0 or raw[comma + 1 : comma + 9] != _NODE_KEY:
        return None
    end = raw.find(b'"', comma + 9)
    if end < 0:
        return None
    try:
        return float(raw[11:comma]), raw[comma + 9 : end].decode(), end + 1
    except (ValueError, UnicodeDecodeError):
        return None


def _decode(
    raw: bytes, summary_only: bool, head: tuple[float, str, int] | None
) -> dict[str, Any] | str:
    """The record, or the reason it is not one."""
    if summary_only and head is not None:
        point = _decode_summary(raw, head)
        if point is not None:
            return point
    line = raw.strip()
    if not line:
        return "blank"
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        # A record cut short (a killed writer, a hand truncation) still starts like one.
        return "truncated" if line.startswith(b"{") and not line.endswith(b"}") else "not_json"
    if not isinstance(record, dict):
        return "not_object"
    if record.get("v") != SCHEMA_VERSION:
        return "other_version"
    t, node = record.get("t"), record.get("node")
    if isinstance(t, bool) or not isinstance(t, int | float) or not isinstance(node, str):
        return "invalid"
    if summary_only:
        return {"v": SCHEMA_VERSION, "t": t, "node": node, "summary": record.get("summary")}
    return record


def _decode_summary(raw: bytes, head: tuple[float, str, int]) -> dict[str, Any] | None:
    if not raw.rstrip().endswith(b"}"):
        return None  # cut short: let the full decode classify it
    t, node, start = head
    # The head is ASCII up to here (encode_record's json escapes everything else).
    text = raw[start : start + _HEAD_BYTES].decode("ascii", "replace")
    if not text.startswith(_SUMMARY_KEY):
        return None
    try:
        summary, _ = _DECODE.raw_decode(text, len(_SUMMARY_KEY))
    except ValueError:
        return None
    if not isinstance(summary, dict):
        return None
    return {"v": SCHEMA_VERSION, "t": t, "node": node, "summary": summary}


def _wanted(
    record: Mapping[str, Any], since: float | None, until: float | None, nodes: set[str] | None
) -> bool:
    t = record["t"]
    if (since is not None and t < since) or (until is not None and t > until):
        return False
    return nodes is None or record["node"] in nodes
