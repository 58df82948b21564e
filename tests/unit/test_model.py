"""What the model accepts from a probe document: finite numbers, printable text."""

from __future__ import annotations

import pytest

from ugro_health.model import NodeSample, as_float, printable


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), (2.5, 2.5), (True, None), ("7", None), (float("nan"), None), (float("inf"), None)],
)
def test_as_float_takes_finite_numbers_only(value: object, expected: float | None) -> None:
    assert as_float(value) == expected


def test_printable_escapes_c0_and_c1_controls_and_keeps_the_rest() -> None:
    assert printable("a\x1b[31mb\nc\x9bd\x7f é ✓") == "a\\x1b[31mb\\x0ac\\x9bd\\x7f é ✓"


def test_node_text_is_printable_and_numbers_finite_in_a_sample() -> None:
    sample = NodeSample.from_probe(
        {
            "hostname": "gpu\x1b]0;x\x07",
            "cpu": {"util_pct": float("inf"), "cores": float("nan")},
            "disks": [{"mount": "/data\n", "total_bytes": 10, "used_bytes": 5}],
            "xids": [{"xid": 79, "message": "NVRM: Xid 79\r\n"}],
            "errors": {"disk:/x\n": "timeout\x1b[2J"},
            "matched_processes": [{"pid": 1, "cmdline": "torchrun\x1b[8m", "pattern": "t"}],
        }
    )
    assert sample.hostname == "gpu\\x1b]0;x\\x07"
    assert (sample.cpu_util_pct, sample.cpu_cores) == (None, None)
    assert sample.disks[0].mount == "/data\\x0a"
    assert sample.xids[0].message == "NVRM: Xid 79\\x0d\\x0a"
    assert sample.errors == {"disk:/x\\x0a": "timeout\\x1b[2J"}
    assert sample.matched_processes[0]["cmdline"] == "torchrun\\x1b[8m"
