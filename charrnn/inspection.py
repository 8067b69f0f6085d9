"""Looking inside a trained model: which hidden units mean something a person can name, and whether the model
needs them.

    recording = record(params, config, ids)              # every layer's h, c and gates at every position
    scores = score_units(recording, features)            # AUROC / Pearson / Spearman per (unit, feature)
    ablation = ablate(params, config, ids, units, ...)   # clamp a unit to its mean: how much worse is the loss?
    saturation(recording)                                # gate saturation, as in Karpathy et al. (2015) fig. 3
    probes.probe_layers(recording, features)             # one unit or many? (`charrnn.probes`)
    gradient_decay(params, config, ids)                  # |d loss_T / d h_{T-k}| against k

Conventions: the state at position t is the state *after* reading character t, so it predicts character
t+1; features (see `charrnn.features`) follow the same convention. Losses are in nats per character.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import model
from .scoring import Unit, auroc, correlation, rank_columns
from .config import ModelConfig
from .features import Feature

WINDOW = 1024  # characters per jitted scan; longer texts run window by window with the state carried
# The states a unit can be found in, per cell. The LSTM candidate g is left out: it is an input to c, and
# reporting both would list one finding twice.
INSPECTED_STATES = {"rnn": ("h",), "lstm": ("h", "c", "i", "f", "o"), "gru": ("h", "z", "r")}
GATES = {"rnn": (), "lstm": ("i", "f", "o"), "gru": ("z", "r")}
SATURATION_LOW, SATURATION_HIGH = 0.1, 0.9  # the thresholds of the paper's saturation plots


@dataclasses.dataclass(frozen=True, eq=False)
class Recording:
    """A model's states over a text.

    Attributes:
      ids: (N,) the token ids that were run.
      states: (layer, state) -> (N, H) float32 activations after each character.
      nll: (N - 1,) loss in nats of predicting character t+1 from the state after t.
    """

    ids: np.ndarray
    states: dict[tuple[int, str], np.ndarray]
    nll: np.ndarray

    @property
    def loss_nats(self) -> float:
        return float(self.nll.mean()) if len(self.nll) else float("nan")

    def activation(self, unit: Unit) -> np.ndarray:
        return self.states[(unit.layer, unit.state)][:, unit.unit]


def _clamp_edit(clamps):
    """An edit for `model.run_layers` that holds chosen units at fixed values, one set per batch row.

    clamps: {layer: {state: (mask (B, H) bool, value (B, H))}}.
    """

    def edit(layer, name, value, _):
        if layer in clamps and name in clamps[layer]:
            mask, clamped = clamps[layer][name]
            return jnp.where(mask, clamped, value)
        return value

    return edit


@functools.partial(jax.jit, static_argnames=("config", "outputs"))
def _run_window(params, config: ModelConfig, carry, tokens, targets, clamps, *, outputs: tuple[str, ...]):
    """One window: tokens and targets (T, B). Returns the carry, per-layer states (T, B, H), and nll (T, B)."""
    edit = _clamp_edit(clamps) if clamps else None
    carry, states = model.run_layers(params, config, tokens, carry, outputs=outputs, edit=edit)
    return carry, states, model.position_nll(model.head(params, states[-1]["h"]), targets)


def _windows(ids: np.ndarray, batch: int, window: int):
    """(tokens, targets, valid) per window, each (window, batch): the text repeated in every batch column,
    padded at the end so every window has the same shape (one compilation)."""
    n = len(ids)
    for start in range(0, n, window):
        valid = min(window, n - start)
        tokens = np.zeros(window, np.int32)
        targets = np.zeros(window, np.int32)
        tokens[:valid] = ids[start : start + valid]
        following = ids[start + 1 : start + valid + 1]  # the last character of the text has no target
        targets[: len(following)] = following
        yield np.repeat(tokens[:, None], batch, 1), np.repeat(targets[:, None], batch, 1), valid


def record(params, config: ModelConfig, ids: np.ndarray, *, states: Optional[Sequence[str]] = None,
           window: int = WINDOW) -> Recording:
    """Runs the model over `ids` (N,) from the zero state and records every layer's states.

    The text runs in windows of `window` characters (one jitted `lax.scan` each) with the state carried
    between them, so device memory does not grow with the text.
    """
    names = tuple(states or INSPECTED_STATES[config.cell])
    carry = model.initial_carry(config, 1)
    recorded = {(layer, name): [] for layer in range(config.num_layers) for name in names}
    nll = []
    for tokens, targets, valid in _windows(np.asarray(ids, np.int32), 1, window):
        carry, layer_states, window_nll = _run_window(params, config, carry, tokens, targets, None, outputs=names)
        for layer, per_state in enumerate(layer_states):
            for name in names:
                recorded[(layer, name)].append(np.asarray(per_state[name][:valid, 0]))
        nll.append(np.asarray(window_nll[:valid, 0]))
    n = len(ids)
    return Recording(
        ids=np.asarray(ids),
        states={key: np.concatenate(parts).astype(np.float32) for key, parts in recorded.items()},
        nll=np.concatenate(nll)[: max(n - 1, 0)].astype(np.float64) if nll else np.zeros(0),
    )


# --- scoring ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UnitScore:
    """How well one unit tracks one feature.

    metric: "auroc" for binary features (score = max(AUROC, 1 - AUROC), direction says which), "spearman"
    for counts (score = |Spearman|, with `pearson` and `spearman` signed). support: positive positions of a
    binary feature, or positions with a non-zero value of a count.
    """

    unit: Unit
    metric: str
    score: float
    direction: str  # "+": higher on the feature; "-": lower
    support: int
    auroc: Optional[float] = None
    pearson: Optional[float] = None
    spearman: Optional[float] = None


MIN_SUPPORT = 20  # fewer positive (or negative) positions than this and a score is not a finding


def scorable(features: Sequence[Feature], min_support: int = MIN_SUPPORT) -> tuple[list[Feature], dict[str, str]]:
    """The features that can be scored, and {name: why not} for the others (never on, too rare, constant)."""
    usable, unscored = [], {}
    for f in features:
        values = np.asarray(f.values)
        if f.kind == "binary":
            p = int(values.sum())
            if p == 0:
                unscored[f.name] = "never fires in this text"
            elif p < min_support or len(values) - p < min_support:
                unscored[f.name] = f"only {min(p, len(values) - p)} {'positive' if p < min_support else 'negative'} positions (fewer than {min_support})"
            else:
                usable.append(f)
        else:
            if np.all(values == values[0]):
                unscored[f.name] = f"constant ({values[0]}) in this text"
            else:
                usable.append(f)
    return usable, unscored


def unit_scores(recording: Recording, features: Sequence[Feature]) -> dict[str, dict[tuple[int, str], np.ndarray]]:
    """Every unit's score against every feature: {name: {(layer, state): (H,)}}, the AUROC of a binary feature
    or the Spearman correlation of a count (both signed: an AUROC below 0.5, a negative correlation, is a unit
    low on the feature). Give only features that `scorable` accepts."""
    out: dict[str, dict[tuple[int, str], np.ndarray]] = {f.name: {} for f in features}
    value_ranks = {f.name: rank_columns(np.asarray(f.values, np.float64)[:, None])[:, 0]
                   for f in features if f.kind == "count"}
    for key, activations in recording.states.items():
        ranks = rank_columns(activations)
        for f in features:
            out[f.name][key] = (auroc(ranks, np.asarray(f.values).astype(bool)) if f.kind == "binary"
                                else correlation(ranks, value_ranks[f.name]))
    return out


def score_units(recording: Recording, features: Sequence[Feature], top: int = 3, min_support: int = MIN_SUPPORT,
                scores: Optional[dict] = None) -> tuple[dict[str, list[UnitScore]], dict[str, str]]:
    """Scores every (unit, feature) pair and keeps the `top` units per feature.

    `scores`, if given, is what `unit_scores` returned for these features (so a caller that needs every unit's
    score computes them once).

    Returns:
      ({feature name: best units, best first}, {feature name: why it was not scored}).
    """
    usable, unscored = scorable(features, min_support)
    if scores is None:
        scores = unit_scores(recording, usable)
    scored: dict[str, list[UnitScore]] = {f.name: [] for f in usable}
    for f in usable:
        values = np.asarray(f.values)
        for (layer, state), signed in scores[f.name].items():
            if f.kind == "binary":
                strength = np.maximum(signed, 1.0 - signed)
                best = np.argsort(-strength, kind="stable")[:top]
                scored[f.name] += [UnitScore(Unit(layer, state, int(u)), "auroc", float(strength[u]),
                                             "+" if signed[u] >= 0.5 else "-", int(values.sum()), auroc=float(signed[u]))
                                   for u in best]
            else:
                best = np.argsort(-np.abs(signed), kind="stable")[:top]
                activations = recording.states[(layer, state)][:, best].astype(np.float64)
                r = correlation(activations, values.astype(np.float64))
                scored[f.name] += [UnitScore(Unit(layer, state, int(u)), "spearman", float(abs(signed[u])),
                                             "+" if signed[u] >= 0 else "-", int(np.count_nonzero(values)),
                                             pearson=float(r[k]), spearman=float(signed[u]))
                                   for k, u in enumerate(best)]
    for name in scored:
        scored[name] = sorted(scored[name], key=lambda s: -s.score)[:top]
    return scored, unscored


# --- ablation --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ablation:
    """What clamping one unit to its mean does to the loss (nats per character, ablated minus intact).

    on: mean change where the feature is on (binary) or above its median (count); off: elsewhere.
    verdict (see `verdict`): "needed on the feature", "needed off the feature", "needed everywhere" or
    "not needed". A unit that holds a binary state can matter on either side of it: a quote unit may be what
    tells the model it has *left* the quotes.
    """

    delta_on: float
    delta_off: float
    chars: int
    verdict: str

    def to_dict(self) -> dict:
        return {"delta_nats_on": self.delta_on, "delta_nats_off": self.delta_off, "chars": self.chars,
                "verdict": self.verdict}


NEEDED_NATS = 0.01  # a loss rise smaller than this, per character, is not worth a claim


def verdict(delta_on: float, delta_off: float) -> str:
    """Where the model needs a unit: the loss rises by at least NEEDED_NATS on one side and at least twice as
    much as on the other ("on" / "off the feature"), by that much on both ("everywhere"), or on neither."""
    on, off = delta_on >= NEEDED_NATS, delta_off >= NEEDED_NATS
    if on and delta_on >= 2.0 * max(delta_off, 0.0):
        return "needed on the feature"
    if off and delta_off >= 2.0 * max(delta_on, 0.0):
        return "needed off the feature"
    return "needed everywhere" if on or off else "not needed"


def ablated_nll(params, config: ModelConfig, ids: np.ndarray, units: Sequence[Unit], means: Sequence[float],
                window: int = WINDOW) -> np.ndarray:
    """Per-position loss (len(units), N - 1) with each unit in turn held at its mean, all in one batch."""
    K, H = len(units), config.hidden_size
    clamps: dict = {}
    for k, (u, mean) in enumerate(zip(units, means)):
        mask, value = clamps.setdefault(u.layer, {}).setdefault(u.state, (np.zeros((K, H), bool), np.zeros((K, H), np.float32)))
        mask[k, u.unit] = True
        value[k, u.unit] = mean
    clamps = {layer: {s: (jnp.asarray(m), jnp.asarray(v)) for s, (m, v) in by_state.items()}
              for layer, by_state in clamps.items()}
    carry = model.initial_carry(config, K)
    out = []
    for tokens, targets, valid in _windows(np.asarray(ids, np.int32), K, window):
        carry, _, nll = _run_window(params, config, carry, tokens, targets, clamps, outputs=("h",))
        out.append(np.asarray(nll[:valid]).T)
    return np.concatenate(out, axis=1)[:, : len(ids) - 1].astype(np.float64)


def feature_on(feature: Feature) -> np.ndarray:
    """Where a feature counts as on for ablation: its positive positions, or a count above its median."""
    values = np.asarray(feature.values)
    return values.astype(bool) if feature.kind == "binary" else values > np.median(values)


def ablate(params, config: ModelConfig, recording: Recording, findings: dict[str, list[UnitScore]],
           features: Sequence[Feature], max_chars: int = 20_000) -> dict[tuple[str, Unit], Ablation]:
    """Clamps each unit of `findings` to its mean over the recording and measures the loss on the first
    `max_chars` characters, on the feature's positions and elsewhere. Every unit runs in one batch."""
    by_name = {f.name: f for f in features}
    units = list(dict.fromkeys(s.unit for scores in findings.values() for s in scores))
    if not units:
        return {}
    n = min(len(recording.ids), max_chars + 1)
    ids = recording.ids[:n]
    means = [float(recording.activation(u).mean()) for u in units]
    intact = recording.nll[: n - 1]
    deltas = ablated_nll(params, config, ids, units, means) - intact[None, :]
    row = {u: k for k, u in enumerate(units)}
    result = {}
    for name, scores in findings.items():
        on = feature_on(by_name[name])[: n - 1]
        for s in scores:
            d = deltas[row[s.unit]]
            d_on = float(d[on].mean()) if on.any() else float("nan")
            d_off = float(d[~on].mean()) if (~on).any() else float("nan")
            result[(name, s.unit)] = Ablation(d_on, d_off, n - 1, verdict(d_on, d_off))
    return result


