"""Reading the probe's answer lines: JSON objects with finite numbers, or a classified error."""

from __future__ import annotations

import pytest

from ugro_health.model import ErrorKind
from ugro_health.transport.base import (
    MAX_JSON_CONTAINERS,
    TransportError,
    find_frame,
    parse_probe_output,
    parse_response_line,
)


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
    # Fewer arrays than MAX_JSON_CONTAINERS, nested far deeper than the parser's stack allows.
    deep = b"UGRO1 " + b"[" * 50_000 + b"]" * 50_000
    with pytest.raises(TransportError) as info:
        parse_response_line(deep)
    assert info.value.kind is ErrorKind.PROBE_INVALID
    assert "nested too deep" in info.value.message


def test_an_answer_after_noise_on_the_same_line_is_found() -> None:
    # A login shell's `printf "motd "`: no newline between the noise and the first frame.
    raw = b'motd \x1b[0mUGRO1 {"ok": true}\nUGRO1 {"ok": false}\n'
    assert parse_probe_output(raw) == {"ok": True}
    assert find_frame(raw) == (9, 28)
    assert parse_probe_output(b'noise UGRO1 {"ok": true}') == {"ok": True}  # no final newline


def test_a_frame_is_complete_only_with_its_newline() -> None:
    assert find_frame(b'noise UGRO1 {"ok": tr') is None
    assert find_frame(b"UGRO") is None


def test_too_many_objects_are_refused_before_decoding() -> None:
    gpus = b",".join([b"{}"] * (MAX_JSON_CONTAINERS + 1))
    with pytest.raises(TransportError) as info:
        parse_response_line(b'UGRO1 {"ok": true, "gpus": [' + gpus + b"]}")
    assert info.value.kind is ErrorKind.PROBE_INVALID
    assert f"(limit {MAX_JSON_CONTAINERS}" in info.value.message
