"""File-system primitives shared by the history and state stores.

Standard library only. Everything the store creates is private: directories 0700 and files 0600
whatever the umask, because health data names hosts, users and processes. Errors from the
operating system become a ``StoreError`` with a one-line message, so a command can print it and
still report the cluster's health.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
LOCK_TIMEOUT_S = 10.0


class StoreError(Exception):
    """The store could not be written (disk full, read-only, permission, lock busy).

    ``str(error)`` is one line, e.g. ``history not recorded: No space left on device (/path)``.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason  # the operating system's words, e.g. "No space left on device"

    @classmethod
    def from_os(cls, action: str, exc: OSError, path: Path | str) -> StoreError:
        reason = exc.strerror or os.strerror(exc.errno or 0) or exc.__class__.__name__
        return cls(f"{action}: {reason} ({exc.filename or path})", reason)


def one_line(errors: list[StoreError], directory: Path) -> str:
    """The failures of one cycle's write as one line.

    History and state failing for the same reason (a full or read-only disk) are one problem,
    ``history and state not recorded: No space left on device (<state dir>)``.
    """
    reasons = {e.reason for e in errors}
    if len(errors) > 1 and len(reasons) == 1 and None not in reasons:
        return f"history and state not recorded: {errors[0].reason} ({directory})"
    return "; ".join(str(e) for e in errors)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents, like ``mkdir -p``) with the last component 0700.

    An existing directory keeps its mode: it may be one the operator chose (``--state-dir``).
    """
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)  # os.mkdir's mode is filtered by the umask


def open_private(path: Path, flags: int) -> int:
    """``os.open`` with O_CREAT, mode 0600 whatever the umask, close-on-exec."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


@contextmanager
def exclusive_lock(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold ``flock(LOCK_EX)`` on the lock file ``path``; raise TimeoutError after ``timeout_s``.

    Polling with LOCK_NB rather than blocking, so that a stopped process holding the lock makes
    the command fail with a message instead of hanging forever.
    """
    fd = open_private(path, os.O_RDWR)
    try:
        deadline = time.monotonic() + timeout_s
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(errno.EWOULDBLOCK, "lock busy", str(path)) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``; a short write that makes no progress is reported as ENOSPC."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def replace_atomically(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it (fsync, then
    ``os.replace``): a reader or a crash sees the old file or the new, never half of one.
    The file is private unless ``mode`` says otherwise (a file another user's daemon reads).
    The caller holds the file's lock, if others write it (the temporary name is per process).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
            if mode != FILE_MODE:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