# --- gates and gradients ---------------------------------------------------------------------------------------


def saturation(recording: Recording, config: ModelConfig) -> dict[int, dict[str, dict[str, np.ndarray]]]:
    """Per layer and gate, the fraction of positions each unit is left-saturated (< 0.1) and right-saturated
    (> 0.9). Returns {layer: {gate: {"left": (H,), "right": (H,)}}}.

    For the GRU, remember that z near 1 means *overwrite* and z near 0 *keep*.
    """
    out: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    for layer in range(config.num_layers):
        for gate in GATES[config.cell]:
            if (layer, gate) not in recording.states:
                continue
            g = recording.states[(layer, gate)]
            out.setdefault(layer, {})[gate] = {"left": (g < SATURATION_LOW).mean(axis=0),
                                               "right": (g > SATURATION_HIGH).mean(axis=0)}
    return out


@functools.partial(jax.jit, static_argnames=("config", "lags"))
def _gradient_norms(params, config: ModelConfig, tokens, targets, *, lags: int):
    """tokens, targets (T, B). Mean over the batch of |d loss_{T-1} / d h_t| per layer, for the last lags+1 t."""
    T, B = tokens.shape
    deltas = [jnp.zeros((T, B, config.hidden_size)) for _ in range(config.num_layers)]

    def last_loss(deltas):
        # Adding a zero to h_t changes nothing, but its gradient is d loss / d h_t.
        edit = lambda layer, name, value, d: value + d if name == "h" else value
        _, states = model.run_layers(params, config, tokens, model.initial_carry(config, B), edit=edit,
                                     edit_inputs=deltas)
        logits = model.head(params, states[-1]["h"][-1])  # (B, V)
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[-1][:, None], -1).sum()

    grads = jax.grad(last_loss)(deltas)
    return jnp.stack([jnp.linalg.norm(g[T - 1 - lags :], axis=-1).mean(axis=1) for g in grads])  # (L, lags+1)


