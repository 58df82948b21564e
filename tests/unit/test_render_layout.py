"""The ``status`` and ``check`` tables at the widths people use: nothing cut, nothing mid-word."""

from __future__ import annotations

import pytest
from test_render import render, report

from ugro_health.render.status import status_table
from ugro_health.render.table import check_table

ALERT = "unreachable (refused): connection refused during TCP connect to 10.0.0.12:22"


def node(name: str, status: str, alerts: tuple[str, ...] = (), **summary: float) -> dict:
    return {
        "name": name,
        "status": status,
        "score": None if alerts else 97,
        "reachable": not alerts,
        "alerts": [{"severity": "critical", "code": "x", "message": m} for m in alerts],
        "summary": summary,
        "polled_at": 1000.0,
        "age_s": 754.0,
        "stale": True,
    }


NODES = [
    node("gpu-master-01", "ok", gpu_temp=66, gpu_util=90, cpu=12, mem=42, disk=55),
    node("gpu-worker-17", "critical", (ALERT, "GPU 3: temperature 91 °C")),
]
FOOTER = "CRITICAL  2 nodes, 2 stale (older than 600s)"


def lines_at(width: int, renderable=None) -> list[str]:
    text = render(status_table(NODES, FOOTER) if renderable is None else renderable, width)
    lines = [line.rstrip() for line in text.splitlines()]
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    return lines


@pytest.mark.parametrize("width", [60, 80, 120])
def test_status_table_keeps_names_status_age_and_whole_words(width: int):
    lines = lines_at(width)
    text = "\n".join(lines)
    assert "…" not in text
    master = next(line for line in lines if line.startswith("gpu-master-01 "))
    worker = next(line for line in lines if line.startswith("gpu-worker-17 "))
    assert master.split()[1] == "OK" and master.endswith("13m STALE")
    assert worker.split()[1] == "UNREACHABLE" and "13m STALE" in worker
    # Every word of every alert is shown whole (wrapped between words, never inside one).
    words = text.split()
    for message in (ALERT, "GPU 3: temperature 91 °C"):
        assert all(word in words for word in message.split()), text


def test_status_table_at_120_has_an_alerts_column():
    lines = lines_at(120)
    assert lines[0].split()[-1] == "ALERTS"
    worker = next(line for line in lines if line.startswith("gpu-worker-17 "))
    assert worker.endswith("13m STALE  unreachable (refused): connection")


@pytest.mark.parametrize("width", [60, 80])
def test_narrow_status_table_puts_alerts_under_their_node(width: int):
    lines = lines_at(width)
    assert "ALERTS" not in lines[0] and "ALERTS" not in lines[1]
    at = next(i for i, line in enumerate(lines) if line.startswith("gpu-worker-17 "))
    assert lines[at + 1].startswith("  unreachable (refused): connection refused")
    assert "  GPU 3: temperature 91 °C" in lines


def test_status_table_drops_low_value_columns_first():
    assert lines_at(80)[0].split() == [
        "NODE",
        "STATUS",
        "SCORE",
        "GPU",
        "TEMP",
        "GPU",
        "UTIL",
        "CPU",
        "MEM",
        "DISK",
        "AGE",
    ]
    header = lines_at(60)[0]
    assert header.startswith("NODE") and header.endswith("AGE")
    assert "CPU" not in header and "STATUS" in header and "SCORE" in header


@pytest.mark.parametrize("width", [60, 80, 120])
def test_check_table_keeps_alerts_readable(width: int):
    lines = lines_at(width, check_table(report()))
    text = "\n".join(lines)
    assert "…" not in text
    assert "unreachable (refused): connection refused" in text  # never folded mid-word
    assert "GPU 1: temperature 82 °C" in text
    gpu2 = next(line for line in lines if line.startswith("gpu2 "))
    assert gpu2.split()[1] == "UNREACHABLE"


LONG = (
    'reached, but the probe failed: Traceback (most recent call last): File "<string>", '
    "line 1, in <module> ModuleNotFoundError: No module named 'encodings'; the node's python3 "
    "is broken (PYTHONHOME points at a removed virtualenv), so nothing could be measured there"
)


def test_a_long_alert_goes_under_its_node_instead_of_a_tall_column():
    from dataclasses import replace

    from ugro_health.model import Alert, Severity

    base = report()
    broken = replace(base.nodes[2], alerts=(Alert(Severity.CRITICAL, "probe_failed", LONG),))
    checked = replace(base, nodes=(*base.nodes[:2], broken))
    # check at 80 columns (room for a 30-odd column ALERTS), status at 120 (about 40)
    for lines, width in (
        (lines_at(80, check_table(checked)), 80),
        (lines_at(120, status_table([NODES[0], node("gpu2", "critical", (LONG,))], FOOTER)), 120),
    ):
        assert "ALERTS" not in lines[0]
        at = next(i for i, line in enumerate(lines) if line.startswith("gpu2 "))
        assert lines[at + 1].startswith("  reached, but the probe failed: Traceback")
        under = [line for line in lines if line.startswith("  ")]
        assert len(under) <= len(LONG) // (width - 2) + 1 + 1  # GPU 1's alert in the check


@pytest.mark.parametrize("width", [60, 120])
def test_piped_tables_have_no_trailing_spaces(width: int):
    for renderable in (status_table(NODES, FOOTER), check_table(report())):
        text = render(renderable, width)
        assert text.strip() and all(line == line.rstrip() for line in text.splitlines()), text
