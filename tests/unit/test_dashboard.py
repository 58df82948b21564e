"""The watch dashboard read back from a fixed-width, colourless console."""

from __future__ import annotations

import io
from dataclasses import replace

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
    # recent events, newest first
    alerts = text[text.index("recent events") :]
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


def test_eight_gpus_a_node_show_each_metric_as_a_range_and_the_row_fits():
    # 8 GPUs listed one by one would be 3 x 31 characters: at 128 columns Rich would squeeze
    # NODE and STATUS to "NO…" and "STA…". A range still shows the one GPU out of line.
    temps = (62, 64, 95, 63, 66, 63, 65, 64)
    gpus = tuple(
        GpuSample(
            index=i,
            util_pct=100.0 if i else 70.0,
            mem_used_bytes=70 * GIB,
            mem_total_bytes=80 * GIB,
            temp_c=float(t),
            power_w=640.0,
        )
        for i, t in enumerate(temps)
    )
    sample = NodeSample(cpu_util_pct=90.0, mem_util_pct=68.0, gpus=gpus)
    report = NodeReport("sim02", Status.CRITICAL, 78, NOW - 1, 0.02, sample=sample)
    rows = [("sim02", NodeRow(report, age_s=1))]
    text = render(replace(view(), rows=rows, alerts=()), 128)
    assert all(len(line) <= 128 for line in text.splitlines())
    row = line_of(text, "sim02")
    assert row.split()[:3] == ["sim02", "CRITICAL", "78"]
    for cell in ("70–100%", "88%", "62–95°", "5120W"):
        assert cell in row.split(), (cell, row)
    header = text.splitlines()[1].split()
    assert header[:3] == ["NODE", "STATUS", "SCORE"] and "BREAKER" in header


def test_no_alerts_panel_says_so():
    empty = WatchView(now=NOW, rows=[], interval_s=40, next_poll_in_s=40, last_cycle_s=None)
    text = render(empty, 100)
    assert "no alerts" in text and "cycle —" in text.splitlines()[0]


def test_active_alerts_are_apart_from_history_with_severity_words_and_cleared_marked():
    base = view()
    cleared = TimedAlert(
        NOW - 60,
        "gpu1",
        Alert(Severity.WARNING, "mem_warning", "memory 91% used"),
        kind="cleared",
    )
    raised = TimedAlert(NOW - 300, "gpu1", cleared.alert)
    rows = list(base.rows)
    down = rows[2][1]
    isolated = Alert(Severity.CRITICAL, "node_unreachable", "unreachable (skipped): isolated")
    assert down.report is not None
    rows[2] = ("gpu3", replace(down, report=replace(down.report, alerts=(isolated,))))
    text = render(replace(base, rows=rows, alerts=[raised, *base.alerts, cleared]), 160)
    active = text[text.index("active alerts") : text.index("recent events")]
    events = text[text.index("recent events") :]
    # Active: the latest reports' alerts, worst first, the severity as a word.
    assert "WARNING  gpu2: GPU 1: temperature 81 °C" in active
    assert "memory 91%" not in active  # it cleared: history only
    assert "CRITICAL gpu3: unreachable (skipped): isolated" in active
    assert active.index("CRITICAL") < active.index("WARNING")
    cleared_line = next(line for line in events.splitlines() if "1m ago" in line)
    assert "WARNING  gpu1: cleared: memory 91% used" in cleared_line
    raised_line = next(line for line in events.splitlines() if "5m ago" in line)
    assert "gpu1: memory 91% used" in raised_line and "cleared" not in raised_line


def test_header_does_not_claim_an_interval_before_the_first_round():
    text = render(replace(view(), interval_s=None), 120)
    header = text.splitlines()[0]
    assert "every" not in header and "first poll in progress" in header


def test_header_says_stopping_while_the_poll_in_flight_finishes():
    header = render(replace(view(), stopping=True), 120).splitlines()[0]
    assert "stopping" in header and "every" not in header


@pytest.mark.parametrize("width", [80, 160])
def test_breaker_back_off_after_a_recovery_is_shown_at_any_width(width: int):
    base = view()
    rows = list(base.rows)
    rows[0] = ("gpu1", replace(rows[0][1], backoff_s=120.0))
    text = render(replace(base, rows=rows), width)
    if width >= 90:
        assert "closed, back-off 2m" in line_of(text, "gpu1")
    else:
        assert "breaker gpu1: closed, back-off 2m" in text
        assert "breaker gpu3: open, retry 42s" in text
    assert all(len(line) <= width for line in text.splitlines())


def test_an_unreadable_kernel_log_is_a_note_under_the_table_not_an_alert():
    base = view()
    denied = {"xid": "dmesg: read kernel buffer failed: Operation not permitted"}
    name, row = base.rows[0]
    assert row.report is not None and row.report.sample is not None
    sample = replace(row.report.sample, errors=denied)
    rows = [(name, replace(row, report=replace(row.report, sample=sample))), *base.rows[1:]]
    text = " ".join(render(replace(base, rows=rows), 120).split())
    assert text.count("XID errors are not checked on gpu1:") == 1
    assert "`adm` group" in text and "kernel.dmesg_restrict=0" in text
    assert "not checked" not in render(base, 120)
