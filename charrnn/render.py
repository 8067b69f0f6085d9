"""Terminal renderings with rich: run reports with loss curves drawn in text, and checkpoint info.

Everything that comes from a corpus or a file name is printed as rich `Text` (never parsed as markup).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

COLOURS = ("blue", "red", "green", "magenta", "yellow", "cyan")
MARKERS = ("●", "◆", "▲", "■", "✚", "✖")


def text_plot(series: dict[str, Sequence[tuple[float, float]]], width: int = 64, height: int = 12,
              y_label: str = "") -> Group:
    """A scatter-line plot in characters: one marker and colour per series, y labels on the left, x below."""
    points = {name: [(x, y) for x, y in pts if math.isfinite(y)] for name, pts in series.items()}
    everything = [p for pts in points.values() for p in pts]
    if not everything:
        return Group(Text("(nothing to plot)", style="dim"))
    x0, x1 = min(p[0] for p in everything), max(p[0] for p in everything)
    y0, y1 = min(p[1] for p in everything), max(p[1] for p in everything)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-9)
    grid: list[list[tuple[str, str]]] = [[(" ", "")] * width for _ in range(height)]
    for k, (name, pts) in enumerate(points.items()):
        marker, colour = MARKERS[k % len(MARKERS)], COLOURS[k % len(COLOURS)]
        for x, y in pts:
            col = round((x - x0) / (x1 - x0) * (width - 1))
            row = height - 1 - round((y - y0) / (y1 - y0) * (height - 1))
            grid[row][col] = (marker, colour)
    lines = []
    for r, row in enumerate(grid):
        value = y1 - r / (height - 1) * (y1 - y0)
        line = Text(f"{value:8.3f} │" if r in (0, height // 2, height - 1) else "         │", style="dim")
        for ch, colour in row:
            line.append(ch, style=colour)
        lines.append(line)
    lines.append(Text("         └" + "─" * width, style="dim"))
    lines.append(Text(f"          {x0:<12,.0f}{'step':^{max(width - 24, 4)}}{x1:>12,.0f}", style="dim"))
    legend = Text(f"  {y_label}  " if y_label else "  ")
    for k, name in enumerate(points):
        legend.append(f"{MARKERS[k % len(MARKERS)]} ", style=COLOURS[k % len(COLOURS)])
        legend.append(f"{name}   ")
    return Group(*lines, legend)


def _number(x: Any, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def runs_table(summaries) -> Table:
    """One row per run: where, how far, best validation loss, throughput."""
    table = Table(title="runs", title_justify="left", show_edge=False)
    for column in ("run", "step", "best val nats", "best val bpc", "at step", "chars/s", "time"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for s in summaries:
        table.add_row(Text(str(s.path)), f"{s.step:,}", _number(s.best_val_nats, ".4f"),
                      _number(None if s.best_val_nats is None else s.best_val_nats / math.log(2), ".3f"),
                      _number(s.best_step, ","), _number(s.chars_per_s, ",.0f"),
                      "—" if s.elapsed_s is None else f"{s.elapsed_s / 60:.1f} min")
    return table


def differences_table(summaries, differences: dict[str, list[Any]]) -> Table:
    """The settings that differ between runs, one column per run."""
    table = Table(title="settings that differ", title_justify="left", show_edge=False)
    table.add_column("setting")
    for s in summaries:
        table.add_column(Text(s.name), justify="right")
    for key, values in differences.items():
        table.add_row(key, *(Text("—" if v is None else str(v)) for v in values))
    return table


def report(summaries, differences: dict[str, list[Any]]) -> Group:
    """The whole terminal report: runs, their differences, and the loss curves."""
    parts: list[Any] = [runs_table(summaries)]
    if len(summaries) > 1:
        parts += [Text(""), differences_table(summaries, differences) if differences else
                  Text("All runs have the same settings.", style="dim")]
    val = {s.name: s.val_curve for s in summaries if s.val_curve}
    train = {s.name: s.train_curve for s in summaries if s.train_curve}
    if val:
        parts += [Text(""), Text("validation loss (nats per character)", style="bold"), text_plot(val)]
    if train:
        parts += [Text(""), Text("training loss (nats per character)", style="bold"), text_plot(train)]
    return Group(*parts)


def checkpoint_info(info: dict[str, Any]) -> Table:
    """`charrnn info` as a two-column table."""
    m = info["model"]
    vocab = info["vocabulary"]
    table = Table(show_header=False, show_edge=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    shown = "all 256 byte values" if vocab["byte_level"] else "".join(
        {"\n": "↵", "\t": "→", "\r": "␍", " ": "␣"}.get(c, c) for c in vocab["symbols"])
    best = info["best_val_nats"]
    rows = [
        ("checkpoint", info["checkpoint"]),
        ("format version", str(info["format_version"])),
        ("model", f"{m['num_layers']}-layer {m['cell'].upper()}, {m['hidden_size']} units, embedding "
                  f"{m['embedding_size']}, dropout {m['dropout']}"),
        ("parameters", f"{info['parameters']:,}"),
        ("vocabulary", f"{vocab['size']} symbols: {shown}"),
        ("step", f"{info['step']:,}" + ("" if info["epoch"] is None else f" (epoch {info['epoch']:.2f})")),
        ("validation loss", "—" if info["val_nats"] is None else
         f"{info['val_nats']:.4f} nats ({info['val_nats'] / math.log(2):.3f} bpc) at this step"),
        ("best validation", "—" if best is None else f"{best:.4f} nats ({best / math.log(2):.3f} bpc)"),
        ("corpus", f"{info['corpus']['path']} ({info['corpus']['num_symbols']:,} "
                   f"{'bytes' if info['corpus']['byte_level'] else 'characters'}, {info['corpus']['encoding']})"),
        ("corpus sha256", info["corpus"]["sha256"]),
        ("splits", ", ".join(f"{k} {v[0]:,}–{v[1]:,}" for k, v in info["splits"].items())),
    ]
    for key, value in rows:
        table.add_row(key, Text(value))
    return table
