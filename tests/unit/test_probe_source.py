"""What the control host sends: the probe with its functions compiled on first call.

``lazy_source`` must change when the probe's code is compiled, never what it does: every
function, once loaded, is the very code object a plain compile of probe.py makes (line numbers
included), and the parsers give the same answers through it. The protocol tests
(test_probe_protocol.py) run this source on every Python the nodes may have.
"""

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from ugro_health import probe
from ugro_health.transport import probe_source, ssh_session

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probe"
SENT = probe_source.lazy_source(probe.source_bytes())


def module(source: bytes) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "ugro_probe"}
    exec(compile(source, "ugro_probe", "exec"), namespace)
    return namespace


def test_the_control_host_sends_the_lazy_source() -> None:
    assert ssh_session.probe_prelude() == b"%d\n" % len(SENT) + SENT


def test_every_function_loads_as_the_code_a_plain_compile_makes() -> None:
    plain, sent = module(probe.source_bytes()), module(SENT)
    table = sent[probe_source.TABLE]
    functions = {n for n, v in plain.items() if getattr(v, "__module__", None) == "ugro_probe"}
    functions = {n for n in functions if not isinstance(plain[n], type)}
    assert set(table) == functions  # every top-level function, nothing else
    assert len(table) > 80
    for name in sorted(table):
        stand_in = sent[name]
        assert stand_in.__code__ != plain[name].__code__  # not compiled yet
        loaded = sent[probe_source.LOADER](name)
        assert sent[name] is loaded  # the stand-in is replaced
        assert loaded.__code__ == plain[name].__code__, name
        assert loaded.__defaults__ == plain[name].__defaults__, name
        assert loaded.__kwdefaults__ == plain[name].__kwdefaults__, name


def test_lines_keep_their_numbers() -> None:
    plain, sent = probe.source_bytes().splitlines(), SENT.splitlines()
    assert len(plain) == len(sent)
    start = plain.index(b"class Probe(object):")
    assert sent[start] == b"class Probe(object):"  # classes are sent as they are
    # a traceback out of a loaded function names the probe's own line
    namespace = module(SENT)
    with pytest.raises(ValueError) as caught:
        namespace["normalize_request"]({"window_s": "soon"})
    frame = caught.traceback[-1]
    assert plain[frame.lineno].strip() == b'raise ValueError("%s must be a number" % key)'


def test_a_call_through_the_stand_in_answers_as_the_function() -> None:
    plain, sent = module(probe.source_bytes()), module(SENT)
    text = (FIXTURES / "dmesg_fallen_off_bus_nvsentinel.txt").read_text()
    assert sent["parse_xid_lines"](text, limit=5) == plain["parse_xid_lines"](text, limit=5)
    csv = (FIXTURES / "smi_h100_590_query_gpu_load.csv").read_text()
    assert sent["parse_smi_csv"](csv) == plain["parse_smi_csv"](csv)
    xml = (FIXTURES / "smi_a100_sxm4_mig_535_q.xml").read_text()
    assert sent["parse_smi_xml"](xml) == plain["parse_smi_xml"](xml)
    request = {"window_s": 0, "mounts": ["/"]}
    first, second = sent["Probe"]().sample(request), plain["Probe"]().sample(request)
    assert sorted(first) == sorted(second)
    assert first["ok"] is second["ok"] is True


def test_a_module_without_functions_is_sent_as_it_is() -> None:
    source = b'"""Doc."""\n\nX = 1\n'
    assert probe_source.lazy_source(source) == source


def test_which_finds_what_shutil_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tool").mkdir()  # a directory named like the command is not it
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "tool").write_text("")  # not executable
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "c" / "tool").chmod(0o755)
    dirs = [str(tmp_path / d) for d in "abc"]
    for path in (":".join(dirs), ":".join(dirs[:2]), "", ":" + dirs[2], None):
        if path is None:
            monkeypatch.delenv("PATH", raising=False)
        else:
            monkeypatch.setenv("PATH", path)
        for name in ("tool", "sh", "no-such-tool-here"):
            assert probe._which(name) == shutil.which(name), (path, name)


def test_python_version_is_platforms() -> None:
    import platform

    assert probe.python_version() == platform.python_version()
    assert sys.version.startswith(probe.python_version())


def test_segments_are_what_ast_gives_for_every_statement_of_the_probe() -> None:
    import ast

    from ugro_health import probe
    from ugro_health.transport.probe_source import _segment

    text = probe.source_bytes().decode()
    lines = text.splitlines(keepends=True)
    for node in ast.parse(text).body:
        assert _segment(lines, node) == ast.get_source_segment(text, node), node.lineno