def gradient_decay(params, config: ModelConfig, ids: np.ndarray, lags: int = 100, samples: int = 64,
                   warmup: int = 50) -> np.ndarray:
    """How far back the loss reaches: the mean norm of d loss_T / d h_{T-k} for k = 0..lags, per layer.

    Each of `samples` windows (spread evenly over the text) runs `warmup` characters from the zero state,
    then `lags` more; the loss is that of the window's last prediction. Returns (num_layers, lags + 1),
    index k = lag. An RNN's curve falls by orders of magnitude within a few steps; an LSTM's stays up longer.
    """
    T = warmup + lags + 1
    ids = np.asarray(ids, np.int32)
    if len(ids) < T + 1:
        raise ValueError(f"the text has {len(ids)} characters; measuring {lags} lags needs at least {T + 1}")
    starts = np.linspace(0, len(ids) - T - 1, samples).astype(int)
    tokens = np.stack([ids[s : s + T] for s in starts], axis=1)
    targets = np.stack([ids[s + 1 : s + T + 1] for s in starts], axis=1)
    norms = np.asarray(_gradient_norms(params, config, jnp.asarray(tokens), jnp.asarray(targets), lags=lags))
    return norms[:, ::-1]  # lag 0 first


# --- the whole inspection --------------------------------------------------------------------------------------


