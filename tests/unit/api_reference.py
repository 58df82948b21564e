"""docs/api.md, rendered from the docstrings and signatures of ``ugro_health.__all__``.

``test_api_reference.py`` fails when docs/api.md differs from this rendering (a docstring or a
signature changed without the reference); regenerate with
``.venv/bin/python tests/unit/api_reference.py > docs/api.md``.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import sys
from typing import Any

import ugro_health

INTRO = """\
# Python API reference

Generated from the docstrings by `tests/unit/api_reference.py` (a test fails when this file
and the code disagree). The guide is the README's "Using it from Python"; runnable programs
are in `examples/`.

Everything is imported from the package itself (`import ugro_health`), which loads each name
on first use: `import ugro_health` alone loads neither paramiko, Rich, Typer nor anyio.
Handlers run on a thread of the monitor's own; the async entry points work on asyncio and
trio (through anyio).
"""

SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Configuration", ("load_config", "make_config", "Config", "ConfigError")),
    ("One poll", ("check", "ClusterReport", "NodeReport", "Alert", "Status", "Severity")),
    ("The monitor", ("HealthMonitor", "MonitorStats")),
    (
        "Events",
        ("CycleEvent", "AlertEvent", "BreakerEvent", "JobEvent", "ClusterState", "NodeState"),
    ),
    ("Jobs", ("track_job", "JobError")),
)

MONITOR_METHODS = (
    "run",
    "start",
    "stop",
    "close",
    "join",
    "events",
    "wait",
    "run_async",
    "start_job",
    "finish_job",
    "track_job",
    "state",
    "stats",
)


def render() -> str:
    out = [INTRO]
    listed = {name for _, names in SECTIONS for name in names}
    missing = sorted(set(ugro_health.__all__) - listed - {"__version__", "MonitorEvent"})
    if missing:
        raise SystemExit(f"api_reference: not in any section: {missing}")
    for title, names in SECTIONS:
        out.append(f"## {title}\n")
        for name in names:
            out.append(_entry(name, getattr(ugro_health, name)))
    out.append(
        "## MonitorEvent\n\n`MonitorEvent` is the union of the types `HealthMonitor.events()`"
        " yields:\n`CycleEvent | AlertEvent | BreakerEvent | JobEvent | ClusterState`.\n"
    )
    return "\n".join(out)


def _entry(name: str, value: Any) -> str:
    lines = [f"### `{name}`\n"]
    if inspect.isclass(value) and issubclass(value, enum.Enum):
        members = ", ".join(f"`{m.name}`" for m in value)
        lines.append(f"Enum: {members}.\n")
    elif inspect.isclass(value) and dataclasses.is_dataclass(value):
        lines.append(f"```python\n{name}({_fields(value)})\n```\n")
    elif inspect.isclass(value) and issubclass(value, Exception):
        lines.append(f"Exception (a subclass of `{value.__mro__[1].__name__}`).\n")
    else:
        lines.append(f"```python\n{name}{_signature(value)}\n```\n")
    lines.append(_markdown(inspect.getdoc(value) or ""))
    if value is ugro_health.HealthMonitor:
        for method in MONITOR_METHODS:
            lines.append(_method(value, method))
    return "\n".join(lines)


def _method(cls: type, name: str) -> str:
    member = inspect.getattr_static(cls, name)
    if isinstance(member, property):
        head = f"#### `HealthMonitor.{name}` (property)\n"
        doc = inspect.getdoc(member.fget) or ""
    else:
        function = getattr(cls, name)
        prefix = "async " if inspect.iscoroutinefunction(function) else ""
        head = (
            f"#### `HealthMonitor.{name}`\n\n```python\n{prefix}{name}{_signature(function)}\n```\n"
        )
        doc = inspect.getdoc(function) or ""
    return head + "\n" + _markdown(doc)


def _signature(value: Any) -> str:
    text = str(inspect.signature(value)).replace("'", "")
    if len(text) <= 90:
        return text
    inner = text[1 : text.rindex(")")]
    tail = text[text.rindex(")") + 1 :]
    params = _split(inner)
    return "(\n" + "".join(f"    {p},\n" for p in params) + ")" + tail


def _split(params: str) -> list[str]:
    """Split a parameter list at its top-level commas."""
    out, depth, current = [], 0, ""
    for char in params:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        out.append(current.strip())
    return out


def _fields(cls: Any) -> str:
    parts = [f"{f.name}: {f.type}" for f in dataclasses.fields(cls)]
    return "\n    " + ",\n    ".join(parts) + ",\n" if parts else ""


def _markdown(doc: str) -> str:
    """A docstring as Markdown: ``x`` is `x`, and an ``Example::`` block is fenced Python."""
    out: list[str] = []
    lines = doc.replace("``", "`").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            out.append(line.rstrip()[:-1])
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                block.append(lines[i][4:])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += ["", "```python", *block, "```", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
