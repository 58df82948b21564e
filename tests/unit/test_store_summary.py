"""History summaries: metric table, summarize, trend, sparkline, parse_duration."""

from __future__ import annotations

import pytest

from ugro_health.store.history import record_from_json
from ugro_health.store.summary import METRICS, parse_duration, sparkline, summarize

T0 = 1_750_000_000.0


def doc(name: str, t: float, **over: object) -> dict:
    base: dict = {
        "name": name,
        "status": "ok",
        "score": 90,
        "reachable": True,
        "polled_at": t,
        "metrics": {
            "cpu_util_pct": 25.0,
            "mem_util_pct": 50.0,
            "load1": 4.0,
            "disks": {
                "/": {"util_pct": 40.0},
                "/data": {"util_pct": 85.5},
                "/nfs": {"util_pct": None},
            },
        },
        "gpus": [
            {"index": 0, "temp_c": 60.0, "util_pct": 100.0, "mem_pct": 30.0, "power_w": 300.0},
            {"index": 1, "temp_c": 71.0, "util_pct": 50.0, "mem_pct": 90.0, "power_w": 250.5},
            {"index": 2, "temp_c": None, "util_pct": None, "mem_pct": None, "power_w": None},
        ],
        "alerts": [],
    }
    base.update(over)
    return base


def test_metric_table_extracts_each_metric() -> None:
    d = doc("n", T0)
    got = {name: m.extract(d) for name, m in METRICS.items()}
    assert got == {
        "score": 90.0,
        "cpu": 25.0,
        "mem": 50.0,
        "disk": 85.5,
        "load": 4.0,
        "gpu_temp": 71.0,
        "gpu_util": 75.0,
        "gpu_mem": 90.0,
        "power": 550.5,
    }
    empty = {"name": "n", "reachable": False, "metrics": {}, "gpus": [], "score": None}
    assert all(m.extract(empty) is None for m in METRICS.values())  # unknown, never 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("6h", 21600),
        ("1d", 86400),
        ("1w", 604800),
        ("1h30m", 5400),
        (" 2H ", 7200),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "h", "10", "5x", "-1h", "0m", "1h 2", "1 hour", "522w", "9" * 400 + "w"]
)
def test_parse_duration_rejects_with_a_message(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([1.0, None, 3.0]) == "▁ █"
    assert sparkline([5, 5, 5]) == "▄▄▄"
    assert sparkline([]) == "" and sparkline([None, None]) == "  "
    assert sparkline([0, 0, 100, 100], width=2) == "▁█"
    assert sparkline([50], lo=0, hi=100) == "▅"


def series_records(values: list[float | None], step: float = 60.0) -> list[dict]:
    out = []
    for i, v in enumerate(values):
        d = doc("n", T0 + i * step, score=v, reachable=v is not None)
        out.append(record_from_json(d))
    return out


def test_summarize_statistics_series_and_availability() -> None:
    records = series_records([10, 20, None, 40, 30, 60])
    result = summarize(records, "score", start=T0, end=T0 + 360, width=6)
    s = result["n"]
    assert (s.min, s.max, s.last, s.count, s.samples) == (10, 60, 60, 5, 6)
    assert s.mean == pytest.approx(32.0)
    assert s.availability == pytest.approx(5 / 6)
    assert s.series == [10, 20, None, 40, 30, 60]
    assert s.first_t == T0 and s.last_t == T0 + 300
    trend = s.trend
    assert trend.direction == "up" and trend.slope_per_h is not None and trend.slope_per_h > 0
    doc_ = s.to_json()
    assert doc_["trend"]["direction"] == "up" and doc_["unit"] == "" and doc_["series"] == s.series


def test_summarize_works_on_summary_points_and_full_records_alike() -> None:
    records = series_records([90, 80, 70, 60])
    points = [{k: r[k] for k in ("v", "t", "node", "summary")} for r in records]
    bare = [{k: v for k, v in r.items() if k != "summary"} for r in records]  # older producer
    results = [
        summarize(rs, "score", start=T0, end=T0 + 240, width=4)["n"].to_json()
        for rs in (records, points, bare)
    ]
    assert results[0] == results[1] == results[2]
    assert results[0]["trend"]["direction"] == "down"


@pytest.mark.parametrize(
    ("values", "direction"),
    [
        ([50, 50.5, 50, 50.4], "flat"),
        ([10, 8, 5, 1], "down"),
        ([7], "unknown"),
        ([None], "unknown"),
    ],
)
def test_trend_direction(values: list, direction: str) -> None:
    s = summarize(series_records(values), "score", start=T0, end=T0 + 600)["n"]
    assert s.trend.direction == direction


def test_summarize_counts_alerts_per_node_and_buckets_by_time() -> None:
    alert = {"severity": "warning", "code": "gpu_temp_high", "message": "hot"}
    crit = {"severity": "critical", "code": "xid", "message": "xid 79"}
    records = [
        record_from_json(doc("a", T0 + 10, alerts=[alert])),
        record_from_json(doc("a", T0 + 20, alerts=[alert, crit])),
        record_from_json(doc("b", T0 + 3590)),
    ]
    result = summarize(records, "gpu_temp", start=T0, end=T0 + 3600, width=4)
    a, b = result["a"], result["b"]
    assert a.alerts_by_severity == {"warning": 2, "critical": 1}
    assert a.alerts_by_code == {"gpu_temp_high": 2, "xid": 1}
    assert a.series == [71.0, None, None, None] and b.series == [None, None, None, 71.0]
    assert b.alerts_by_code == {} and b.statuses == {"ok": 1}


def test_summarize_rejects_an_unknown_metric() -> None:
    with pytest.raises(ValueError, match=r"unknown metric 'temp'.*gpu_temp"):
        summarize([], "temp", start=0, end=1)


def test_availability_counts_polls_not_cycles_a_breaker_skipped() -> None:
    """1 of 8 real polls answered, 72 cycles isolated by the breaker: 12.5 %, not 1.2 %."""
    from ugro_health.engine.collect import failed_report
    from ugro_health.model import ErrorKind, NodeError
    from ugro_health.store.history import record_from_report

    records = [record_from_json(doc("n", T0, score=90, reachable=True))]
    records += [record_from_json(doc("n", T0 + i, reachable=False)) for i in range(1, 8)]
    isolated = NodeError(ErrorKind.SKIPPED, "isolated, next try in 30s (refused)")
    records += [
        record_from_report(failed_report("n", isolated, T0 + 8 + i, 0.0)) for i in range(72)
    ]
    points = [{k: r[k] for k in ("v", "t", "node", "summary")} for r in records]
    for rs in (records, points):  # what `history` reads: summary heads only
        (s,) = summarize(rs, "score", start=T0, end=T0 + 100).values()
        assert (s.samples, s.skipped, s.reachable) == (80, 72, 1)
        assert s.availability == pytest.approx(1 / 8)
        assert s.to_json()["skipped"] == 72