def excerpt_window(feature: Feature, width: int = 160, stride: int = 20) -> int:
    """Start of the `width`-character stretch where `feature` changes most (binary: most switches, balanced;
    count: widest spread), so an excerpt shows the unit both on and off."""
    values = np.asarray(feature.values, np.float64)
    n = len(values)
    if n <= width:
        return 0
    starts = np.arange(0, n - width + 1, stride)
    if feature.kind == "binary":
        switches = np.r_[0.0, np.abs(np.diff(values))].cumsum()
        on = np.r_[0.0, values].cumsum()
        frac = (on[starts + width] - on[starts]) / width
        interest = (switches[starts + width - 1] - switches[starts]) * frac * (1 - frac)
    else:
        interest = np.array([values[s : s + width].std() for s in starts])
    return int(starts[int(np.argmax(interest))])


@dataclasses.dataclass
class Report:
    """Everything `inspect` finds, ready for JSON (`to_dict`) or rendering."""

    checkpoint: str
    model: ModelConfig
    text: dict  # {"path", "source", "chars", "skipped_chars", "skipped"}
    loss_nats: float
    features: list[Feature]
    findings: dict[str, list[UnitScore]]
    unscored: dict[str, str]
    ablations: dict[tuple[str, Unit], Ablation]
    excerpts: dict[str, dict]  # feature -> {"start", "text", "values", "units": [activations per finding]}
    saturation: dict[int, dict[str, dict[str, np.ndarray]]]
    gradients: Optional[np.ndarray] = None  # (num_layers, lags + 1)
    probes: list = dataclasses.field(default_factory=list)  # [charrnn.probes.Probe], per feature and layer

    def to_dict(self) -> dict:
        """The documented JSON schema (docs/json.md, "inspect-cells")."""
        def finding(name, s: UnitScore):
            d = {"layer": s.unit.layer, "state": s.unit.state, "unit": s.unit.unit, "metric": s.metric,
                 "score": round(s.score, 6), "direction": s.direction, "support": s.support}
            for key in ("auroc", "pearson", "spearman"):
                if getattr(s, key) is not None:
                    d[key] = round(getattr(s, key), 6)
            ablation = self.ablations.get((name, s.unit))
            d["ablation"] = None if ablation is None else {k: (round(v, 6) if isinstance(v, float) else v)
                                                         for k, v in ablation.to_dict().items()}
            return d

        return {
            "checkpoint": self.checkpoint,
            "model": self.model.to_dict(),
            "text": self.text,
            "loss_nats": round(self.loss_nats, 6),
            "loss_bpc": round(self.loss_nats / math.log(2), 6),
            "features": {name: [finding(name, s) for s in scores] for name, scores in self.findings.items()},
            "feature_info": {f.name: {"kind": f.kind, "description": f.description,
                                      "support": int(np.count_nonzero(f.values))} for f in self.features},
            "unscored": self.unscored,
            "excerpts": self.excerpts,
            "saturation": {str(layer): {gate: {"left": np.round(v["left"], 4).tolist(),
                                               "right": np.round(v["right"], 4).tolist(),
                                               "mean_left": round(float(v["left"].mean()), 4),
                                               "mean_right": round(float(v["right"].mean()), 4)}
                                        for gate, v in gates.items()}
                           for layer, gates in self.saturation.items()},
            "gradients": None if self.gradients is None else {
                "lags": list(range(self.gradients.shape[1])),
                "norm_by_layer": [np.round(row, 8).tolist() for row in self.gradients]},
            "probes": [p.to_dict() for p in self.probes],
        }


