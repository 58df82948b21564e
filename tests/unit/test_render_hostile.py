"""Text a node sent is shown, never obeyed: no escape sequences, no line breaks, no Rich markup."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from ugro_health.config import Thresholds
from ugro_health.engine.monitor import AlertEvent
from ugro_health.model import (
    Alert,
    ClusterReport,
    GpuSample,
    NodeReport,
    NodeSample,
    Severity,
    Status,
)
from ugro_health.render.dashboard import NodeRow, TimedAlert, WatchView, dashboard
from ugro_health.render.nagios import nagios_line
from ugro_health.render.status import history_table, status_table
from ugro_health.render.table import check_table

EVIL = "boom\x1b[31m red\x1b[0m\nFAKE LINE\r\x07 [red]x[/red] a|b"
SHOWN = "boom\\x1b[31m red\\x1b[0m\\x0aFAKE LINE\\x0d\\x07 [red]x[/red] a|b"
NAME = "[red]n1[/red]"


def to_terminal(renderable) -> str:
    """Rendered as on a colour terminal: Rich's own style codes, none of the node's."""
    out = io.StringIO()
    Console(width=200, file=out, color_system="truecolor", force_terminal=True).print(renderable)
    text = out.getvalue()
    for injected in ("\x1b[31m red", "\x1b]0;", "\x1b[2J", "\r", "\x07"):
        assert injected not in text
    return text


def plain(renderable) -> str:
    console = Console(width=200, color_system=None, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def hostile_report() -> ClusterReport:
    gpu = GpuSample(index=0, name="NVIDIA \x1b]0;pwned\x07H100", temp_c=60.0)
    node = NodeReport(
        NAME,
        Status.WARNING,
        80,
        1000.0,
        0.1,
        sample=NodeSample(gpus=(gpu,)),
        alerts=(Alert(Severity.WARNING, "probe_partial", EVIL),),
    )
    return ClusterReport(generated_at=1000.0, nodes=(node,), duration_s=0.1)


def test_printable_escapes_controls_and_keeps_the_rest():
    from ugro_health.render.common import printable

    assert printable(EVIL) == SHOWN
    assert printable("GPU 1: 82 °C ✓ 日本") == "GPU 1: 82 °C ✓ 日本"
    assert printable("\u202eevil\x9b") == "\\u202eevil\\x9b"


def check_shown(renderable) -> None:
    to_terminal(renderable)
    text = plain(renderable)
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert SHOWN in text  # whole, on one line, markup shown as typed
    assert NAME in text


def test_check_table_neutralises_node_text():
    check_shown(check_table(hostile_report()))
    assert "\\x1b]0;pwned\\x07H100" in plain(check_table(hostile_report()))


def test_status_table_neutralises_node_text():
    node = {
        "name": NAME,
        "status": "warning",
        "score": 80,
        "reachable": True,
        "alerts": [{"severity": "warning", "code": "x", "message": EVIL}],
        "summary": {},
        "polled_at": 1000.0,
        "age_s": 5.0,
        "stale": False,
    }
    check_shown(status_table([node], "WARNING"))


def test_dashboard_neutralises_node_text():
    report = hostile_report().nodes[0]
    view = WatchView(
        now=1010.0,
        rows=[(NAME, NodeRow(report)), ("[blink]pending[/blink]", NodeRow(None))],
        interval_s=5.0,
        next_poll_in_s=2.0,
        last_cycle_s=0.1,
        active_jobs=("[bold]job\x1b[2J",),
        alerts=[TimedAlert(1000.0, NAME, report.alerts[0])],
    )
    check_shown(dashboard(view, 200))
    text = plain(dashboard(view, 200))
    assert "[blink]pending[/blink]" in text and "[bold]job\\x1b[2J" in text


def test_history_table_shows_stored_names_as_typed():
    summary = {
        "node": NAME + "\x1b[2J",
        "unit": "°C",
        "series": [],
        "alerts": {"by_code": {"[red]code": 2}},
    }
    text = plain(history_table([summary], "gpu_temp, last 1h"))
    assert NAME + "\\x1b[2J" in text and "[red]code×2" in text
    assert "\x1b" not in text


def test_nagios_line_stays_one_line_with_one_perfdata_bar():
    line = nagios_line(hostile_report(), Thresholds())
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x07" not in line
    head, perf = line.split(" | ")  # the node's "|" must not start a second perfdata section
    assert SHOWN.replace("|", "/") in head
    assert perf.split()[3] == "'[red]n1[/red]_score'=80;70:;;0;100"


@pytest.mark.parametrize("kind", ["raised", "cleared"])
def test_headless_alert_log_line_is_one_printable_line(kind: str):
    from ugro_health.cli.watch import event_line

    alert = Alert(Severity.CRITICAL, "gpu_xid\x1b[1m", EVIL)
    line = event_line(AlertEvent(1764363000.0, "gpu\n1", alert, kind))
    word = "ALERT" if kind == "raised" else "CLEARED"
    assert line == f"2025-11-28T20:50:00Z {word} CRITICAL gpu\\x0a1 gpu_xid\\x1b[1m: {SHOWN}"
