"""Which history segments retention drops, judged against time that a clock step cannot push.

Standard library only (and ``_fs``). Age is judged against a *reference time*, not the wall
clock alone: the reference follows the wall clock backwards at once, but forwards never
faster than ``CATCH_UP`` times the real time that passed (``CLOCK_BOOTTIME``, the same for
every process of one boot and blind to clock steps). It is kept in ``history/.retention``
(``{"ref", "boot", "up"}``) so that a cron ``check`` and a running ``watch`` share it. So:

- a wall clock stepped forward for a few seconds (NTP gone wrong, an operator's typo) moves
  the reference by twice those seconds, and nothing is deleted because of it;
- a lasting forward correction (the clock was slow) is caught up at twice real time: history
  is kept longer by at most the step, never cut at the step;
- a segment written while the clock was ahead ("future-dated") is kept, like any other, until
  its own hour is older than the retention by the reference: it is data, and goes in its turn;
- after a reboot (another boot id) or with no readable mark, the reference is the wall clock.

The segments written by the current ``append`` (and the current hour's) are never dropped, by
age or by size: a future-dated segment is not "the newest" the size cap must keep.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ugro_health.store._fs import open_private, write_all

CATCH_UP = 2.0  # the reference moves forward at most this many times as fast as real time
MARK_FILE = ".retention"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

Segment = tuple[float, Path, int]  # (start, path, size)
Elapsed = Callable[[], tuple[str, float]]  # (boot id, seconds of real time within that boot)


def boot_clock() -> tuple[str, float]:
    """(this boot's id, seconds since boot, suspend included): real elapsed time."""
    try:
        boot = _BOOT_ID.read_text().strip()
    except OSError:
        boot = "unknown"
    return boot, time.clock_gettime(time.CLOCK_BOOTTIME)


def reference_time(directory: Path, now: float, elapsed: tuple[str, float]) -> float:
    """The time to judge age against (see the module docstring); records it in the mark.

    Call with the history lock held.
    """
    boot, up = elapsed
    mark = _read_mark(directory / MARK_FILE)
    ref = now
    if mark is not None and mark[1] == boot and up >= mark[2]:
        ref = min(now, mark[0] + CATCH_UP * (up - mark[2]))
    _write_mark(directory, ref, boot, up)
    return ref


def segments_to_drop(
    segments: list[Segment],
    ref: float,
    retention_s: float,
    max_bytes: int,
    segment_s: float,
    protected: Iterable[Path],
) -> list[Path]:
    """Segments older than ``retention_s`` at ``ref``, then the oldest while over ``max_bytes``.

    ``segments`` oldest first; ``protected`` (the segments being written) are never dropped,
    nor the last segment left.
    """
    keep_always = set(protected)
    cutoff = ref - retention_s
    drop = [s for s in segments if s[0] + segment_s <= cutoff and s[1] not in keep_always]
    dropped = {s[1] for s in drop}
    keep = [s for s in segments if s[1] not in dropped]
    total = sum(size for _, _, size in keep)
    for segment in list(keep):
        if total <= max_bytes or len(keep) <= 1:
            break
        if segment[1] in keep_always:
            continue
        total -= segment[2]
        keep.remove(segment)
        drop.append(segment)
    return [path for _, path, _ in drop]


def _read_mark(path: Path) -> tuple[float, str, float] | None:
    try:
        mark = json.loads(path.read_bytes())
        ref, boot, up = mark["ref"], mark["boot"], mark["up"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    numbers = (ref, up)
    if not isinstance(boot, str) or not all(_finite(n) for n in numbers):
        return None
    return float(ref), boot, float(up)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _write_mark(directory: Path, ref: float, boot: str, up: float) -> None:
    """Best effort: a full or read-only disk keeps the old mark, which errs towards keeping."""
    data = json.dumps({"ref": ref, "boot": boot, "up": up}).encode()
    tmp = directory / f"{MARK_FILE}.tmp"
    try:
        fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, directory / MARK_FILE)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
