"""Simulated GPU nodes whose state is a pure function of the story's time.

Every answer is computed from (node, story time) alone, so any number of processes (the demo's
in-process nodes, or one simulator process per SSH session behind a real sshd) agree on what a
node looks like at a given moment without sharing anything but the story's start and speed.

A ``Story`` is a timeline in story seconds. ``Story.demo()`` is the demo's (about 90 s):
a training job starts on every node, a GPU heats to WARNING then CRITICAL and throttles, a GPU
on another node falls off the bus (fatal Xid 79, its row gone from nvidia-smi), a node drops
off the network and returns, the job ends. ``Story.steady()`` is a healthy cluster training
forever (benchmarks, tests that need many cheap nodes).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ugro_health import probe
from ugro_health.sim import recorded

NEVER = math.inf
MIB = 1 << 20
GIB = 1 << 30
JOB_NAME = "llama-pretrain"
LAUNCHER_PID = 40_000  # the job's torchrun (plus 97 x the node's index); its workers follow
# What a tick moves in a GPU entry (the rest is the recorded row, parsed once).
MOVING = ("util_pct", "mem_util_pct", "mem_used_bytes", "temp_c", "power_w", "throttle_reasons")
HEAT_TAU_S = 6.0  # how fast a GPU warms or cools towards its target (story seconds)


@dataclass(frozen=True)
class Story:
    """When things happen, in story seconds from the start (``NEVER``: not in this story)."""

    job_start: float = NEVER
    job_end: float = NEVER
    hot_node: int = 1  # node index (0-based) and GPU of the GPU that overheats
    hot_gpu: int = 3
    heat_start: float = NEVER  # it starts climbing 1.5 °C per second above its peers, ...
    heat_plateau_c: float = 16.0  # ... holds this far above them (WARNING) for ...
    heat_hold_s: float = 7.0  # ... this long, so that any poll rhythm sees the WARNING, ...
    heat_rise_c: float = 28.0  # ... then climbs on to this much above them until the job ends
    xid_node: int = 4  # the GPU that falls off the bus (Xid 79)
    xid_gpu: int = 4
    xid_at: float = NEVER
    down_node: int = 6  # the node that drops off the network, and when it returns
    down_from: float = NEVER
    down_until: float = NEVER
    length_s: float = 0.0  # the scripted part's length (nothing changes after it)

    @classmethod
    def demo(cls) -> Story:
        return cls(
            job_start=8.0,
            job_end=84.0,
            heat_start=18.0,
            xid_at=44.0,
            down_from=52.0,
            down_until=68.0,
            length_s=92.0,
        )

    @classmethod
    def steady(cls) -> Story:
        """Training from the start, forever, on healthy nodes."""
        return cls(job_start=-3600.0)

    def heat_above(self, t: float) -> float:
        """How far the hot GPU runs above its peers at ``t`` (while the job runs)."""
        climbed = 1.5 * max(0.0, t - self.heat_start)
        at_plateau = self.heat_plateau_c / 1.5
        if climbed <= self.heat_plateau_c:
            return climbed
        held = max(0.0, t - self.heat_start - at_plateau - self.heat_hold_s)
        return min(self.heat_rise_c, self.heat_plateau_c + 1.5 * held)

    def training(self, t: float) -> bool:
        return self.job_start <= t < self.job_end

    def beats(self) -> list[tuple[float, str]]:
        """The story's moments, in order, for the demo's narration line."""
        marks = [
            (self.job_start, f"training job {JOB_NAME} starts on every node"),
            (self.heat_start, "a GPU starts running hot"),
            (self.xid_at, "a GPU falls off the bus (Xid 79)"),
            (self.down_from, "a node drops off the network"),
            (self.down_until, "the node is back on the network"),
            (self.job_end, f"training job {JOB_NAME} ends"),
        ]
        return sorted((at, what) for at, what in marks if math.isfinite(at) and at >= 0)


def _wobble(seed: str, t: float, amplitude: float, period_s: float = 7.0) -> float:
    """A smooth, deterministic fluctuation of +-amplitude, different per ``seed``."""
    phase = (zlib.crc32(seed.encode()) % 1000) / 1000 * 2 * math.pi
    return amplitude * math.sin(2 * math.pi * t / period_s + phase)


def _approach(start: float, target: float, since_s: float) -> float:
    """First-order lag: where a value that set off from ``start`` towards ``target``
    ``since_s`` seconds ago is now."""
    return target + (start - target) * math.exp(-max(0.0, since_s) / HEAT_TAU_S)


class SimCluster:
    """``nodes`` simulated nodes of ``gpus`` H100s each, following ``story``.

    ``start`` is the wall-clock instant of story time 0 and ``speed`` how many story seconds
    pass per real second; ``clock`` is ``time.time`` (tests pass their own).
    """

    def __init__(
        self,
        names: Sequence[str],
        gpus: int = 8,
        story: Story | None = None,
        start: float | None = None,
        speed: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if speed <= 0 or not math.isfinite(speed):
            raise ValueError("speed must be a positive number")
        self.names = list(names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.gpus = gpus
        self.story = story or Story.steady()
        self.clock = clock
        self.start = clock() if start is None else start
        self.speed = speed

    def story_time(self, now: float | None = None) -> float:
        return ((self.clock() if now is None else now) - self.start) * self.speed

    def reachable(self, name: str, t: float | None = None) -> bool:
        t = self.story_time() if t is None else t
        story = self.story
        down = story.down_from <= t < story.down_until
        return not (down and self.index.get(name) == story.down_node)

    def node(self, name: str) -> SimNode:
        return SimNode(self, name, self.index.get(name, zlib.crc32(name.encode()) % 997))


class SimNode:
    """One simulated node: ``document(request)`` is the probe's sample document."""

    def __init__(self, cluster: SimCluster, name: str, index: int) -> None:
        self.cluster = cluster
        self.name = name
        self.i = index
        self.boot_uptime_s = 3 * 86400.0 + 3600.0 * (index % 24)  # at story time 0
        self.launcher_pid = LAUNCHER_PID + 97 * (index % 10_000)
        self._parsed: dict[tuple[int, bool], dict[str, Any]] = {}
        self._links = probe.parse_smi_nvlink(self._nvlink_text())  # links never change here

    # -- the document

    def document(self, req: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
        """The sample document for a normalised request (``probe.normalize_request``)."""
        now = self.cluster.clock() if now is None else now
        t = self.cluster.story_time(now)
        story = self.cluster.story
        training = story.training(t)
        errors: dict[str, str] = {}
        patterns = probe._compile_patterns(list(req.get("match", [])), errors)
        uptime = self.boot_uptime_s + t
        gpus, smi_problems = self._gpus(t, training)
        if smi_problems:
            errors["nvidia-smi"] = smi_problems[0]
        matched, descendants = self._matched(patterns, training)
        busy = 0.93 if training else 0.02
        cpu_util = round(100 * busy + _wobble(self.name + "cpu", t, 3.0 if training else 0.5), 1)
        mem_used = (1_400 if training else 160) * GIB + int(_wobble(self.name + "mem", t, 4) * GIB)
        return {
            "probe_version": 1,
            "ok": True,
            "hostname": self.name,
            "time": now,
            "python": "3.10.12",
            "kernel": "5.15.0-119-generic",
            "uptime_s": round(uptime, 1),
            "cpu": {
                "util_pct": max(0.0, min(100.0, cpu_util)),
                "cores": 224,
                "load1": round(224 * busy * 0.9, 2),
                "load5": round(224 * busy * 0.85, 2),
                "load15": round(224 * busy * 0.8, 2),
                "window_s": 1.0,
            },
            "memory": {
                "total_bytes": 2048 * GIB,
                "used_bytes": mem_used,
                "util_pct": round(100 * mem_used / (2048 * GIB), 1),
                "swap_total_bytes": 0,
                "swap_used_bytes": 0,
                "swap_util_pct": None,
            },
            "disks": [self._disk(mount, t) for mount in req.get("mounts", ["/"])],
            "network": self._network(t, training),
            "processes": {"count": 1_830 + (9 if training else 0), "zombies": 0},
            "matched_processes": matched,
            "matched_descendants": descendants,
            "xids": self._xids(t),
            "gpu_info": {"source": "nvidia-smi", **recorded.versions()},
            "gpus": gpus,
            "errors": errors,
        }

    def _disk(self, mount: str, t: float) -> dict[str, Any]:
        total = 3_840 * 10**9 if mount == "/" else 30 * 10**12
        used = int(total * (0.41 + 0.0001 * (self.i % 7)))
        return {
            "mount": mount,
            "total_bytes": total,
            "used_bytes": used,
            "avail_bytes": total - used,
            "mounted": True,
            "error": None,
        }

    def _network(self, t: float, training: bool) -> list[dict[str, Any]]:
        out = []
        for iface, rate in (("eth0", 2e6), *((f"ibp{k}s0", 11e9) for k in range(4))):
            busy = rate if training or iface == "eth0" else rate / 1000
            value = max(0.0, busy + _wobble(self.name + iface, t, busy * 0.05))
            out.append(
                {
                    "iface": iface,
                    "rx_bytes_per_s": round(value, 1),
                    "tx_bytes_per_s": round(value * 0.98, 1),
                    "rx_errors_per_s": 0.0,
                    "tx_errors_per_s": 0.0,
                    "rx_errors": 0,
                    "tx_errors": 0,
                }
            )
        return out

    # -- processes of the training job (the probe's own matching rules)

    def _processes(self, training: bool) -> dict[int, tuple[int, str]]:
        """pid -> (ppid, command line) of the job's processes on this node."""
        if not training:
            return {}
        procs = {
            self.launcher_pid: (
                1,
                f"torchrun --nnodes {len(self.cluster.names)} --nproc_per_node {self.cluster.gpus}"
                f" --rdzv_endpoint {self.cluster.names[0]}:29500 train.py --config llama-8b.yaml",
            )
        }
        for rank in range(self.cluster.gpus):
            procs[self.launcher_pid + 1 + rank] = (
                self.launcher_pid,
                f"/usr/bin/python3 -u train.py --config llama-8b.yaml --local-rank={rank}",
            )
        return procs

    def _matched(
        self, patterns: list[tuple[str, Any]], training: bool
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        procs = self._processes(training)
        matched: list[dict[str, Any]] = []
        for pid, (ppid, cmdline) in procs.items():
            probe._add_match(matched, pid, ppid, cmdline, patterns)
        parents = {pid: ppid for pid, (ppid, _) in procs.items()}
        descendants = probe._descendants(
            matched, parents, set(), lambda pid: procs[pid][1] if pid in procs else None
        )
        return matched, descendants

    # -- GPUs, as nvidia-smi shows them

    def _gpus(self, t: float, training: bool) -> tuple[list[dict[str, Any]], list[str]]:
        rows: list[dict[str, Any]] = []
        problems = []
        story = self.cluster.story
        for g in range(self.cluster.gpus):
            if self.i == story.xid_node and g == story.xid_gpu and t >= story.xid_at:
                # What nvidia-smi prints for a GPU that fell off the bus: no row, one line.
                problems.append(
                    "Unable to determine the device handle for GPU"
                    f"{recorded.bus_id(g)[4:]}: Unknown Error"
                )
                continue
            rows.append(self._gpu(g, t, training))
        apps = probe.parse_smi_apps(self._apps_text(t, training))
        links = self._links
        for gpu in rows:
            # The job's processes are alive, as the probe checks of each GPU process's pid.
            gpu["processes"] = [dict(p, alive=True) for p in apps.get(gpu["uuid"] or "", [])]
            state = links.get(gpu["index"])
            if state is not None:
                gpu["nvlink_active"], gpu["nvlink_total"] = state
        return rows, problems

    def uuid(self, gpu: int) -> str:
        digest = f"{zlib.crc32(f'{self.name}/{gpu}'.encode()):08x}"
        return f"GPU-{digest}-5a1e-4d3c-9b7e-{self.i:06x}{gpu:06x}"

    def temperature(self, gpu: int, t: float) -> float:
        """The GPU's temperature at story time ``t``: idle or loaded, lagging behind the job's
        start and end; the story's hot GPU climbs above its peers while the job runs."""
        story = self.cluster.story
        idle = recorded.idle_values()["temperature.gpu"] - 6 + (gpu % 3)
        loaded = recorded.load_values()["temperature.gpu"] + 4 + (gpu % 4)
        if t < story.job_start:
            temp = idle
        elif t < story.job_end:
            temp = _approach(idle, loaded, t - story.job_start)
        else:
            at_end = _approach(idle, loaded, story.job_end - story.job_start)
            temp = _approach(at_end, idle, t - story.job_end)
        hot = self.i == story.hot_node and gpu == story.hot_gpu
        if hot and t >= story.heat_start:
            cooling = 1.0 if t < story.job_end else math.exp(-(t - story.job_end) / 4)
            temp += story.heat_above(min(t, story.job_end)) * cooling
        return round(temp + _wobble(f"{self.name}/{gpu}/temp", t, 0.6), 0)

    def _gpu(self, g: int, t: float, training: bool) -> dict[str, Any]:
        """GPU ``g`` as the probe reads nvidia-smi's row: the recorded row (with this GPU's
        identity) is parsed once; each tick parses only the cells the story moves."""
        key = (g, training)
        base = self._parsed.get(key)
        if base is None:
            row = dict(recorded.gpu_row("load" if training else "idle"))
            row.update({"index": str(g), "uuid": self.uuid(g), "pci.bus_id": recorded.bus_id(g)})
            base = self._parsed[key] = probe.smi_row_to_gpu(row)
        gpu = dict(base)
        moved = probe.smi_row_to_gpu(self._moving_cells(g, t, training))
        gpu.update({k: moved[k] for k in MOVING})
        return gpu

    def _moving_cells(self, g: int, t: float, training: bool) -> dict[str, str]:
        """The cells the story moves, in the recording's format (units included)."""
        load, idle = recorded.load_values(), recorded.idle_values()
        temp = self.temperature(g, t)
        seed = f"{self.name}/{g}"
        if training:
            util = min(100.0, 97 + _wobble(seed + "util", t, 3))
            mem_util = 38 + _wobble(seed + "mu", t, 6)
            mem_used = 71_000.0 + (g % 3) * 512
            power = 640 + _wobble(seed + "power", t, 35)
        else:
            util, mem_util = idle["utilization.gpu"], idle["utilization.memory"]
            mem_used = idle["memory.used"]
            power = idle["power.draw"] + _wobble(seed + "power", t, 2)
        active = 0
        if temp >= 87:  # the driver's slowdown: clocks cut, power and utilisation follow
            active |= 0x40  # hw_thermal_slowdown
            power *= 0.62
            util *= 0.7
        if temp >= 83:
            active |= 0x20  # sw_thermal_slowdown
        return {
            "utilization.gpu": f"{util:.0f} %",
            "utilization.memory": f"{mem_util:.0f} %",
            "memory.used": f"{mem_used:.0f} MiB",
            "temperature.gpu": f"{temp:.0f}",
            "power.draw": f"{min(power, load['power.limit']):.2f} W",
            "clocks_event_reasons.active": f"0x{active:016X}",
        }

    def _apps_text(self, t: float, training: bool) -> str:
        lines = [recorded.apps_header()]
        if training:
            wall = self.cluster.start + t / self.cluster.speed
            stamp = time.strftime("%Y/%m/%d %H:%M:%S.000", time.gmtime(wall))
            for g in range(self.cluster.gpus):
                lines.append(
                    f"{stamp}, NVIDIA H100 80GB HBM3, {recorded.bus_id(g)}, 0000000000000, "
                    f"{self.uuid(g)}, {self.launcher_pid + 1 + g}, /usr/bin/python3, "
                    f"{70_400 + (g % 3) * 512} MiB"
                )
        return "\n".join(lines) + "\n"

    def _nvlink_text(self) -> str:
        speed = recorded.nvlink_speed()
        lines = []
        for g in range(self.cluster.gpus):
            lines.append(f"GPU {g}: NVIDIA H100 80GB HBM3 (UUID: {self.uuid(g)})")
            lines.extend(f"\t Link {k}: {speed}" for k in range(18))
        return "\n".join(lines) + "\n"

    # -- the kernel log

    def _xids(self, t: float) -> list[dict[str, Any]]:
        story = self.cluster.story
        if self.i != story.xid_node or t < story.xid_at:
            return []
        line = recorded.xid_line(story.xid_gpu, self.boot_uptime_s + story.xid_at)
        return probe.parse_xid_lines(line)
