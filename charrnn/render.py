"""Terminal renderings with rich: run reports with loss curves drawn in text, and checkpoint info.

Everything that comes from a corpus or a file name is printed as rich `Text` (never parsed as markup).
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional, Sequence

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
    """One row per run: where, how far, best validation loss, test loss (once evaluated), throughput."""
    table = Table(title="runs", title_justify="left", show_edge=False)
    tested = any(s.test_nats is not None for s in summaries)
    columns = ("run", "step", "best val nats", "best val bpc", "at step",
               *(("test nats", "test bpc") if tested else ()), "chars/s", "time")
    for column in columns:
        table.add_column(column, justify="left" if column == "run" else "right")
    for s in summaries:
        test = (_number(s.test_nats, ".4f"), _number(None if s.test_nats is None else s.test_nats / math.log(2),
                                                     ".3f")) if tested else ()
        table.add_row(Text(str(s.path)), f"{s.step:,}", _number(s.best_val_nats, ".4f"),
                      _number(None if s.best_val_nats is None else s.best_val_nats / math.log(2), ".3f"),
                      _number(s.best_step, ","), *test, _number(s.chars_per_s, ",.0f"),
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


def _dropout(asked: Optional[float], in_use: Optional[float]) -> str:
    if asked is not None:
        return f"{asked:g}"
    return "auto" if in_use is None else f"auto ({in_use:g} at this step)"


def _weights(asked: Optional[float], in_use: Optional[float]) -> str:
    if not in_use:
        return "as trained"
    how = "fitted to the run" if asked is None else "--weight-average"
    return f"moving average of the trained weights, decay {in_use:.4g} ({how})"


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
        ("model", f"{m['num_layers']}-layer {m['cell'].upper()}{' (layer-normalised)' if m.get('layer_norm') else ''}, "
                  f"{m['hidden_size']} units, embedding "
                  f"{m['embedding_size']}, dropout {_dropout(m['dropout'], info.get('dropout'))}"
                  + (f", weight drop {m['weight_drop']:g}" if m.get("weight_drop") else "")),
        ("parameters", f"{info['parameters']:,}"),
        ("weights", _weights(info["train"].get("weight_average", 0.0), info.get("weight_average"))),
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


# --- training ------------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class TrainingView:
    """Renders training events on a console (stderr): on a terminal a live display — a bar for the current
    epoch and one for the run, with ETA — and in a log plain lines without control codes: one per validation,
    one at most every `plain_every_s` seconds of training, and the samples.

    Use as a context manager; pass `handle` as the training callback.
    """

    def __init__(self, console, max_time: float | None = None, quiet: bool = False, plain_every_s: float = 30.0):
        self.console, self.max_time, self.quiet, self.plain_every_s = console, max_time, quiet, plain_every_s
        self.live = console.is_terminal and not quiet
        self.progress = None
        self.val_text, self.last_val, self.last_plain = "—", None, None
        self.layout = None

    def __enter__(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description:>11}"), BarColumn(bar_width=28), TextColumn("{task.fields[info]}"),
            TextColumn("ETA"), TimeRemainingColumn(), console=self.console, disable=not self.live)
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def print(self, *things) -> None:
        if not self.quiet:
            self.console.print(*things)

    def handle(self, event) -> None:
        kind = type(event).__name__
        getattr(self, f"_on_{kind.lower()}", lambda e: None)(event)

    def _on_started(self, event) -> None:
        layout = self.layout = event.layout
        for warning in event.warnings:
            self.console.print(Text.assemble(("warning: ", "yellow"), warning))
        steps = f"{layout.steps_per_epoch:,} step{'s' if layout.steps_per_epoch != 1 else ''}"
        resumed = f", resuming at step {event.resumed_step:,}" if event.resumed_step else ""
        segments = f" in shuffled segments of {layout.segment_length:,}" if layout.segment_length else ""
        self.print(f"{event.num_params:,} parameters; batch {layout.batch_size} × window {layout.seq_length}"
                   f"{segments}, {steps} per epoch; compiled in {event.compile_s:.1f} s{resumed}")
        epochs = "" if layout.total_steps is None else f"/{math.ceil(layout.total_steps / layout.steps_per_epoch)}"
        self.epochs_of = epochs
        in_epoch = event.resumed_step % layout.steps_per_epoch
        self.epoch_task = self.progress.add_task(f"epoch {event.resumed_step // layout.steps_per_epoch + 1}{epochs}",
                                                 total=layout.steps_per_epoch, completed=in_epoch, info="")
        self.run_task = self.progress.add_task("run", total=layout.total_steps, completed=event.resumed_step, info="")
        self.start_step, self.last_plain, self.t0 = event.resumed_step, None, time.perf_counter()

    def _train_text(self, event) -> str:
        return f"train {event.train_nats:.3f} ({event.train_nats / math.log(2):.2f} bpc)"

    def _on_logged(self, event) -> None:
        layout = self.layout
        epoch_index, in_epoch = divmod(event.step, layout.steps_per_epoch)
        skipped = f"  {event.skipped_steps} skipped" if event.skipped_steps else ""
        dropout = f"  dropout {event.dropout:g}" if event.dropout else ""
        info = (f"{self._train_text(event)}  val {self.val_text}  lr {event.learning_rate:.2e}{dropout}  "
                f"{event.chars_per_s:,.0f} chars/s{skipped}")
        self.progress.update(self.epoch_task, description=f"epoch {epoch_index + 1}{self.epochs_of}",
                             completed=in_epoch, info=info)
        total = f"/{layout.total_steps:,}" if layout.total_steps else ""
        self.progress.update(self.run_task, completed=event.step, info=f"step {event.step:,}{total}")
        if not self.live and (self.last_plain is None or event.elapsed_s - self.last_plain >= self.plain_every_s):
            self.last_plain = event.elapsed_s
            self.print(f"step {event.step:>7,}  epoch {event.epoch:.2f}  {info}  ETA {self._eta(event)}")

    def _eta(self, event) -> str:
        """Time left: by the steps still to go at this session's pace, or by --max-time if that comes first."""
        done, spent = event.step - self.start_step, time.perf_counter() - self.t0
        if done <= 0:
            return "?"
        left = [] if self.layout.total_steps is None else [(self.layout.total_steps - event.step) * spent / done]
        if self.max_time is not None:
            left.append(max(self.max_time - spent, 0.0))
        return _duration(min(left)) if left else "?"

    def _on_evaluated(self, event) -> None:
        bpc = event.val_nats / math.log(2)
        trend = "" if self.last_val is None else f" {'↓' if event.val_nats < self.last_val else '↑'}{abs(event.val_nats - self.last_val):.3f}"
        self.last_val = event.val_nats
        self.val_text = f"{event.val_nats:.3f}{trend}"
        line = Text(f"step {event.step:>7,}  val {event.val_nats:.4f} nats ({bpc:.3f} bpc){trend}")
        if event.is_best:
            line.append("  best", style="green")
        self.print(line)

    def _on_sampled(self, event) -> None:
        for temperature, text in event.samples.items():
            shown = text.replace("\n", "↵ ").replace("\r", "␍")
            self.print(Text.assemble((f"  sample at step {event.step:,}, temperature {temperature}: ", "dim"), shown))


