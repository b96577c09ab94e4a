"""Training and evaluation loss against step, drawn in braille dots: no plotting library needed.

Each terminal cell holds 2×4 dots, so an 80-column plot has about 150 points across. The
training loss is a line; evaluation points are drawn as • so the two stay apart without colour.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

# Bit of each dot in a braille cell, by (column, row) inside the cell.
DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
AXIS_WIDTH = 8


def _line(x0: int, y0: int, x1: int, y1: int):
    """The dots between two points (Bresenham), ends included."""
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    error = dx + dy
    while True:
        yield x0, y0
        if x0 == x1 and y0 == y1:
            return
        twice = 2 * error
        if twice >= dy:
            error += dy
            x0 += sx
        if twice <= dx:
            error += dx
            y0 += sy


def _label(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}"[:AXIS_WIDTH - 1].rjust(AXIS_WIDTH - 1)


def tick_rows(rows: int) -> list[int]:
    """Rows that get a value label: top and bottom, and about every third row between (at most 6 in all),
    so the loss can be read off the axis anywhere, not only at its extremes."""
    if rows <= 3:
        return list(range(rows))
    count = min(6, max(3, (rows + 2) // 3))
    return sorted({round(index * (rows - 1) / (count - 1)) for index in range(count)})


def draw(train: list[tuple[float, float]], evals: list[tuple[float, float]], width: int, height: int) -> Text:
    """The plot as text lines of `width` columns: y labels, the dots, and a step axis."""
    rows = max(2, height - 2)  # two lines: the step axis and the legend
    columns = max(4, width - AXIS_WIDTH)
    points = train + evals
    if not points:
        return Text("\n" * (rows // 2) + " " * AXIS_WIDTH + "the loss appears here after the first logging step",
                    style="dim")
    steps = [step for step, _ in points]
    values = [value for _, value in points]
    low_step, high_step = min(steps), max(steps)
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    dots_x, dots_y = columns * 2, rows * 4

    def dot(step: float, value: float) -> tuple[int, int]:
        x = 0 if high_step == low_step else round((step - low_step) / (high_step - low_step) * (dots_x - 1))
        y = round((high - value) / (high - low) * (dots_y - 1))
        return x, y

    cells = [[0] * columns for _ in range(rows)]
    previous = None
    for step, value in train:
        here = dot(step, value)
        for x, y in (_line(*previous, *here) if previous else [here]):
            cells[y // 4][x // 2] |= DOTS[x % 2][y % 4]
        previous = here
    marks = {(y // 4, x // 2) for x, y in (dot(step, value) for step, value in evals)}

    labelled = tick_rows(rows)
    text = Text()
    for row in range(rows):
        # the value at the middle of the row's four dots
        label = _label(high - (row * 4 + 1.5) / (dots_y - 1) * (high - low), 3) if row in labelled else ""
        if row == 0:
            label = _label(high)
        elif row == rows - 1:
            label = _label(low)
        text.append(label.ljust(AXIS_WIDTH - 1) + "┤", style="dim")
        for column in range(columns):
            if (row, column) in marks:
                text.append("•", style="bold yellow")
            else:
                bits = cells[row][column]
                text.append(chr(0x2800 + bits) if bits else " ", style="cyan" if bits else "")
        text.append("\n")
    first, last = f"{low_step:g}", f"{high_step:g}"
    axis = " " * AXIS_WIDTH + first + " " * max(1, columns - len(first) - len(last) - 5) + last + " step"
    text.append(axis[:width] + "\n", style="dim")
    text.append(" " * AXIS_WIDTH + "⠉⠉ train loss   • eval loss", style="dim")
    return text


class LossPlot(Widget):
    """Draws what it was last given; the screen decides how often (a few times a second at most)."""

    DEFAULT_CSS = """
    LossPlot {
        height: 12;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train: list[tuple[float, float]] = []
        self.evals: list[tuple[float, float]] = []

    def show(self, train: list[tuple[float, float]], evals: list[tuple[float, float]]) -> None:
        self.train, self.evals = list(train), list(evals)
        self.refresh()

    def render(self) -> Text:
        return draw(self.train, self.evals, self.size.width, self.size.height)
