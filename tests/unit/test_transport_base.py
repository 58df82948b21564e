"""Reading the probe's answer lines: JSON objects with finite numbers, or a classified error."""

from __future__ import annotations

import pytest

from ugro_health.model import ErrorKind
from ugro_health.transport.base import TransportError, parse_probe_output, parse_response_line


def test_an_answer_among_shell_noise() -> None:
    raw = b'Welcome to gpu1\nUGRO1 {"ok": true, "cpu": {"util_pct": 12.5}}\nbye\n'
    assert parse_probe_output(raw) == {"ok": True, "cpu": {"util_pct": 12.5}}
    assert parse_response_line(b"not an answer") is None


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("NaN", "NaN is not a JSON number"),
        ("-Infinity", "-Infinity is not a JSON number"),
    ],
)
def test_non_finite_numbers_are_an_invalid_answer(number: str, why: str) -> None:
    with pytest.raises(TransportError) as info:
        parse_response_line(b'UGRO1 {"ok": true, "cpu": {"util_pct": %s}}' % number.encode())
    assert info.value.kind is ErrorKind.PROBE_INVALID
    assert why in info.value.message


def test_an_overflowing_number_parses_and_the_model_drops_it() -> None:
    from ugro_health.model import NodeSample

    doc = parse_response_line(b'UGRO1 {"ok": true, "cpu": {"util_pct": 1e999, "cores": 2}}')
    assert doc is not None
    sample = NodeSample.from_probe(doc)
    assert (sample.cpu_util_pct, sample.cpu_cores) == (None, 2)


def test_an_answer_nested_too_deep_is_invalid_not_a_crash() -> None:
    deep = b"UGRO1 " + b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(TransportError) as info:
        parse_response_line(deep)
    assert info.value.kind is ErrorKind.PROBE_INVALID
    assert "nested too deep" in info.value.message
