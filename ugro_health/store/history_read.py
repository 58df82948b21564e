"""Reading history segments: line by line, skipping and counting what is not a whole record.

Standard library only. ``history.HistoryStore`` lists the segments; this module reads one, so
that a torn line (a killed writer), garbage or a record of another version is skipped and
counted in ``ReadStats`` instead of stopping the read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
_PREFIX = b'{"v":1,"t":'
_NODE_KEY = b'"node":"'
_SUMMARY_KEY = ',"summary":'
_HEAD_BYTES = 2048  # a summary head is ~300 bytes; longer ones fall back to a full decode
_DECODE = json.JSONDecoder()


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


def read_segment(
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
