"""`charrnn explore`: one self-contained HTML page for looking inside a model interactively.

    page = explore_page(params, model_config, vocab, text)          # str: the whole page
    result = explore("runs/mine", out="page.html")                   # the command's work, from a checkpoint

The page records the model on the text in the same jitted scans as inspect-cells (`inspection.record`, through
`inspection.inspect_recorded`), carries inspect-cells' scores, ablations and linear probes in, and adds per
position the model's five likeliest next characters (one jitted `lax.map` over blocks of positions). Every
unit of every layer and state is stored quantised: per unit, ``value ≈ offset + scale * code`` with a uint8
code, so the error is at most scale / 2 (`quantise`). The page's code (explore.js, explore.css) is inlined;
a Content-Security-Policy allows only that code and forbids every network request, so the page works offline
from a file URL. All corpus text goes in as JSON inside a script element that is never executed, with ``<``,
``>``, ``&``, U+2028 and U+2029 escaped (`script_json`). See docs/explore.md for what the page does.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import features as feats
from . import inspection, model
from .config import ConfigError, ModelConfig

DEFAULT_MAX_CHARS = 5_000  # a 2x256 LSTM's page is then ~17 MB and opens in about a second (docs/explore.md)
TOP_NEXT = 5  # next-character guesses shown per position, as in Karpathy et al. (2015), figure 4
BLOCK = 1024  # positions per step of the jitted top-k map


# --- the data -----------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("k",))
def _top_next(params, h_blocks, *, k: int):
    """h_blocks (B, BLOCK, H) of the last layer -> probabilities and ids (B, BLOCK, k) of the k likeliest next
    characters, block by block in one `lax.map`, so the (N, vocab) probabilities never exist at once."""

    def block(h):
        values, ids = jax.lax.top_k(jax.nn.log_softmax(model.head(params, h), axis=-1), k)
        return jnp.exp(values), ids

    return jax.lax.map(block, h_blocks)


def top_next(params, last_h: np.ndarray, k: int = TOP_NEXT) -> tuple[np.ndarray, np.ndarray]:
    """The k likeliest next characters after each position: ids (N, k) int32 and probabilities (N, k)
    float32, likeliest first, from the last layer's recorded h (N, H)."""
    n, hidden = last_h.shape
    k = min(k, int(params["head"]["b"].shape[0]))
    blocks = -(-n // BLOCK)
    padded = np.zeros((blocks * BLOCK, hidden), np.float32)
    padded[:n] = last_h
    probs, ids = _top_next(params, jnp.asarray(padded.reshape(blocks, BLOCK, hidden)), k=k)
    return np.asarray(ids).reshape(-1, k)[:n].astype(np.int32), np.asarray(probs).reshape(-1, k)[:n]


@dataclasses.dataclass(frozen=True)
class Quantised:
    """Activations (N, U) as uint8 codes per unit: value ≈ offset[u] + scale[u] * codes[u, t].

    codes: (U, N) uint8, unit-major (a unit's values lie together, as the page reads them); offset, scale (U,)
    float64: each unit's minimum and (maximum - minimum) / 255, so |error| <= scale / 2.
    """

    codes: np.ndarray
    offset: np.ndarray
    scale: np.ndarray

    def values(self) -> np.ndarray:
        """The dequantised activations (N, U), as the page computes them."""
        return (self.offset[:, None] + self.scale[:, None] * self.codes).T


def quantise(x: np.ndarray) -> Quantised:
    """Quantises each column of `x` (N, U) to 256 levels spanning its own range (a constant column: code 0)."""
    x = np.asarray(x, np.float64)
    lo, hi = x.min(axis=0), x.max(axis=0)
    scale = (hi - lo) / 255.0
    safe = np.where(scale > 0, scale, 1.0)
    codes = np.clip(np.rint((x - lo) / safe), 0, 255).astype(np.uint8)
    return Quantised(np.ascontiguousarray(codes.T), lo, scale)


_UNSAFE_IN_SCRIPT = re.compile("[<>&\u2028\u2029\ud800-\udfff]")


def script_json(value) -> str:
    """JSON for a ``<script type="application/json">`` element: ``<``, ``>``, ``&``, U+2028, U+2029 (and lone
    surrogates) written as \\u escapes, so no text inside can end the element or open a comment. They only ever
    occur inside JSON strings, where the escape means the same character."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _UNSAFE_IN_SCRIPT.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _finite(x: float) -> Optional[float]:
    return float(x) if np.isfinite(x) else None


def page_data(inspected: inspection.Inspected, params, vocab, *, title: str = "") -> dict:
    """Everything the page shows, as one JSON-able dict (the layout explore.js reads; binary arrays base64,
    little-endian)."""
    report, recording, text = inspected.report, inspected.recording, inspected.text
    config = report.model
    groups = [key for key in recording.states]  # (layer, state), layer-major as recorded
    n, hidden = len(recording.ids), config.hidden_size
    quantised = [quantise(recording.states[key]) for key in groups]
    ids, probs = top_next(params, recording.states[(config.num_layers - 1, "h")])
    d = report.to_dict()
    return {
        "title": title,
        "checkpoint": report.checkpoint,
        "model": d["model"],
        "source": d["text"],
        "loss_nats": d["loss_nats"],
        "text": text,
        "n": n,
        "hidden": hidden,
        "groups": [{"layer": layer, "state": state, "offset": q.offset.tolist(), "scale": q.scale.tolist(),
                    "mean": recording.states[(layer, state)].mean(axis=0, dtype=np.float64).tolist(),
                    "std": recording.states[(layer, state)].std(axis=0, dtype=np.float64).tolist()}
                   for (layer, state), q in zip(groups, quantised)],
        "codes": base64.b64encode(b"".join(q.codes.tobytes() for q in quantised)).decode("ascii"),
        "vocab": list(vocab.symbols),
        "next_ids": _b64(ids, "<u2") if len(vocab) <= 65536 else _b64(ids, "<u4"),
        "next_wide": len(vocab) > 65536,
        "next_probs": _b64(np.rint(probs * 65535), "<u2"),
        "nll": _b64(recording.nll, "<f4"),
        "features": [{"name": f.name, "kind": f.kind, "description": f.description,
                      "scores": {f"{layer}/{state}": [_finite(v) for v in np.round(signed, 5)]
                                 for (layer, state), signed in inspected.scores[f.name].items()}}
                     for f in report.features if f.name in inspected.scores],
        "unscored": d["unscored"],
        "findings": d["features"],
        "probes": d["probes"],
    }


def build_page(data: dict) -> str:
    """The HTML page around `data` (see `page_data`): inline CSS and JS, the CSP naming their hashes."""
    from .html import esc

    css = resources.files(__package__).joinpath("explore.css").read_text(encoding="utf-8")
    js = resources.files(__package__).joinpath("explore.js").read_text(encoding="utf-8")
    digest = lambda s: base64.b64encode(hashlib.sha256(s.encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; script-src 'sha256-{digest(js)}'; style-src 'sha256-{digest(css)}'; "
           "img-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(data['title'] or 'charrnn explore')}</title><style>{css}</style></head>\n<body>\n"
            "<noscript>This page needs JavaScript (it runs only its own inline code, offline).</noscript>\n"
            f"<script type=\"application/json\" id=\"charrnn-data\">{script_json(data)}</script>\n"
            f"<script>{js}</script>\n</body></html>\n")


def explore_page(params, config: ModelConfig, vocab, text: str, *, regexes: Mapping[str, str] = {},
                 features: Optional[Sequence[feats.Feature]] = None, source: Optional[dict] = None,
                 checkpoint: str = "", top: int = 3, ablation_chars: int = DEFAULT_MAX_CHARS,
                 title: str = "") -> str:
    """The explore page for a model on `text`, as a string.

    Args:
      params, config, vocab: the model.
      text: what to record it on. Characters outside the vocabulary are skipped, as inspect-cells does.
      regexes: extra on/off features {name: regular expression}, as ``--feature NAME=REGEX``.
      features: the features to score units by (default: the built-in ones, `features.builtin_features`), one
        value per character of `text`; the regex features are added to them.
      source: where the text came from ({"path", "source", ...}), shown on the page.
      checkpoint, title: shown on the page.
      top, ablation_chars: as inspect-cells' --top and --ablation-chars.

    Raises:
      CorpusError: the text is empty or holds fewer than 2 characters the model knows.
      ConfigError: a regular expression does not compile.
    """
    from .text import CorpusError

    where = (source or {}).get("path", "the text")
    if not text:
        raise CorpusError(f"{where}: the text is empty; give a text with something in it")
    chosen = list(feats.builtin_features(text) if features is None else features)
    for name, pattern in regexes.items():
        try:
            chosen.append(feats.regex_feature(name, pattern, text))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    try:
        inspected = inspection.inspect_recorded(params, config, vocab, text, chosen, checkpoint=checkpoint,
                                                source=source or {"path": "", "source": "text"}, top=top,
                                                ablation_chars=ablation_chars)
    except ValueError as e:
        raise CorpusError(f"{where}: {e}; none of its characters are in the model's vocabulary"
                          if "at least 2" in str(e) else f"{where}: {e}") from None
    return build_page(page_data(inspected, params, vocab, title=title))


# --- the command ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Explored:
    """What `explore` wrote: the page's path and size in bytes, the characters recorded, the text's source."""

    path: Path
    bytes: int
    chars: int
    source: dict


def explore(checkpoint_path: Union[str, Path], text_path: Union[str, Path, None] = None,
            out: Union[str, Path] = "explore.html", *, feature_specs: Sequence[str] = (),
            max_chars: int = DEFAULT_MAX_CHARS, top: int = 3, ablation_chars: Optional[int] = None,
            progress: Callable[[str], None] = lambda message: None) -> Explored:
    """``charrnn explore CHECKPOINT [TEXT] --out PAGE``: writes the page atomically (all or nothing).

    Args:
      checkpoint_path: a checkpoint file or run directory.
      text_path: the text to explore (default: the run's validation split).
      out: where the page goes.
      feature_specs: ``NAME=REGEX`` strings, as inspect-cells' --feature.
      max_chars: record at most this many characters of the text.
      top, ablation_chars: as inspect-cells' (ablation_chars defaults to max_chars; 0 skips ablation).
      progress: called with one line per stage (what is being done, warnings).

    Raises:
      CheckpointError: not a checkpoint. CorpusError: the text is missing, empty or holds no character the
      model knows. ConfigError: an option is out of range or a regular expression does not compile.
    """
    from . import checkpoint, runs
    from .files import write_atomic

    if max_chars < 1 or top < 1:
        raise ConfigError(f"--{'max-chars' if max_chars < 1 else 'top'} must be at least 1, got "
                          f"{max_chars if max_chars < 1 else top}")
    if ablation_chars is not None and ablation_chars < 0:
        raise ConfigError(f"--ablation-chars must be >= 0, got {ablation_chars}")
    try:
        regexes = dict(feats.parse_feature_spec(spec) for spec in feature_specs)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    ckpt = checkpoint.load(checkpoint_path)
    text, source = runs.text_to_read(ckpt, text_path, max_chars=max_chars)
    if "warning" in source:
        progress(f"warning: {source['warning']}")
    resolved = checkpoint.resolve(checkpoint_path)
    progress(f"Recording a {ckpt.model.num_layers}×{ckpt.model.hidden_size} {ckpt.model.cell.upper()} on "
             f"{len(text):,} characters of {source['source']} ...")
    page = explore_page(checkpoint.load_params(ckpt), ckpt.model, ckpt.vocab, text, regexes=regexes,
                        source=source, checkpoint=str(resolved), top=top,
                        ablation_chars=min(len(text), max_chars) if ablation_chars is None else ablation_chars,
                        title=f"charrnn explore: {resolved.parent.name}/{resolved.name}")
    encoded = page.encode("utf-8")
    path = write_atomic(Path(out), encoded)
    known = set(ckpt.vocab.symbols)
    return Explored(path, len(encoded), sum(c in known for c in text), source)
