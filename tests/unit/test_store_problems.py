"""A store that cannot be written: one line, and ``watch`` says it once, then when it clears."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

from cli_helpers import spawn_cli

from ugro_health.store import HistoryStore, StateStore, StoreError, record_cycle
from ugro_health.store._fs import one_line


def test_history_and_state_failing_alike_are_one_line(tmp_path: Path) -> None:
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    errors = [
        StoreError.from_os("history not recorded", full, tmp_path / "history"),
        StoreError.from_os("state not saved", full, tmp_path / "state.json"),
    ]
    assert one_line(errors, tmp_path) == (
        f"history and state not recorded: No space left on device ({tmp_path})"
    )
    assert one_line(errors[:1], tmp_path) == str(errors[0])


def test_history_and_state_failing_differently_are_still_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")  # the state directory is a file: every write fails
    (problem,) = record_cycle(
        HistoryStore(blocker), StateStore(blocker), [{"t": 1e9, "node": "a", "status": "ok"}]
    )
    assert problem.startswith("history not recorded: ") and "; state not saved: " in problem


def test_watch_says_a_store_failure_once_then_when_it_clears(tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text("nodes:\n  - name: here\n    host: localhost\n")
    state_dir = tmp_path / "state-dir"
    # Where the history directory and state.json go stand a file and a directory: every write
    # fails (a state directory that is itself a file is refused up front, before watch runs).
    state_dir.mkdir(mode=0o700)
    (state_dir / "history").write_text("")
    (state_dir / "state.json").mkdir()
    argv = ["--state-dir", str(state_dir), "watch", "--headless", "--interval", "1"]
    proc = spawn_cli(*argv, cwd=tmp_path)
    lines: list[str] = []
    try:
        assert proc.stdout is not None

        def read_cycles(n: int) -> None:
            seen = 0
            while seen < n:
                line = proc.stdout.readline()  # type: ignore[union-attr]
                assert line, lines
                lines.append(line)
                seen += " cycle " in line

        read_cycles(4)
        (state_dir / "history").unlink()  # the operator fixes it: the next cycle records again
        (state_dir / "state.json").rmdir()
        read_cycles(3)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    store = [line.split(" ", 1)[1] for line in lines if " STORE " in line]
    assert len(store) == 2 and store[1] == "STORE recorded again\n", lines
    assert store[0].startswith("STORE history not recorded: ") and "state not saved" in store[0]
    assert proc.returncode == 0
