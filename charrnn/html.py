"""Self-contained HTML pages: inline CSS and SVG, no scripts, nothing fetched from the network.

Every piece of text that comes from a corpus, a file name or a user (feature names, regexes) goes through
`esc`, so a corpus holding ``<script>`` renders as text.
"""

from __future__ import annotations

import html
import math
from typing import Sequence

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .15em .6em; text-align: right; }
th { border-bottom: 1px solid #999; } td.l, th.l { text-align: left; }
.excerpt { font: 13px/1.7 ui-monospace, monospace; white-space: pre-wrap; word-break: break-all;
           border: 1px solid #ddd; padding: .4em; margin: .2em 0 .8em; }
.excerpt span { border-radius: 2px; } .label { font: 12px ui-monospace, monospace; color: #555; }
.note { color: #666; } svg text { font: 11px system-ui, sans-serif; fill: #333; }
"""


def esc(text) -> str:
    """HTML-escaped text (quotes included, so it is safe inside attributes too)."""
    return html.escape(str(text), quote=True)


def page(title: str, body: str) -> str:
    """A whole HTML document around `body`."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def table(header: Sequence[str], rows: Sequence[Sequence], left: Sequence[int] = (0,)) -> str:
    """A table; columns whose index is in `left` are left-aligned. Cells are escaped."""
    cls = lambda i: ' class="l"' if i in left else ""
    head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def activation_colour(v: float) -> str:
    """Blue for -1, white for 0, red for +1 (the paper's colouring); v is clipped to [-1, 1]."""
    v = max(-1.0, min(1.0, v)) if math.isfinite(v) else 0.0
    fade = lambda c: int(255 - (255 - c) * abs(v))
    r, g, b = (fade(214), fade(39), fade(40)) if v > 0 else (fade(31), fade(119), fade(180))
    return f"#{r:02x}{g:02x}{b:02x}"


def coloured_text(text: str, values: Sequence[float], shown: Sequence[float]) -> str:
    """Each character on a background coloured by `shown` (in [-1, 1]); `values` go in the tooltip."""
    spans = []
    for ch, v, s in zip(text, values, shown):
        glyph = "↵\n" if ch == "\n" else "→" if ch == "\t" else ch
        spans.append(f'<span style="background:{activation_colour(s)}" title="{v:.3f}">{esc(glyph)}</span>')
    return f'<div class="excerpt">{"".join(spans)}</div>'


def scatter(series: dict[str, tuple[Sequence[float], Sequence[float]]], x_label: str, y_label: str,
            title: str, size: int = 260) -> str:
    """An SVG scatter of points in [0, 1] x [0, 1], one colour per series, with a legend."""
    pad = 36
    parts = [f'<svg width="{size + pad + 90}" height="{size + pad + 24}" role="img" aria-label="{esc(title)}">',
             f'<text x="{pad}" y="12">{esc(title)}</text>',
             f'<rect x="{pad}" y="18" width="{size}" height="{size}" fill="none" stroke="#999"/>']
    for tick in (0, 0.5, 1):
        x, y = pad + tick * size, 18 + size - tick * size
        parts.append(f'<text x="{x - 6}" y="{size + 32}">{tick:g}</text><text x="{pad - 22}" y="{y + 4}">{tick:g}</text>')
    parts.append(f'<text x="{pad + size / 2 - 50}" y="{size + 46}">{esc(x_label)}</text>')
    parts.append(f'<text x="10" y="{18 + size / 2}" transform="rotate(-90 10 {18 + size / 2})">{esc(y_label)}</text>')
    for k, (name, (xs, ys)) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        for x, y in zip(xs, ys):
            parts.append(f'<circle cx="{pad + x * size:.1f}" cy="{18 + size - y * size:.1f}" r="2.2" '
                         f'fill="{colour}" fill-opacity="0.55"/>')
        parts.append(f'<circle cx="{pad + size + 16}" cy="{30 + 16 * k}" r="4" fill="{colour}"/>'
                     f'<text x="{pad + size + 24}" y="{34 + 16 * k}">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(series: dict[str, Sequence[float]], x_label: str, y_label: str, title: str, log_y: bool = False,
               xs: Sequence[float] | None = None, width: int = 520, height: int = 240) -> str:
    """An SVG line chart; `xs` defaults to 0, 1, 2, ...; non-finite (or, on a log axis, non-positive) points are
    left out. The legend gets the room its longest name needs."""
    legend_w = 40 + 7 * max((len(name) for name in series), default=0)
    pad_l, pad_b, pad_t = 64, 40, 20
    plot_w, plot_h = width - pad_l - 10, height - pad_t - pad_b
    transform = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    points = {name: [(x, transform(v)) for x, v in zip(xs if xs is not None else range(len(vals)), vals)
                     if math.isfinite(v) and (v > 0 or not log_y)]
              for name, vals in series.items()}
    everything = [p for pts in points.values() for p in pts]
    if not everything:
        return f'<p class="note">{esc(title)}: nothing to draw.</p>'
    x0, x1 = min(p[0] for p in everything), max(p[0] for p in everything)
    y0, y1 = min(p[1] for p in everything), max(p[1] for p in everything)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    sx = lambda x: pad_l + (x - x0) / (x1 - x0) * plot_w
    sy = lambda y: pad_t + (1 - (y - y0) / (y1 - y0)) * plot_h
    parts = [f'<svg width="{width + legend_w}" height="{height}" role="img" aria-label="{esc(title)}">',
             f'<text x="{pad_l}" y="12">{esc(title)}</text>',
             f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for frac in (0, 0.5, 1):
        yv = y0 + frac * (y1 - y0)
        label = f"1e{yv:.1f}" if log_y else f"{yv:.3g}"
        xv = x0 + frac * (x1 - x0)
        parts.append(f'<text x="{pad_l - 4}" y="{sy(yv) + 4:.1f}" text-anchor="end">{label}</text>'
                     f'<text x="{sx(xv):.1f}" y="{height - pad_b + 14}" text-anchor="middle">{xv:,.4g}</text>')
    parts.append(f'<text x="{pad_l + plot_w / 2:.0f}" y="{height - 8}" text-anchor="middle">{esc(x_label)}</text>')
    parts.append(f'<text x="12" y="{pad_t + plot_h / 2:.0f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {pad_t + plot_h / 2:.0f})">{esc(y_label)}</text>')
    for k, (name, pts) in enumerate(points.items()):
        colour = PALETTE[k % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        ly = pad_t + 10 + 16 * k
        parts.append(f'<line x1="{width + 8}" x2="{width + 24}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/>'
                     f'<text x="{width + 28}" y="{ly + 4}">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def shorten(value, limit: int = 40) -> str:
    """A long value (a hash, a path) cut to `limit` characters with an ellipsis, for tables."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- inspect-cells -----------------------------------------------------------------------------------------------


def standardized(values: Sequence[float], centre: float, scale: float) -> list[float]:
    """Activations as (v - centre) / (2 scale), for colouring: the unit's mean is white, two standard
    deviations either side full blue or red."""
    return [(v - centre) / (2.0 * scale) if scale > 0 else 0.0 for v in values]


def inspection_page(report) -> str:
    """The inspect-cells report as one HTML page: summary, the scores table, coloured excerpts per unit,
    gate saturation scatters per layer and, if measured, the gradient reach."""
    d = report.to_dict()
    m = d["model"]
    text = d["text"]
    out = [f"<h1>Hidden units of a {m['num_layers']}-layer {esc(m['cell'].upper())} ({m['hidden_size']} units)</h1>",
           f'<p>Checkpoint <code>{esc(d["checkpoint"])}</code>; text: {esc(text.get("source", ""))}, '
           f'{text["chars"]:,} characters'
           + (f', {text["skipped_chars"]:,} skipped (not in the vocabulary)' if text["skipped_chars"] else "")
           + f'; loss {d["loss_nats"]:.4f} nats/char ({d["loss_bpc"]:.3f} bpc).</p>',
           '<p class="note">AUROC scores binary features (a unit low on the feature counts: direction −), |Spearman| '
           "scores counts. Support: positions where the feature is on. Δloss: nats per character when the unit is "
           "held at its mean, on the feature's characters / elsewhere. Layers count from 0 at the embedding. Excerpts: "
           "each character's background shows the unit's activation after reading it, relative to the unit's mean "
           "over the text (white), blue below and red above, full colour at two standard deviations; hover for "
           "the value.</p>"]
    rows = []
    for name, findings in d["features"].items():
        for f in findings:
            a = f["ablation"]
            rows.append([name, f["layer"], f["state"], f["unit"], f["metric"], f"{f['score']:.3f}", f["direction"],
                         f"{f['support']:,}", "—" if a is None else f"{a['delta_nats_on']:+.4f}",
                         "—" if a is None else f"{a['delta_nats_off']:+.4f}", "—" if a is None else a["verdict"]])
    out.append("<h2>Scores</h2>")
    out.append(table(["feature", "layer", "state", "unit", "metric", "score", "dir", "support", "Δloss on",
                      "Δloss off", "ablation"], rows, left=(0, 2, 4, 10)))
    if d["unscored"]:
        out.append("<p>Not scored: " + "; ".join(f"<b>{esc(n)}</b>: {esc(r)}" for n, r in d["unscored"].items()) + "</p>")
    if d.get("probes"):
        out.append(probes_section(d["probes"]))
    out.append("<h2>Excerpts</h2>")
    for name, findings in d["features"].items():
        excerpt = d["excerpts"].get(name)
        if not excerpt:
            continue
        out.append(f"<h3>{esc(name)} <span class=\"note\">— {esc(d['feature_info'][name]['description'])}</span></h3>")
        out.append('<div class="label">feature</div>' + coloured_text(excerpt["text"], excerpt["values"],
                                                                      [float(v) for v in excerpt["values"]]
                                                                      if d["feature_info"][name]["kind"] == "binary"
                                                                      else _scaled(excerpt["values"])))
        for f, values, centre, scale in zip(findings, excerpt["units"], excerpt["centre"], excerpt["scale"]):
            out.append(f'<div class="label">layer {f["layer"]} {esc(f["state"])}[{f["unit"]}] — {f["metric"]} '
                       f'{f["score"]:.3f} {f["direction"]} (mean {centre:.3g}, sd {scale:.3g})</div>')
            out.append(coloured_text(excerpt["text"], values, standardized(values, centre, scale)))
    if d["saturation"]:
        out.append("<h2>Gate saturation</h2><p class=\"note\">Each dot is a unit: the fraction of positions its gate is "
                   "below 0.1 (left-saturated) and above 0.9 (right-saturated), as in Karpathy, Johnson &amp; "
                   "Fei-Fei (2015), figure 3. For the GRU, z near 1 overwrites and z near 0 keeps.</p>")
        for layer, gates in d["saturation"].items():
            series = {gate: (v["left"], v["right"]) for gate, v in gates.items()}
            out.append(scatter(series, "left-saturated fraction", "right-saturated fraction", f"layer {layer}"))
    if d["gradients"]:
        g = d["gradients"]
        series = {f"layer {layer}": [v / norms[0] if norms[0] else float("nan") for v in norms]
                  for layer, norms in enumerate(g["norm_by_layer"])}
        out.append("<h2>Gradient reach</h2>")
        out.append(line_chart(series, "lag k (characters back)", "relative norm",
                              "mean |d loss_T / d h_(T-k)| relative to k = 0", log_y=True, xs=g["lags"]))
    return page("charrnn inspect-cells", "\n".join(out))


def probes_section(probes) -> str:
    """The linear probes (see `charrnn.probes`) beside the best single unit, as a titled table."""
    rows = []
    for p in probes:
        u = p["best_unit"]
        rows.append([p["feature"], p["layer"], p["metric"], f"{p['score']:.3f}",
                     "—" if p.get("r2") is None else f"{p['r2']:.3f}",
                     f"layer {u['layer']} {u['state']}[{u['unit']}] {u['direction']}", f"{u['score']:.3f}"])
    return ("<h2>One unit or many?</h2><p class=\"note\">Per feature and layer, a linear probe over all the layer's "
            "units (h, and c for an LSTM; logistic for on/off features, scored by AUROC; ridge regression for counts, "
            "scored by Spearman and R²) fitted on the first half of the text and scored on the second, beside the "
            "single unit that scores best on the first half, scored on the second. A probe far above its best unit "
            "means the feature is spread over many units.</p>"
            + table(["feature", "layer", "metric", "probe", "R²", "best single unit", "its score"], rows,
                    left=(0, 2, 5)))


def _scaled(values: Sequence[float]) -> list[float]:
    top = max((abs(v) for v in values), default=0) or 1
    return [v / top for v in values]


# --- report -------------------------------------------------------------------------------------------------------


def runs_page(summaries, differences: dict) -> str:
    """`charrnn report --html`: the runs side by side, the settings that differ, and the loss curves."""
    out = [f"<h1>charrnn: {len(summaries)} run{'s' if len(summaries) != 1 else ''}</h1>"]
    rows = []
    tested = any(s.test_nats is not None for s in summaries)
    for s in summaries:
        bpc = None if s.best_val_nats is None else s.best_val_nats / math.log(2)
        test = ["—" if s.test_nats is None else f"{s.test_nats:.4f}",
                "—" if s.test_nats is None else f"{s.test_nats / math.log(2):.3f}"] if tested else []
        rows.append([str(s.path), f"{s.step:,}", "—" if s.best_val_nats is None else f"{s.best_val_nats:.4f}",
                     "—" if bpc is None else f"{bpc:.3f}", "—" if s.best_step is None else f"{s.best_step:,}", *test,
                     "—" if s.chars_per_s is None else f"{s.chars_per_s:,.0f}",
                     "—" if s.elapsed_s is None else f"{s.elapsed_s / 60:.1f} min"])
    out.append(table(["run", "step", "best val (nats)", "best val (bpc)", "at step",
                      *(["test (nats)", "test (bpc)"] if tested else []), "chars/s", "time"], rows))
    if len(summaries) > 1:
        out.append("<h2>Settings that differ</h2>")
        if differences:
            out.append(table(["setting", *[s.name for s in summaries]],
                             [[key, *("—" if v is None else shorten(v) for v in values)]
                              for key, values in differences.items()]))
        else:
            out.append('<p class="note">All runs have the same settings.</p>')
    for title, curve in (("Validation loss", "val_curve"), ("Training loss", "train_curve")):
        series = {s.name: getattr(s, curve) for s in summaries if getattr(s, curve)}
        if series:
            out.append(f"<h2>{title}</h2>")
            xs = sorted({x for pts in series.values() for x, _ in pts})
            aligned = {name: [dict(pts).get(x, float("nan")) for x in xs] for name, pts in series.items()}
            out.append(line_chart(aligned, "step", "nats per character", f"{title.lower()} (nats per character)",
                                  xs=xs, width=760, height=320))
    settings = summaries[0].settings if len(summaries) == 1 else {}
    if settings:
        out.append("<h2>Settings</h2>")
        out.append(table(["setting", "value"], [[k, v] for k, v in settings.items()]))
    return page("charrnn report", "\n".join(out))


# --- evaluate -----------------------------------------------------------------------------------------------------


def bar_chart(groups: Sequence[str], series: dict[str, Sequence[float | None]], y_label: str, title: str,
              width: int = 560, height: int = 240) -> str:
    """An SVG grouped bar chart of values in [0, 1]: one group of bars per label in `groups`, one colour per
    series; a missing value (None) draws no bar."""
    legend_w = 40 + 7 * max((len(name) for name in series), default=0)
    pad_l, pad_b, pad_t = 48, 40, 20
    plot_w, plot_h = width - pad_l - 10, height - pad_t - pad_b
    slot = plot_w / max(len(groups), 1)
    bar = slot * 0.8 / max(len(series), 1)
    parts = [f'<svg width="{width + legend_w}" height="{height}" role="img" aria-label="{esc(title)}">',
             f'<text x="{pad_l}" y="12">{esc(title)}</text>',
             f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for tick in (0, 0.5, 1):
        y = pad_t + (1 - tick) * plot_h
        parts.append(f'<text x="{pad_l - 4}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for g, label in enumerate(groups):
        parts.append(f'<text x="{pad_l + (g + 0.5) * slot:.1f}" y="{height - pad_b + 14}" '
                     f'text-anchor="middle">{esc(label)}</text>')
        for k, values in enumerate(series.values()):
            v = values[g]
            if v is None or not math.isfinite(v):
                continue
            h = max(0.0, min(1.0, v)) * plot_h
            x = pad_l + g * slot + slot * 0.1 + k * bar
            parts.append(f'<rect x="{x:.1f}" y="{pad_t + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                         f'fill="{PALETTE[k % len(PALETTE)]}"><title>{esc(f"{v:.3f}")}</title></rect>')
    parts.append(f'<text x="{pad_l + plot_w / 2:.0f}" y="{height - 8}" text-anchor="middle">'
                 f'distance to the opener (characters)</text>')
    parts.append(f'<text x="12" y="{pad_t + plot_h / 2:.0f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {pad_t + plot_h / 2:.0f})">{esc(y_label)}</text>')
    for k, name in enumerate(series):
        ly = pad_t + 10 + 16 * k
        parts.append(f'<rect x="{width + 8}" y="{ly - 5}" width="12" height="10" fill="{PALETTE[k % len(PALETTE)]}"/>'
                     f'<text x="{width + 26}" y="{ly + 4}">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _loss_cells(x: dict) -> list[str]:
    return ["—", "—"] if x["nats"] is None else [f"{x['nats']:.4f}", f"{x['bpc']:.3f}"]


def _share(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def evaluation_page(d: dict) -> str:
    """`charrnn evaluate --html`: the report (`charrnn.evaluation.EvaluationReport.to_dict()`) as one page: the
    loss, by class, the n-gram table, accuracy on closers by distance (table and chart), the error breakdown."""
    ng, lr, e = d["ngram"], d["long_range"], d["errors"]
    text, ckpt = d.get("text") or {}, d.get("checkpoint") or {}
    out = ["<h1>Evaluation</h1>",
           f"<p>Text: {esc(text.get('source', 'given ids'))}, {d['characters']:,} predictions"
           + (f"; {text['skipped_chars']:,} characters skipped (not in the vocabulary)" if text.get("skipped_chars")
              else "")
           + (f". Checkpoint <code>{esc(ckpt['path'])}</code> at step {esc(ckpt.get('step'))}" if ckpt else "")
           + ".</p>",
           "<h2>Loss</h2>",
           table(["model", "nats", "bpc"], [
               ["network", *_loss_cells(d["loss"])],
               [f"best n-gram (n = {ng['best_n']})", *_loss_cells(ng["best"])],
               ["margin (n-gram − network)", *("—" if v is None else f"{v:+.4f}"
                                                for v in (ng["margin"]["nats"], ng["margin"]["bpc"]))]]),
           "<h2>Loss by character class</h2>",
           table(["class", "count", "network nats", "network bpc", f"{ng['best_n']}-gram nats", f"{ng['best_n']}-gram bpc"],
                 [[r["class"], f"{r['count']:,}", *_loss_cells(r["network"]), *_loss_cells(r["ngram"])]
                  for r in d["by_class"]]),
           f"<h2>n-gram baselines</h2><p class=\"note\">{esc(ng['smoothing'])}, trained on the run's training split "
           f"({ng['train_characters']:,} characters). Best: n = {ng['best_n']}.</p>",
           table(["n", "nats", "bpc"], [[r["n"], *_loss_cells(r)] for r in ng["table"]]),
           f"<h2>Closing brackets and quotes by distance</h2><p class=\"note\">Accuracy: the fraction of closers to "
           f"which the model gave p ≥ {lr['threshold']}, by distance to their opener in characters; the n-gram model "
           f"is the best one (n = {lr['ngram_n']}).</p>",
           table(["distance", "closers", "network", f"{lr['ngram_n']}-gram"],
                 [[b["distance"], f"{b['count']:,}", _share(b["network_accuracy"]), _share(b["ngram_accuracy"])]
                  for b in lr["buckets"]]),
           bar_chart([b["distance"] for b in lr["buckets"]],
                     {"network": [b["network_accuracy"] for b in lr["buckets"]],
                      f"{lr['ngram_n']}-gram": [b["ngram_accuracy"] for b in lr["buckets"]]},
                     "accuracy", "accuracy on closing characters by distance"),
           f"<h2>The network's errors</h2><p class=\"note\">An error: p &lt; {e['threshold']} for the true character; "
           f"{e['count']:,} of {e['characters']:,} predictions ({_share(e['fraction'])}). Each is counted in the first "
           f"category it fits, in this order (docs/evaluate.md defines them).</p>",
           table(["category", "errors", "share"],
                 [[r["category"], f"{r['count']:,}", _share(r["fraction"])] for r in e["breakdown"]])]
    return page("charrnn evaluate", "\n".join(out))
