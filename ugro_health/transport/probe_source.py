"""The probe source as the control host sends it: each module-level function compiled on its
first call, not at start-up.

Compiling the whole probe is most of a cold probe's cost on its node (docs/benchmarks.md,
"probe node-side cost"), and one sample calls under half of its functions (a node without a GPU
never runs the nvidia-smi and NVML code). So every top-level ``def`` of ``probe.py`` is sent as
its text in a table of string literals (cheap to compile: the tokenizer only scans them), with
blank lines in its place and a stand-in made at start-up; the first call compiles that text,
padded with newlines to its original line, into the module's globals, where it replaces the
stand-in. The code object is the one a plain compile of the module makes (a test compares
them), tracebacks keep their line numbers, and the bootstrap, the protocol and what the probe
answers are unchanged. Classes stay as they are.

Runs on the control host only (``ast``); imports nothing of ours. The output must stay valid on
Python 3.6, like the probe.
"""

from __future__ import annotations

import ast

LOADER = "_ugro_lazy"
TABLE = "_UGRO_LAZY"
IMPORTS = "_UGRO_IMPORTS"
# One line, valid on Python 3.6: the loader, then a stand-in for every function in the table
# (made at run time, so it costs no compile). Two threads may load one function at once: both
# compile the same text, and the second assignment replaces the first with an identical
# function. The text is compiled after the module's own top-level imports (on its first line,
# which the padding leaves free): Python 3.11 compiles ``os.sysconf(...)`` differently when it
# knows ``os`` is an imported module; the imports rebind each name to the module it holds.
_LOADER = (
    f"{LOADER} = lambda name: [exec(compile({IMPORTS} + "
    f'"\\n" * ({TABLE}[name][0] - 1) + {TABLE}[name][1], "ugro_probe", "exec"), globals()), '
    "globals()[name]][1]; "
    "[globals().__setitem__(_n, (lambda n: lambda *args, **kwargs: "
    f"{LOADER}(n)(*args, **kwargs))(_n)) for _n in {TABLE}]"
)


def lazy_source(source: bytes) -> bytes:
    """``source`` (the probe module) with its top-level functions compiled on first call."""
    text = source.decode("utf-8")
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    table: dict[str, tuple[int, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.decorator_list:
            assert node.end_lineno is not None
            first, last = node.lineno - 1, node.end_lineno
            table[node.name] = (node.lineno, "".join(lines[first:last]))
            # Blank lines in its place, so the code around it keeps its line numbers.
            lines[first:last] = ["\n"] * (last - first)
    blank = _blank_line_after_docstring(tree, lines)
    if not table or blank is None:
        return source
    entries = ", ".join(f"{name!r}: {table[name]!r}" for name in sorted(table))
    original = text.splitlines(keepends=True)
    imports = "; ".join(
        _segment(original, node)
        for node in tree.body
        if isinstance(node, ast.Import)
        or (isinstance(node, ast.ImportFrom) and node.module != "__future__")
    )
    # On a blank line of its own (one line: repr() escapes the newlines), so no line moves.
    lines[blank] = f"{TABLE} = {{{entries}}}; {IMPORTS} = {imports!r}; {_LOADER}\n"
    return "".join(lines).encode("utf-8")


def _segment(lines: list[str], node: ast.stmt) -> str:
    """``node``'s source text, as ``ast.get_source_segment`` gives it, from lines split once
    (that function splits the whole source again on every call: 40 ms each for the probe)."""
    assert node.end_lineno is not None and node.end_col_offset is not None
    first, last = node.lineno - 1, node.end_lineno - 1
    if first == last:
        return lines[first].encode()[node.col_offset : node.end_col_offset].decode()
    head = lines[first].encode()[node.col_offset :].decode()
    tail = lines[last].encode()[: node.end_col_offset].decode()
    return head + "".join(lines[first + 1 : last]) + tail


def _blank_line_after_docstring(tree: ast.Module, lines: list[str]) -> int | None:
    """The index of the first blank line after the module's docstring, before any code."""
    start = 0
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        assert body[0].end_lineno is not None
        start = body[0].end_lineno
    end = body[1].lineno - 1 if len(body) > 1 else len(lines)
    for index in range(start, end):
        if not lines[index].strip():
            return index
    return None