# --- inspect-cells -----------------------------------------------------------------------------------------------


def _excerpt_line(label: str, text: str, shown: Sequence[float]) -> Text:
    """One excerpt: each character on a background coloured by its standardized activation."""
    from .html import activation_colour

    line = Text(label, style="dim")
    for ch, v in zip(text, shown):
        line.append("↵" if ch == "\n" else "→" if ch == "\t" else ch, style=f"black on {activation_colour(v)}")
    return line


def inspection(report) -> Group:
    """The inspect-cells report: per feature the best units (score, support, ablation) with a coloured excerpt
    under each, the features that could not be scored, gate saturation and, if measured, gradient reach."""
    from .html import standardized

    d = report.to_dict()
    parts: list[Any] = [Text.assemble(
        (report.text["source"], "bold"),
        f": {report.text['chars']:,} characters, loss {report.loss_nats:.4f} nats/char ({d['loss_bpc']:.3f} bpc)",
        f"; skipped {report.text['skipped_chars']:,} characters the model does not know"
        if report.text["skipped_chars"] else "")]
    info = d["feature_info"]
    for name, findings in d["features"].items():
        table = Table(title=Text(f"{name} — {info[name]['description']}"), title_justify="left", show_edge=False)
        for column in ("layer", "state", "unit", "metric", "score", "support", "Δloss on / off", "ablation"):
            table.add_column(column, justify="left" if column in ("state", "metric", "ablation") else "right")
        for f in findings:
            a = f["ablation"]
            table.add_row(str(f["layer"]), f["state"], str(f["unit"]), f["metric"], f"{f['score']:.3f} {f['direction']}",
                          f"{f['support']:,}", "—" if a is None else f"{a['delta_nats_on']:+.3f} / {a['delta_nats_off']:+.3f}",
                          "—" if a is None else a["verdict"])
        parts += [Text(""), table]
        excerpt = d["excerpts"].get(name)
        if excerpt:
            for f, values, centre, scale in zip(findings, excerpt["units"], excerpt["centre"], excerpt["scale"]):
                parts.append(_excerpt_line(f"  L{f['layer']} {f['state']}[{f['unit']}] ", excerpt["text"],
                                           standardized(values, centre, scale)))
    for name, reason in d["unscored"].items():
        parts.append(Text(f"{name}: not scored — {reason}", style="dim"))
    if d.get("probes"):
        parts += [Text(""), probes_table(d["probes"])]
    if d["saturation"]:
        table = Table(title="gate saturation (fraction of time < 0.1 / > 0.9, mean over units)", title_justify="left",
                      show_edge=False)
        for column in ("layer", "gate", "left-saturated", "right-saturated"):
            table.add_column(column, justify="right")
        for layer, gates in d["saturation"].items():
            for gate, v in gates.items():
                table.add_row(layer, gate, f"{v['mean_left']:.3f}", f"{v['mean_right']:.3f}")
        parts += [Text(""), table]
    if d["gradients"]:
        parts += [Text(""), Text("gradient reach: mean |d loss_T / d h_(T−k)|, relative to k = 0", style="bold")]
        for layer, norms in enumerate(d["gradients"]["norm_by_layer"]):
            reach = "  ".join(f"k={k}: {norms[k] / norms[0]:.2e}" for k in (1, 5, 10, 25, 50, 100) if k < len(norms))
            parts.append(Text(f"  layer {layer}: {reach}"))
    return Group(*parts)


def probes_table(probes: Sequence[dict]) -> Table:
    """Linear probes beside the best single unit, both scored on the second half of the text."""
    table = Table(title="one unit or many? a linear probe over each layer's h and c, fitted on the first half of "
                        "the text, scored on the second", title_justify="left", show_edge=False)
    for column in ("feature", "layer", "metric", "probe", "R²", "best unit", "unit"):
        table.add_column(column, justify="left" if column in ("feature", "metric", "best unit") else "right")
    for p in probes:
        u = p["best_unit"]
        table.add_row(Text(p["feature"]), str(p["layer"]), p["metric"], f"{p['score']:.3f}",
                      "—" if p.get("r2") is None else f"{p['r2']:.3f}",
                      f"L{u['layer']} {u['state']}[{u['unit']}] {u['direction']}", f"{u['score']:.3f}")
    return table
