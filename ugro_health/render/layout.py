"""A node table that fits the terminal: the ``check`` and ``status`` tables share it.

Pure: builds Rich renderables. On a narrow terminal the least useful columns go first (never the
node's name or status); where the ALERTS column would then be too narrow to read (or a long
alert would wrap onto more than three lines), each node's alerts go on their own indented lines
under its row instead of being folded into a tall thin column. No line ends in spaces (Rich
pads table cells), so piped output stays clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.padding import Padding
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

ALERTS_MIN_WIDTH = 30  # narrower than this, alerts read better under their node
ALERT_MAX_LINES = 3  # an alert that would wrap onto more lines goes under its node too
GAP = 2  # between columns: Rich's default padding of one cell on each side


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    right: bool = False  # right-justified (numbers)
    drop_rank: int = 0  # 0: always shown; on a narrow terminal the highest rank goes first


@dataclass(frozen=True, slots=True)
class NodeRow:
    cells: Sequence[Text]  # one per column, each a single line
    alerts: Text  # one alert per line; empty for none


@dataclass(frozen=True, slots=True)
class FittedTable:
    """Lays itself out for the width it is rendered at (Rich's console protocol)."""

    columns: Sequence[Column]
    rows: Sequence[NodeRow]
    footer: Text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Trimmed(fitted_table(self.columns, self.rows, options.max_width, self.footer))


@dataclass(frozen=True, slots=True)
class Trimmed:
    """``renderable`` with the spaces at the end of its lines cut (Rich pads table cells)."""

    renderable: RenderableType

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in console.render_lines(self.renderable, options, pad=False):
            yield from _rstrip(line)
            yield Segment.line()


def _rstrip(line: list[Segment]) -> list[Segment]:
    """``line`` without the spaces at its end (the padding of the last cells)."""
    line = list(line)
    while line and not line[-1].control:
        last = line[-1]
        text = last.text.rstrip(" ")
        if text:
            line[-1] = Segment(text, last.style)
            break
        line.pop()
    return line


def fitted_table(
    columns: Sequence[Column], rows: Sequence[NodeRow], width: int, footer: Text
) -> RenderableType:
    widths = [
        max([cell_len(c.header)] + [_cell_width(row.cells[i]) for row in rows])
        for i, c in enumerate(columns)
    ]
    shown = list(range(len(columns)))
    for i in sorted(
        (i for i, c in enumerate(columns) if c.drop_rank), key=lambda i: -columns[i].drop_rank
    ):
        if _used(widths, shown) <= width:
            break
        shown.remove(i)
    room = width - _used(widths, shown) - GAP
    longest = max((_cell_width(row.alerts) for row in rows if row.alerts), default=0)
    if room >= ALERTS_MIN_WIDTH and longest <= room * ALERT_MAX_LINES:
        return Group(_inline(columns, rows, shown), footer)
    return Group(*_stacked(columns, rows, shown, widths), footer)


def _used(widths: list[int], shown: list[int]) -> int:
    return sum(widths[i] for i in shown) + GAP * (len(shown) - 1)


def _cell_width(text: Text) -> int:
    return max(cell_len(line) for line in text.plain.split("\n"))


def _inline(columns: Sequence[Column], rows: Sequence[NodeRow], shown: list[int]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for i in shown:
        table.add_column(
            columns[i].header, justify="right" if columns[i].right else "left", no_wrap=True
        )
    table.add_column("ALERTS", overflow="fold")
    for row in rows:
        table.add_row(*(row.cells[i] for i in shown), row.alerts)
    return table


def _stacked(
    columns: Sequence[Column], rows: Sequence[NodeRow], shown: list[int], widths: list[int]
) -> list[RenderableType]:
    """Aligned rows without an ALERTS column, each followed by its alerts, indented."""

    def line(cells: Sequence[Text]) -> Text:
        out = Text()
        for n, i in enumerate(shown):
            cell = cells[i].copy()
            cell.align("right" if columns[i].right else "left", widths[i])
            if n:
                out.append(" " * GAP)
            out.append_text(cell)
        out.rstrip()
        return out

    header = line([Text(c.header, style="bold") for c in columns])
    parts: list[RenderableType] = [header]
    for row in rows:
        parts.append(line(row.cells))
        if row.alerts:
            parts.append(Padding(row.alerts, (0, 0, 0, 2), expand=False))
    return parts
