"""``ugro-health demo`` as a process: the story happens in order and is recorded in the state
directory, Ctrl-C leaves nothing behind (headless and on a terminal), bad input is one line.

The demo needs no SSH (the nodes are simulated in-process), so these stay unit tests. The story
runs on the wall clock at ``--speed 8`` (92 story seconds in about 11.5 s): the assertions are
on order and presence, never on how many cycles a loaded machine managed.
"""

from __future__ import annotations

import itertools
import json
import os
import pty
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from cli_helpers import cli_env, run_cli

SPEED = 8
DURATION = 15  # the story's 92 s / 8 = 11.5 s, then a few cycles with the job over


def spawn_demo(
    home: Path, *args: str, tty: int | None = None, extra: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``demo`` in the isolated environment (temporary directories under ``home/tmp``), its
    output piped, or on the terminal ``tty`` (a pty's follower end)."""
    (home / "tmp").mkdir(exist_ok=True)
    env = cli_env(home, {"TMPDIR": str(home / "tmp"), **(extra or {})})
    out = subprocess.PIPE if tty is None else tty
    return subprocess.Popen(
        [sys.executable, "-m", "ugro_health", "demo", *args],
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL if tty is None else tty,
        stdout=out,
        stderr=out,
        text=True,
    )


@pytest.fixture(scope="module")
def story_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One headless run of the whole story, its state kept: (state directory, log lines)."""
    home = tmp_path_factory.mktemp("demo")
    state = home / "kept"
    proc = spawn_demo(
        home, "--headless", "--speed", str(SPEED), "--duration", str(DURATION),
        "--keep-state", str(state),
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=DURATION + 60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return state, out.splitlines()


def first(lines: list[str], *needles: str) -> int:
    """The index of the first line holding every needle (a clear failure if none does)."""
    for i, line in enumerate(lines):
        if all(n in line for n in needles):
            return i
    raise AssertionError(f"no line with {needles} in:\n" + "\n".join(lines))


@pytest.mark.slow
def test_the_story_happens_in_order(story_run: tuple[Path, list[str]]):
    _, lines = story_run
    assert "DEMO SIMULATION · 8 simulated nodes × 8 H100" in lines[0]
    assert "recorded nvidia-smi outputs" in lines[0]
    # The narration and the alerts each in the story's order. A DEMO line is printed as its
    # moment comes, racing the poll that sees it: an alert is only held to come after the
    # narration of the moment before its own (a whole beat, a second or more, earlier).
    told = [
        first(lines, "DEMO story 0:08: training job llama-pretrain starts", "(simulated)"),
        first(lines, "DEMO story 0:18: a GPU starts running hot"),
        first(lines, "DEMO story 0:44: a GPU falls off the bus (Xid 79)"),
        first(lines, "DEMO story 0:52: a node drops off the network"),
        first(lines, "DEMO story 1:08: the node is back on the network"),
        first(lines, "DEMO story 1:24: training job llama-pretrain ends"),
    ]
    assert told == sorted(told), [lines[i] for i in told]
    alerts = [
        first(lines, "ALERT INFO sim01 job_started: job llama-pretrain started on sim01,"),
        first(lines, "ALERT WARNING sim02 gpu_temp_warning: GPU 3: temperature"),
        first(lines, "ALERT CRITICAL sim02 gpu_temp_critical: GPU 3: temperature"),
        first(lines, "ALERT CRITICAL sim05 gpu_xid_fatal: fatal XID 79"),
        first(lines, "ALERT CRITICAL sim07 node_unreachable: unreachable"),
        first(lines, "ALERT CRITICAL sim07 node_isolated: node isolated after"),
        first(lines, "ALERT INFO sim07 node_recovered: node recovered"),
        first(lines, "ALERT INFO - job_finished: job llama-pretrain finished"),
    ]
    assert alerts == sorted(alerts), [lines[i] for i in alerts]
    started, warm, _, xid, gone, _, back, finished = alerts
    assert started < told[1] < warm and told[1] < xid and told[2] < gone
    assert told[3] < back and told[4] < finished
    throttle = first(lines, "ALERT WARNING sim02 gpu_throttle_thermal: GPU 3: clocks throttled")
    assert warm < throttle < xid  # it throttles once hot, before the Xid
    # the cycle lines follow the job: registered on every cycle while it runs, then none
    cycles = [line for line in lines if " cycle " in line]
    assert "jobs: none" in cycles[0] and "jobs: none" in cycles[-1]
    assert any("jobs: llama-pretrain;" in line for line in cycles)
    assert any("1 isolated" in line for line in cycles)  # sim07 skipped while its breaker is open
    assert lines[-1].split(" ", 1)[1].startswith("stopped after ")


def history(state: Path, *args: str) -> dict[str, Any]:
    result = run_cli("--state-dir", str(state), "history", *args, "--json", cwd=state.parent)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.mark.slow
def test_status_shows_what_the_story_left(story_run: tuple[Path, list[str]]):
    state, _ = story_run
    # The kept directory holds a cluster file naming the simulated nodes, as a real one would.
    config = str(state / "cluster.yaml")
    result = run_cli("-c", config, "--state-dir", str(state), "status", "--json", cwd=state.parent)
    assert result.returncode == 2, result.stderr  # CRITICAL: sim05's lost GPU
    nodes = {n["name"]: n for n in json.loads(result.stdout)["nodes"]}
    assert set(nodes) == {f"sim{i:02d}" for i in range(1, 9)}
    sim05 = nodes["sim05"]
    assert sim05["status"] == "critical"
    codes = {(a["severity"], a["code"]) for a in sim05["alerts"]}
    assert {("critical", "gpu_xid_fatal"), ("critical", "gpu_count_low")} <= codes
    assert len(sim05["gpus"]) == 7  # the GPU that fell off the bus is gone from nvidia-smi
    # sim07 came back: reachable, its breaker closed again after opening (once, or twice when
    # its first half-open try fell before the node's return)
    assert nodes["sim07"]["reachable"] is True
    assert nodes["sim07"]["breaker"]["state"] == "closed"
    assert nodes["sim07"]["breaker"]["openings"] >= 1
    assert "unreachable" in nodes["sim07"]["breaker"]["last_error"]
    for name in ("sim01", "sim03", "sim08"):
        assert nodes[name]["status"] == "ok" and len(nodes[name]["gpus"]) == 8


@pytest.mark.slow
def test_history_records_every_node_with_gpu_metrics(story_run: tuple[Path, list[str]]):
    state, _ = story_run
    samples = history(state, "--metric", "gpu_temp")["samples"]
    by_node: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        by_node.setdefault(sample["node"], []).append(sample)
    assert sorted(by_node) == [f"sim{i:02d}" for i in range(1, 9)]
    for name, points in by_node.items():
        answered = [p["summary"] for p in points if p["reachable"]]
        assert answered, name
        for summary in answered:
            for metric in ("gpu_temp", "gpu_util", "gpu_mem", "power"):
                assert isinstance(summary[metric], (int, float)), (name, metric, summary)
    # sim02's hot GPU is on record past the critical threshold; sim07 has points it missed
    assert max(p["summary"]["gpu_temp"] for p in by_node["sim02"] if p["reachable"]) >= 85
    sim07 = [p["reachable"] for p in by_node["sim07"]]
    assert False in sim07 and sim07[0] and sim07[-1]
    gone = sim07.index(False)
    assert all(p["status"] == "critical" for p in by_node["sim07"] if not p["reachable"])
    assert True in sim07[gone:]  # and answered again after it


@pytest.mark.slow
def test_polling_speeds_up_for_the_job_and_backs_off_after(story_run: tuple[Path, list[str]]):
    # sim01 stays healthy: its polls follow the job alone. Training shows in its GPUs (busy),
    # so the phases are told apart by what was recorded, not by the clock.
    state, _ = story_run
    points = history(state, "sim01", "--metric", "gpu_util")["samples"]
    busy = [p["summary"]["gpu_util"] > 50 for p in points]
    assert busy[0] is False and True in busy, busy
    start = busy.index(True)
    end = len(busy) - busy[::-1].index(True)  # the first idle point after the job
    training = [p["t"] for p in points[start:end]]
    after = [p["t"] for p in points[end:]]
    assert len(training) >= 4 and len(after) >= 3, (len(training), len(after))

    def gap(times: list[float]) -> float:
        return statistics.median(b - a for a, b in itertools.pairwise(times))

    assert gap(training) < gap(after) / 1.5, (gap(training), gap(after))


def demo_dirs(home: Path) -> list[Path]:
    return sorted((home / "tmp").glob("ugro-health-demo-*"))


def stop_with_ctrl_c(proc: subprocess.Popen[str], home: Path) -> list[psutil.Process]:
    """SIGINT once the demo is running (its temporary state directory exists and holds state);
    returns its child processes at that moment."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any((d / "state.json").exists() for d in demo_dirs(home)):
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the demo ended on its own"
    (state,) = demo_dirs(home)
    assert (state / "history").exists()
    time.sleep(2.5)  # a few cycles at --speed 8, whatever the load (the idle interval: 1.5 s)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    return children


@pytest.mark.slow
def test_ctrl_c_headless_exits_0_and_leaves_nothing(tmp_path: Path):
    proc = spawn_demo(tmp_path, "--headless", "--speed", str(SPEED))
    try:
        children = stop_with_ctrl_c(proc, tmp_path)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    (started,) = [line for line in out.splitlines() if " watching 8 node(s); state in " in line]
    state = Path(started.split(" state in ", 1)[1])
    assert state.parent == tmp_path / "tmp" and state.name.startswith("ugro-health-demo-")
    assert " cycle 2: " in out
    assert out.splitlines()[-1].split(" ", 1)[1].startswith("stopped after ")
    assert not state.exists() and demo_dirs(tmp_path) == []
    assert children == []  # the nodes are simulated in-process: no ssh, no probe processes


class Terminal:
    """A pty the demo sees as its terminal; what it draws is drained by a thread (a full pty
    buffer would block the dashboard)."""

    def __init__(self) -> None:
        self.leader, self.follower = pty.openpty()
        self.output = bytearray()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.leader, 65536)
            except OSError:  # EIO: every writer is gone
                return
            if not chunk:
                return
            self.output.extend(chunk)

    def close(self) -> str:
        os.close(self.follower)
        self._thread.join(timeout=10)
        os.close(self.leader)
        return self.output.decode("utf-8", "replace")


@pytest.mark.slow
def test_ctrl_c_on_the_dashboard_exits_0_and_leaves_nothing(tmp_path: Path):
    term = Terminal()
    proc = spawn_demo(
        tmp_path, "--speed", str(SPEED), tty=term.follower, extra={"COLUMNS": "130", "LINES": "60"}
    )
    try:
        children = stop_with_ctrl_c(proc, tmp_path)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        screen = term.close()
    assert proc.returncode == 0, screen[-2000:]
    assert "Traceback" not in screen, screen[-4000:]
    # the dashboard, not the headless log, and it says it is a simulation
    assert "SIMULATION · 8 simulated nodes × 8 H100" in screen
    assert "sim08" in screen and "GPU TEMP" in screen and "watching 8 node(s)" not in screen
    assert demo_dirs(tmp_path) == []
    assert children == []  # the nodes are simulated in-process: no ssh, no probe processes


def test_keep_state_on_a_file_is_a_one_line_usage_error(tmp_path: Path):
    target = tmp_path / "a-file"
    target.write_text("precious\n")
    result = run_cli("demo", "--headless", "--keep-state", str(target), cwd=tmp_path, timeout=60)
    assert result.returncode == 3  # usage errors exit 3 (UNKNOWN), never 2 (CRITICAL)
    assert result.stderr.strip().splitlines() == [
        f"ugro-health: --keep-state {target}: not a directory"
    ]
    assert result.stdout == ""
    assert target.read_text() == "precious\n"  # nothing lost


def test_keep_state_writes_its_cluster_file_but_never_over_someone_elses(tmp_path: Path):
    from ugro_health.cli.demo import _write_cluster_file
    from ugro_health.config import load_config

    _write_cluster_file(tmp_path / "kept")
    config = load_config(tmp_path / "kept" / "cluster.yaml")
    assert [n.name for n in config.nodes] == [f"sim{i:02d}" for i in range(1, 9)]
    assert all(n.gpus == 8 for n in config.nodes)
    _write_cluster_file(tmp_path / "kept")  # its own file: rewritten, still valid
    assert load_config(tmp_path / "kept" / "cluster.yaml").nodes == config.nodes
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "cluster.yaml").write_text("nodes: [gpu1]\n")
    _write_cluster_file(mine)
    assert (mine / "cluster.yaml").read_text() == "nodes: [gpu1]\n"


def test_a_failed_start_leaves_no_temporary_directory(tmp_path: Path):
    with socket.socket() as taken:  # the metrics port is in use: the demo cannot start
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = spawn_demo(tmp_path, "--headless", "--metrics-listen", f"127.0.0.1:{port}")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (out, err)
    assert len(err.strip().splitlines()) == 1 and str(port) in err, err
    assert demo_dirs(tmp_path) == []


def test_keep_state_refuses_a_directory_that_is_not_a_demos(tmp_path: Path):
    real = tmp_path / "state"
    (real / "history").mkdir(parents=True)
    (real / "state.json").write_text("{}\n")
    result = run_cli("demo", "--headless", "--keep-state", str(real), cwd=tmp_path, timeout=60)
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "did not write" in line and str(real) in line
    assert sorted(p.name for p in real.iterdir()) == ["history", "state.json"]  # untouched
    assert (real / "state.json").read_text() == "{}\n"