def known_text(vocab, text: str) -> tuple[str, np.ndarray, dict[str, int]]:
    """The characters of `text` the model knows: (kept text, (len(text),) bool mask of kept characters,
    {skipped character: count}, most frequent first).

    Raises:
      ValueError: the text is empty or holds fewer than 2 characters the model knows.
    """
    symbols = set(vocab.symbols)
    keep = np.fromiter((c in symbols for c in text), bool, count=len(text))
    skipped: dict[str, int] = {}
    for c in (c for c, k in zip(text, keep) if not k):
        skipped[c] = skipped.get(c, 0) + 1
    kept_text = "".join(c for c, k in zip(text, keep) if k) if not keep.all() else text
    if len(kept_text) < 2:
        raise ValueError("the text is empty" if not text else
                         f"the text has {len(kept_text)} character(s) the model knows; it needs at least 2")
    return kept_text, keep, dict(sorted(skipped.items(), key=lambda kv: -kv[1]))


def encode_known(vocab, kept_text: str) -> np.ndarray:
    """Token ids of text that `known_text` kept. A byte-level model's text comes as latin-1, one character per
    byte, so positions are byte offsets."""
    return vocab.encode(kept_text.encode("latin-1")) if vocab.byte_level else vocab.encode(kept_text)


def inspect(params, config: ModelConfig, vocab, text: str, features: Sequence[Feature], *, checkpoint: str = "",
            source: Optional[dict] = None, top: int = 3, ablation_chars: int = 20_000, gradients: bool = False,
            excerpt_width: int = 160, probes: bool = True) -> Report:
    """Records the model over `text`, scores every unit against every feature, ablates the best, fits a linear
    probe per feature and layer (see `charrnn.probes`), and measures gate saturation (and, with `gradients`,
    how far back gradients reach).

    Characters outside the model's vocabulary are skipped (and counted); features are computed on the text
    as given and then restricted to the characters the model reads, so a skipped character shifts nothing.

    Raises:
      ValueError: the text is empty or holds no character the model knows.
    """
    return inspect_recorded(params, config, vocab, text, features, checkpoint=checkpoint, source=source, top=top,
                            ablation_chars=ablation_chars, gradients=gradients, excerpt_width=excerpt_width,
                            probes=probes).report


