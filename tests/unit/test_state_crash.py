"""A writer SIGKILLed inside the state write leaves no orphan temporary file behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from ugro_health.store import StateStore

# The child writes its temporary file, says so, and is killed before the replace.
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ugro_health.store import _fs, state

    real = _fs.write_all

    def write_then_wait(fd, data):
        real(fd, data)
        print("written", flush=True)
        time.sleep(60)

    _fs.write_all = write_then_wait  # the atomic write (_fs.replace_atomically) uses it
    state.StateStore(Path(sys.argv[1])).update(lambda s: s["jobs"].update(x={"name": "x"}))
    """
)


def test_sigkill_between_temp_write_and_replace_leaves_no_orphan(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.update(lambda s: s.update(kept=1))
    before = (tmp_path / "state.json").read_bytes()
    for _ in range(2):  # two dead writers, two different pids
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE
        )
        assert child.stdout is not None and child.stdout.readline() == b"written\n"
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        # the crash did leave one; the second writer cleaned the first's
        assert len(list(tmp_path.glob(".state.json.*.tmp"))) == 1
    assert (tmp_path / "state.json").read_bytes() == before  # and the old state intact
    store.update(lambda s: s.update(kept=2))  # the next writer cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.lock"]
    assert store.load().state["kept"] == 2
