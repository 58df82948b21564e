"""Clock skew is measured against when the request left and the answer came, never against when
the answer was judged: a control host slow to get to an answer must not blame the node's clock."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from ugro_health.config import Config, NodeConfig, Thresholds
from ugro_health.engine.collect import clock_skew, poll_node
from ugro_health.transport.base import EXCHANGE_KEY

NODE = NodeConfig(name="gpu1")
# A low threshold, so that the delay below (the control host's own queueing) exceeds it.
CONFIG = Config(nodes=(NODE,), thresholds=replace(Thresholds(), clock_skew_warn_s=0.3))


class LateReader:
    """A node whose clock is ``offset_s`` off, answering at once; the control host then takes
    ``delay_s`` to get to the answer (a busy pool, the GIL). ``exchange`` stamps the answer
    as the SSH transports do."""

    def __init__(self, offset_s: float, delay_s: float, exchange: bool = False) -> None:
        self.offset_s, self.delay_s, self.exchange = offset_s, delay_s, exchange

    def run_probe(self, node: NodeConfig, request: dict[str, Any], deadline: float) -> Any:
        sent = time.time()
        doc: dict[str, Any] = {"ok": True, "time": time.time() + self.offset_s}
        received = time.time()
        time.sleep(self.delay_s)
        if self.exchange:
            doc[EXCHANGE_KEY] = (sent, received)
        return doc

    def forget(self, node_name: str) -> None: ...

    def close(self) -> None: ...


def poll(transport: LateReader) -> Any:
    return poll_node(CONFIG, NODE, transport, time.monotonic() + 10)


def test_an_answer_read_late_is_no_clock_skew() -> None:
    report = poll(LateReader(offset_s=0.0, delay_s=0.8))
    assert "clock_skew" not in {a.code for a in report.alerts}
    assert report.clock_skew_s is not None and abs(report.clock_skew_s) <= 0.45


def test_the_transports_stamps_give_the_skew_without_the_delay() -> None:
    report = poll(LateReader(offset_s=0.0, delay_s=0.8, exchange=True))
    assert report.clock_skew_s is not None and abs(report.clock_skew_s) < 0.1
    assert "clock_skew" not in {a.code for a in report.alerts}


@pytest.mark.parametrize("offset", [30.0, -30.0])
def test_a_clock_that_is_off_still_warns(offset: float) -> None:
    report = poll(LateReader(offset_s=offset, delay_s=0.2, exchange=True))
    (alert,) = [a for a in report.alerts if a.code == "clock_skew"]
    assert report.clock_skew_s == pytest.approx(offset, abs=0.2)
    assert alert.value == pytest.approx(offset, abs=0.2)


def test_skew_is_against_the_midpoint_within_half_the_round_trip() -> None:
    assert clock_skew(105.0, (100.0, 104.0)) == (3.0, 2.0)
    assert clock_skew(100.0, (100.0, 100.0)) == (0.0, 0.0)
    # a forged exchange (a JSON list, never a tuple) is ignored
    report = poll_node(CONFIG, NODE, Forged(), time.monotonic() + 10)
    assert "clock_skew" not in {a.code for a in report.alerts}


class Forged(LateReader):
    def __init__(self) -> None:
        super().__init__(0.0, 0.0)

    def run_probe(self, node: NodeConfig, request: dict[str, Any], deadline: float) -> Any:
        return {"ok": True, "time": time.time(), EXCHANGE_KEY: [0, 1]}
