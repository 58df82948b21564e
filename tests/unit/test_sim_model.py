"""The simulator (``ugro_health.sim``): built from the recordings, judged by the real engine.

Oracles: the real probe reading the same recorded nvidia-smi outputs through the fake
``nvidia-smi`` the probe's tests use (what a real H100 node answers, the simulator answers),
and the engine's own scoring (the story's faults raise exactly the alerts they should, and a
steady cluster none).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_probe_sample import install_fake_smi

from ugro_health import probe
from ugro_health.config import NodeConfig, Thresholds
from ugro_health.engine.scoring import judge
from ugro_health.model import ErrorKind, NodeSample
from ugro_health.sim import recorded
from ugro_health.sim.model import MOVING, SimCluster, Story
from ugro_health.sim.node import SimProbe, node_names
from ugro_health.sim.transport import SimTransport
from ugro_health.transport.base import EXCHANGE_KEY, TransportError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probe"
NAMES = node_names(8)
REQUEST = probe.normalize_request({"match": ["torchrun"], "mounts": ["/", "/raid"]})
NODE = NodeConfig(name="node02", gpus=8, nvlinks=18)


def at(t: float, story: Story | None = None) -> SimCluster:
    """The demo cluster frozen at story time ``t``."""
    return SimCluster(NAMES, 8, story or Story.demo(), start=1000.0, clock=lambda: 1000.0 + t)


def codes(doc: dict, node: NodeConfig = NODE) -> set[str]:
    verdict = judge(NodeSample.from_probe(doc), node, Thresholds())
    return {alert.code for alert in verdict.alerts}


@pytest.mark.parametrize(
    "name", sorted(p.name for p in recorded.RECORDINGS.iterdir() if p.name != "README.md")
)
def test_each_packaged_recording_is_the_fixture_byte_for_byte(name: str) -> None:
    assert (recorded.RECORDINGS / name).read_bytes() == (FIXTURES / name).read_bytes()


def test_a_simulated_gpu_is_what_the_real_probe_reads_from_the_recording(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    monkeypatch.setenv("PATH", f"{fake_bin}:/usr/bin:/bin")
    install_fake_smi(fake_bin, monkeypatch, tmp_path)  # replays the H100 load recording
    with probe.Probe() as real:
        (expected,) = real.sample({"window_s": 0.0})["gpus"]
    steady = at(100.0, Story.steady()).node("node02").document(REQUEST)["gpus"][0]
    identity = {"index", "uuid", "pci_bus_id", "processes", "nvlink_active", "nvlink_total"}
    for key, value in expected.items():
        if key not in identity and key not in MOVING:
            assert steady[key] == value, key
    # What moves stays in the recording's ranges and units.
    assert 0 <= steady["util_pct"] <= 100 and steady["power_w"] <= steady["power_limit_w"]
    assert steady["mem_used_bytes"] < steady["mem_total_bytes"] == expected["mem_total_bytes"]


def test_a_steady_cluster_is_healthy_by_the_engines_own_scoring() -> None:
    for t in (0.0, 17.3, 3600.0):
        cluster = SimCluster(NAMES, 8, Story.steady(), start=0.0, clock=lambda t=t: t)
        for name in NAMES:
            doc = cluster.node(name).document(REQUEST)
            sample = NodeSample.from_probe(doc)
            verdict = judge(sample, NodeConfig(name=name, gpus=8, nvlinks=18), Thresholds())
            assert not verdict.alerts and verdict.score == 100, (name, t, verdict.alerts)
            assert len(sample.gpus) == 8
            # the training job: torchrun and its eight workers, by the probe's own rules
            (launcher,) = doc["matched_processes"]
            assert launcher["pattern"] == "torchrun"
            assert len(doc["matched_descendants"]) == 8


def test_the_hot_gpu_goes_warning_then_critical_and_throttles_then_cools() -> None:
    story = Story.demo()
    seen = []
    for tenth in range(0, int(story.length_s * 10), 5):
        doc = at(tenth / 10).node("node02").document(REQUEST)
        found = codes(doc) & {"gpu_temp_warning", "gpu_temp_critical", "gpu_throttle_thermal"}
        if not seen or seen[-1] != found:
            seen.append(found)
    assert seen[0] == set()
    assert {"gpu_temp_warning"} in seen
    warn = seen.index({"gpu_temp_warning"})
    assert any("gpu_temp_critical" in s and "gpu_throttle_thermal" in s for s in seen[warn:])
    assert seen[-1] == set()  # cooled after the job's end
    # only GPU 3 of that node, and no other node, ever runs hot
    hottest = max(
        at(t).node(n).temperature(g, t)
        for t in range(0, 90, 3)
        for n in NAMES
        for g in range(8)
        if (n, g) != ("node02", 3)
    )
    assert hottest < Thresholds().gpu_temp_warn_c


def test_the_xid_gpu_falls_off_the_bus_at_its_time_and_stays_off() -> None:
    story = Story.demo()
    before = at(story.xid_at - 0.5).node("node05").document(REQUEST)
    assert before["xids"] == [] and len(before["gpus"]) == 8
    for t in (story.xid_at, story.xid_at + 30):
        doc = at(t).node("node05").document(REQUEST)
        (xid,) = doc["xids"]
        assert xid["xid"] == 79 and xid["gpu"] == "0000:9a:00"
        assert 0 <= doc["uptime_s"] - xid["kernel_time_s"] <= 30.1  # recent: within the window
        assert [g["index"] for g in doc["gpus"]] == [0, 1, 2, 3, 5, 6, 7]
        assert "Unable to determine the device handle" in doc["errors"]["nvidia-smi"]
        assert {"gpu_xid_fatal", "gpu_count_low"} <= codes(doc, NodeConfig(name="node05", gpus=8))


def test_only_the_story_node_drops_off_the_network_and_only_for_its_window() -> None:
    story = Story.demo()
    for t in (story.down_from - 0.1, story.down_until):
        assert all(at(t).reachable(n) for n in NAMES)
    down = at(story.down_from + 1)
    assert [n for n in NAMES if not down.reachable(n)] == ["node07"]


def test_the_job_runs_only_between_its_start_and_end() -> None:
    story = Story.demo()
    for t, running in (
        (story.job_start - 0.1, False),
        (story.job_start, True),
        (story.job_end, False),
    ):
        doc = at(t).node("node01").document(REQUEST)
        assert bool(doc["matched_processes"]) is running
        assert all(bool(g["processes"]) is running for g in doc["gpus"])


def test_documents_depend_only_on_the_node_and_the_story_time() -> None:
    # Separate processes behind sshd must agree: two clusters built apart answer alike.
    one, two = at(50.0), at(50.0)
    for name in NAMES:
        assert one.node(name).document(REQUEST) == two.node(name).document(REQUEST)
    assert at(50.0).node("node01").document(REQUEST) != at(51.0).node("node01").document(REQUEST)


def test_speed_scales_the_story_clock() -> None:
    cluster = SimCluster(NAMES, 8, Story.demo(), start=100.0, speed=4.0, clock=lambda: 110.0)
    assert cluster.story_time() == 40.0
    with pytest.raises(ValueError):
        SimCluster(NAMES, speed=0)


def test_the_transport_answers_through_the_probe_framing_and_fails_like_a_dead_host() -> None:
    cluster = SimCluster(NAMES, 8, Story.demo(), start=time.time() - 55.0)  # node07 is down
    transport = SimTransport(cluster)
    request = {"op": "sample", "mounts": ["/"], "match": ["torchrun"]}
    doc = transport.run_probe(NodeConfig(name="node01"), request, time.monotonic() + 5)
    sent, received = doc[EXCHANGE_KEY]
    assert sent <= doc["time"] <= received and doc["hostname"] == "node01"
    with pytest.raises(TransportError) as failed:
        transport.run_probe(NodeConfig(name="node07"), request, time.monotonic() + 5)
    assert failed.value.kind is ErrorKind.UNREACHABLE and "simulated" in failed.value.message
    # a bad request gets the probe's own refusal, as a probe failure
    with pytest.raises(TransportError) as refused:
        transport.run_probe(NodeConfig(name="node01"), {"op": "sample", "mounts": "/"}, 0.0)
    assert refused.value.kind is ErrorKind.PROBE_FAILED and "mounts" in refused.value.message


def test_the_node_process_speaks_the_probe_protocol_under_the_bootstrap() -> None:
    source = probe.source_bytes()
    stdin = (
        str(len(source)).encode()
        + b"\n"
        + source
        + b'{"op": "sample", "match": ["torchrun"]}\n\nnot json\n{"op": "nope"}\n{"op": "exit"}\n'
        + b'{"op": "sample"}\n'  # after exit: never answered
    )
    argv = [sys.executable, "-m", "ugro_health.sim.node", "--node", "node03", "-c", probe.BOOTSTRAP]
    done = subprocess.run(argv, input=stdin, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    frames = done.stdout.splitlines()
    assert len(frames) == 3 and all(f.startswith(b"UGRO1 ") for f in frames)
    first, bad, unknown = (json.loads(f[6:]) for f in frames)
    assert first["ok"] is True and first["hostname"] == "node03" and len(first["gpus"]) == 8
    assert bad["ok"] is False and "bad request" in bad["error"]
    assert unknown["ok"] is False and "unknown op" in unknown["error"]


def test_the_node_process_refuses_a_stream_that_is_not_the_probe_source() -> None:
    argv = [sys.executable, "-m", "ugro_health.sim.node", "--node", "node03", "-c", probe.BOOTSTRAP]
    done = subprocess.run(argv, input=b"hello\n", capture_output=True, timeout=60, check=False)
    assert done.returncode == 1 and b"probe source" in done.stderr and done.stdout == b""


def test_probe_answers_are_size_capped_as_the_probes_are() -> None:
    sim = SimProbe(at(50.0).node("node01"))
    reply, stop = sim.answer(b'{"op": "sample", "max_output_bytes": 200}')
    doc = json.loads(reply[len("UGRO1 ") :])
    assert not stop and doc["ok"] is False and "200" in doc["error"]
