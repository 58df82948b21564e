"""Flapping: raw raise/clear transitions against the notifications the alert lifecycle queues.

One node, polled every 5 s (``watch`` with an active job) for ``--minutes``, in each scenario:

- its link flaps at every poll (down, up, down...), or every 2 polls, or drops 50 % of the polls
  at random;
- a GPU's temperature hovers around the warning threshold (80 °C), or around the critical one
  (85 °C: CRITICAL and WARNING take turns), Gaussian noise of 1 °C, half the polls above.

Each poll is a ``NodeReport`` built as ``collect`` builds it: a real ``NodeSample`` judged by
``engine.scoring.judge``, or ``engine.collect.failed_report`` for a node that timed out. It goes
through ``engine.alerting.Alerting.change()`` inside a real ``StateStore`` write, so the real
lifecycle (``engine.lifecycle.advance``, default ``alerts:`` rules) decides and the real routing
queues into a webhook channel's on-disk outbox; the clock is a fake one (plain floats).

Raw transitions: every alert raised or cleared from one poll to the next, as ``watch``'s event
stream shows them. Notifications: what the outbox received (one per cycle that had something to
tell). Then the node is left stable and healthy for ``flap_window`` + 5 minutes, and the
notifications that settle it (its resolution) are counted apart. The random scenarios run over
``--seeds`` seeds; the table gives the median and the worst seed.

Target: at least 90 % fewer notifications than raw transitions over the flapping minutes.

Rerun: ``python benchmarks/bench_flapping.py [--minutes 10] [--seeds 20] [--write-docs]``
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _docs import write_section

from ugro_health.config import Config, NodeConfig, Thresholds
from ugro_health.config_notify import ChannelConfig, NotifySettings
from ugro_health.engine.alerting import Alerting
from ugro_health.engine.collect import failed_report
from ugro_health.engine.scoring import judge
from ugro_health.model import ErrorKind, GpuSample, NodeError, NodeReport, NodeSample
from ugro_health.store.state import StateStore

SECTION = "## alert flapping"
POLL_S = 5.0
T0 = 1_800_000_000.0
TARGET_PCT = 90.0
GIB = 1 << 30
NODE = NodeConfig(name="gpu1", gpus=1)
HOOK = ChannelConfig(name="hook", type="webhook", options={"url": "http://127.0.0.1:9/"})

# poll index, random source -> (node down?, GPU temperature)
Scenario = Callable[[int, random.Random], tuple[bool, float]]
SCENARIOS: dict[str, tuple[Scenario, bool]] = {  # name -> (scenario, random?)
    "link flaps at every poll": (lambda i, r: (i % 2 == 0, 60.0), False),
    "link flaps every 2 polls": (lambda i, r: ((i // 2) % 2 == 0, 60.0), False),
    "link drops 50 % of polls at random": (lambda i, r: (r.random() < 0.5, 60.0), True),
    "GPU temp hovers at 80 °C (warning)": (lambda i, r: (False, 80.0 + r.gauss(0, 1)), True),
    "GPU temp hovers at 85 °C (critical)": (lambda i, r: (False, 85.0 + r.gauss(0, 1)), True),
}


@dataclass(frozen=True, slots=True)
class Count:
    transitions: int  # raw raises and clears while flapping
    notifications: int  # queued while flapping
    settled: int  # notifications queued once it was stable again

    @property
    def fewer_pct(self) -> float:
        return 100.0 * (1 - self.notifications / self.transitions) if self.transitions else 0.0


def node_report(down: bool, temp_c: float, now: float) -> NodeReport:
    if down:
        return failed_report("gpu1", NodeError(ErrorKind.TIMEOUT, "connect timed out"), now, 0.0)
    gpu = GpuSample(
        index=0,
        name="NVIDIA H100 80GB HBM3",
        util_pct=95.0,
        temp_c=temp_c,
        mem_used_bytes=40 * GIB,
        mem_total_bytes=80 * GIB,
        power_w=500.0,
        power_limit_w=700.0,
        ecc_uncorrected_volatile=0,
        remapped_rows_failed=0,
    )
    sample = NodeSample(
        hostname="gpu1",
        cpu_cores=64,
        load1=10.0,
        mem_total_bytes=512 * GIB,
        mem_used_bytes=100 * GIB,
        gpus=(gpu,),
    )
    verdict = judge(sample, NODE, Thresholds())
    return NodeReport(
        "gpu1", verdict.status, verdict.score, now, 0.2, sample=sample, alerts=verdict.alerts
    )


def run(scenario: Scenario, seed: int, minutes: float) -> Count:
    config = Config(nodes=(NODE,), notify=NotifySettings(cluster="bench", channels=(HOOK,)))
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        store, alerting = StateStore(Path(tmp)), Alerting(Path(tmp), config, lambda: T0)
        before: set[tuple[str, int | None, str | None]] = set()
        transitions = queued = 0
        polls = int(minutes * 60 / POLL_S)
        settle = int((config.alerts.flap_window_s + 300) / POLL_S)
        for i in range(polls + settle):
            now = T0 + i * POLL_S
            down, temp = scenario(i, rng) if i < polls else (False, 60.0)
            report = node_report(down, temp, now)
            after = {a.key for a in report.alerts}
            if i < polls:
                transitions += len(after ^ before)
            before = after
            store.update(alerting.change([report], now))
            queued += alerting.queued
            if i == polls - 1:
                flapping = queued
        return Count(transitions, flapping, queued - flapping)


Row = tuple[float, str, Count, Count, bool]  # minutes, scenario, median, worst, random?


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    rows: list[Row] = []
    for minutes in args.minutes:
        for name, (scenario, is_random) in SCENARIOS.items():
            seeds = range(1, 1 + (args.seeds if is_random else 1))
            counts = sorted((run(scenario, s, minutes) for s in seeds), key=lambda c: c.fewer_pct)
            rows.append((minutes, name, counts[len(counts) // 2], counts[0], is_random))
    body = _table(rows, args)
    print("\n".join(body))
    if args.write_docs:
        write_section(SECTION, body)


def _table(rows: list[Row], args: argparse.Namespace) -> list[str]:
    durations = " ".join(f"{m:g}" for m in args.minutes)
    out = [
        f"One node polled every {POLL_S:.0f} s for the minutes shown, through the real "
        "lifecycle and routing into a webhook outbox (`Alerting.change()` in a `StateStore` "
        "write), default `alerts:` rules: CRITICAL at once, WARNING after 2 polls, resolved "
        "after 3 clean ones, flapping above 4 changes in 30 minutes, repeated every 4 h. "
        f"Random scenarios: the median seed, in brackets the worst of {args.seeds} seeds. "
        f"Measured {time.strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}.",
        "",
        f"Rerun: `python benchmarks/bench_flapping.py --minutes {durations} --seeds {args.seeds}"
        " --write-docs`",
        "",
        "| Minutes | Scenario | raw raise/clear transitions | notifications queued | fewer "
        f"| target >= {TARGET_PCT:.0f} % | then stable: settling notifications |",
        "|---|---|---|---|---|---|---|",
    ]
    for minutes, name, median, worst, is_random in rows:
        cells = [
            f"{median.transitions}",
            f"{median.notifications}",
            f"{median.fewer_pct:.1f} %",
            _verdict(median),
            f"{median.settled}",
        ]
        if is_random:
            cells[0] += f" ({worst.transitions})"
            cells[1] += f" ({worst.notifications})"
            cells[2] += f" ({worst.fewer_pct:.1f} %)"
            cells[3] += f" ({_verdict(worst)})"
            cells[4] += f" ({worst.settled})"
        out.append(f"| {minutes:g} | {name} | {' | '.join(cells)} |")
    return [*out, "", *READING]


READING = [
    "How to read it:",
    "- Raw transitions are what `watch`'s event stream shows: every alert raised or cleared "
    "from one poll to the next (around 85 °C, CRITICAL and WARNING trade places: two per "
    "crossing). Notifications are what the outbox received while the node flapped; the last "
    "column is what settled it afterwards (its resolution, once the changes left the "
    "30-minute flap window), counted apart.",
    "- Until an alert has changed more than `flap_changes` (4) times it is told like any "
    "other: each firing and each resolution (3 clean polls) is a notification; then one "
    "'flapping' notification and nothing more. So a handful of notifications at most per "
    "alert, whatever the length.",
    "- The defaults were chosen with this benchmark. With `resolve_after: 2` and "
    "`flap_changes: 6` (the first draft), a link down for 2 polls and up for 2 gave a firing "
    "and a resolution per cycle until the flapping verdict: 8 notifications for 60 "
    "transitions over 10 minutes (86.7 %, missed), and random loss or a temperature at a "
    "threshold missed 90 % on some seeds. Now the worst remaining case is a temperature "
    "hovering at the warning threshold on an unlucky seed over 10 minutes (87.2 %); every "
    "scenario and seed meets it over 30 minutes.",
    "- A WARNING that blinks on and off at every other poll never holds for its 2 polls: it "
    "never fires and is not told, not even as flapping.",
]


def _verdict(count: Count) -> str:
    return "met" if count.fewer_pct >= TARGET_PCT else "**missed**"


if __name__ == "__main__":
    main()
