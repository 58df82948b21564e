"""The watch dashboard read back from a fixed-width, colourless console."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from ugro_health.model import (
    Alert,
    ErrorKind,
    GpuSample,
    NetSample,
    NodeError,
    NodeReport,
    NodeSample,
    Severity,
    Status,
)
from ugro_health.render.dashboard import NodeRow, TimedAlert, WatchView, dashboard

GIB = 1 << 30
NOW = 1_800_000_000.0


def render(view: WatchView, width: int) -> str:
    console = Console(width=width, color_system=None, record=True, file=io.StringIO())
    console.print(dashboard(view, width))
    return console.export_text()


def view() -> WatchView:
    gpus = tuple(
        GpuSample(
            index=i,
            util_pct=97.0 - i,
            mem_used_bytes=40 * GIB,
            mem_total_bytes=80 * GIB,
            temp_c=70.0 + i,
            power_w=600.0,
        )
        for i in range(2)
    )
    sample = NodeSample(
        cpu_util_pct=35.0,
        mem_util_pct=50.0,
        gpus=gpus,
        net=(NetSample("ib0", rx_bytes_per_s=3 * 1024**3, tx_bytes_per_s=2048),),
    )
    ok = NodeReport("gpu1", Status.OK, 96, NOW - 3, 0.02, sample=sample)
    hot = NodeReport(
        "gpu2",
        Status.WARNING,
        71,
        NOW - 3,
        0.02,
        sample=sample,
        alerts=(Alert(Severity.WARNING, "gpu_temp_warning", "GPU 1: temperature 81 °C", 81.0, 1),),
    )
    down = NodeReport(
        "gpu3", Status.CRITICAL, None, NOW - 95, 2.0, error=NodeError(ErrorKind.SKIPPED, "isolated")
    )
    alerts = [
        TimedAlert(
            NOW - 120,
            "gpu3",
            Alert(Severity.CRITICAL, "node_isolated", "node isolated after 3 consecutive failures"),
        ),
        TimedAlert(NOW - 3, "gpu2", hot.alerts[0]),
    ]
    rows = [
        ("gpu1", NodeRow(ok, age_s=3)),
        ("gpu2", NodeRow(hot, age_s=3)),
        ("gpu3", NodeRow(down, breaker="open", retry_in_s=42, age_s=95)),
        ("gpu4", NodeRow(None)),
    ]
    return WatchView(
        now=NOW,
        rows=rows,
        interval_s=5,
        next_poll_in_s=2.4,
        last_cycle_s=0.083,
        active_jobs=["llama"],
        alerts=alerts,
    )


def line_of(text: str, node: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(node))


def test_wide_dashboard_shows_everything():
    text = render(view(), 160)
    header = text.splitlines()[0]
    assert "1 ok" in header and "1 warning" in header and "1 critical" in header
    assert "1 unreachable" in header and "jobs: llama" in header
    assert "every 5s, next 2s, cycle 0.08s" in header
    gpu1 = line_of(text, "gpu1")
    for cell in (
        "OK",
        "96",
        "97% 96%",
        "50% 50%",
        "70° 71°",
        "1200W",
        "35%",
        "3G↓ 2K↑",
        "closed",
        "3s",
    ):
        assert cell in gpu1, cell
    gpu3 = line_of(text, "gpu3")
    assert "UNREACHABLE" in gpu3 and "open, retry 42s" in gpu3 and "2m" in gpu3
    assert "pending" in line_of(text, "gpu4")
    # latest alerts first
    alerts = text[text.index("latest alerts") :]
    assert alerts.index("gpu2: GPU 1: temperature 81 °C") < alerts.index("gpu3: node isolated")
    assert "2m ago" in alerts


@pytest.mark.parametrize("width", [100, 80, 60])
def test_narrow_dashboard_drops_columns_but_keeps_the_essentials(width: int):
    text = render(view(), width)
    assert all(len(line) <= width for line in text.splitlines())
    for node in ("gpu1", "gpu2", "gpu3", "gpu4"):
        row = line_of(text, node)
        assert row.split()[0] == node
    assert "WARNING" in line_of(text, "gpu2")
    if width < 110:
        assert "NET" not in text.splitlines()[1]
    if width < 90:
        assert "BREAKER" not in text


def test_no_alerts_panel_says_so():
    empty = WatchView(now=NOW, rows=[], interval_s=40, next_poll_in_s=40, last_cycle_s=None)
    text = render(empty, 100)
    assert "no alerts" in text and "cycle —" in text.splitlines()[0]