@dataclasses.dataclass(frozen=True, eq=False)
class Inspected:
    """What `inspect_recorded` returns: the report, the recording it came from, the text the model read (the
    characters it knows), and every unit's score against every scored feature (see `unit_scores`)."""

    report: Report
    recording: Recording
    text: str
    scores: dict[str, dict[tuple[int, str], np.ndarray]]


def inspect_recorded(params, config: ModelConfig, vocab, text: str, features: Sequence[Feature], *,
                     checkpoint: str = "", source: Optional[dict] = None, top: int = 3, ablation_chars: int = 20_000,
                     gradients: bool = False, excerpt_width: int = 160, probes: bool = True) -> Inspected:
    """`inspect`, keeping the recording and every unit's scores as well as the report."""
    kept_text, keep, skipped = known_text(vocab, text)
    features = [dataclasses.replace(f, values=np.asarray(f.values)[keep]) for f in features]
    ids = encode_known(vocab, kept_text)
    recording = record(params, config, ids)
    usable, _ = scorable(features)
    scores = unit_scores(recording, usable)
    findings, unscored = score_units(recording, features, top=top, scores=scores)
    ablations = ablate(params, config, recording, findings, features, ablation_chars) if ablation_chars else {}
    excerpts = {}
    for f in features:
        if f.name not in findings:
            continue
        start = excerpt_window(f, excerpt_width)
        stop = min(start + excerpt_width, len(ids))
        excerpts[f.name] = {
            "start": start,
            "text": kept_text[start:stop],
            "values": np.asarray(f.values[start:stop]).astype(int).tolist(),
            "units": [np.round(recording.activation(s.unit)[start:stop], 3).tolist() for s in findings[f.name]],
            # Each unit's mean and standard deviation over the whole text: excerpts are coloured by
            # (activation - mean) / (2 std), so a unit whose raw values sit far from 0 still shows its changes.
            "centre": [round(float(recording.activation(s.unit).mean()), 4) for s in findings[f.name]],
            "scale": [round(float(recording.activation(s.unit).std()), 4) for s in findings[f.name]],
        }
    text_info = {**(source or {}), "chars": len(ids), "skipped_chars": int((~keep).sum()),
                 "skipped": dict(list(skipped.items())[:20])}
    decay = gradient_decay(params, config, ids) if gradients else None
    probed = []
    if probes:
        from . import probes as linear_probes  # it imports this module

        probed = linear_probes.probe_layers(recording, usable, cell=config.cell)
    report = Report(checkpoint, config, text_info, recording.loss_nats, list(features), findings, unscored,
                    ablations, excerpts, saturation(recording, config), decay, probed)
    return Inspected(report, recording, kept_text, scores)
