"""The width a time budget affords: the model's size and work counted by hand and against the real model, the
rule's fixed point and its fourth-root scaling, and which runs get a fitted width at all."""

import dataclasses

import jax
import pytest

from charrnn import model, runs, sizing
from charrnn.config import ConfigError, ModelConfig, TrainConfig
from conftest import write_corpus

TINY = dict(hidden_size=16, num_layers=1, embedding_size=8, seq_length=16, batch_size=4, sample_every=0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_the_parameter_count_is_the_real_models(cell, num_layers, layer_norm):
    config = ModelConfig(vocab_size=11, cell=cell, hidden_size=24, num_layers=num_layers, embedding_size=5,
                         layer_norm=layer_norm)
    assert sizing.parameter_count(config) == model.num_parameters(model.init(jax.random.PRNGKey(0), config))


def test_the_work_per_character_is_every_weight_matrix_once():
    # LSTM, V 10, E 4, H 8, two layers: W0 4×32, U0 8×32, W1 8×32, U1 8×32, head 8×10 (the embedding is a lookup).
    config = ModelConfig(vocab_size=10, cell="lstm", hidden_size=8, num_layers=2, embedding_size=4)
    assert sizing.multiply_adds_per_char(config) == 4 * 32 + 8 * 32 + 8 * 32 + 8 * 32 + 8 * 10


def test_validation_takes_its_share_of_the_time():
    config = TrainConfig(eval_every=100, batch_size=10, seq_length=10)  # 10,000 characters trained between checks
    # Training costs 3 forward passes a character, validation one: 30,000 units of work against 10,000.
    assert sizing.training_share(config, val_chars=10_000) == pytest.approx(0.75)


def test_with_eval_every_auto_a_large_validation_split_takes_a_twentieth_at_most():
    config = TrainConfig(batch_size=10, seq_length=10)  # a step: 100 characters, 300 units of work
    # 250 steps are 75,000 units; 3,000 validation characters are 4% of that: validated every 250 steps.
    assert sizing.training_share(config, val_chars=3_000) == pytest.approx(75_000 / 78_000)
    # 30,000 characters would be 40%: every 2,000 steps (the first multiple of 250 where it is 5% at most).
    assert sizing.training_share(config, val_chars=30_000) == pytest.approx(600_000 / 630_000)


def speed_for(width: int, config: ModelConfig, seconds: float) -> float:
    """The speed at which a run of `seconds` reads exactly K characters per parameter at `width` (by hand)."""
    c = dataclasses.replace(config, hidden_size=width)
    return (sizing.CHARS_PER_PARAMETER * sizing.parameter_count(c) * sizing.TRAINING_COST
            * sizing.multiply_adds_per_char(c) / seconds)


def test_the_width_is_where_the_characters_read_per_parameter_reach_k():
    config = ModelConfig(vocab_size=65)
    fitted = sizing.width_for_time(600.0, config, speed_for(256, config, 600.0))
    assert fitted.width == 256 and fitted.chars_per_parameter == pytest.approx(sizing.CHARS_PER_PARAMETER)
    # A little faster (or longer) is still 256; far faster is wider; half the validation share is narrower.
    assert sizing.width_for_time(600.0, config, 1.1 * speed_for(256, config, 600.0)).width == 256
    assert sizing.width_for_time(600.0, config, speed_for(256, config, 600.0), share=0.5).width < 256


def test_a_long_corpus_narrows_the_width_to_one_read_min_passes_times():
    config = ModelConfig(vocab_size=65)
    speed = speed_for(256, config, 600.0)  # 256 units read K characters per parameter
    at_256 = dataclasses.replace(config, hidden_size=256)
    read_at_256 = sizing.chars_read(600.0, at_256, speed)
    # A short corpus is read more than MIN_PASSES times at 256: the width stays where K puts it.
    short = sizing.width_for_time(600.0, config, speed, train_chars=int(read_at_256 / 10))
    assert short.width == 256 and short.passes == pytest.approx(10, rel=0.01)
    # One that 256 units would read only MIN_PASSES / 2 times: a narrower width, read MIN_PASSES times (near
    # enough: the width is rounded to a multiple of 32).
    long = int(2 * read_at_256 / sizing.MIN_PASSES)
    fitted = sizing.width_for_time(600.0, config, speed, train_chars=long)
    assert fitted.width < 256
    at_fitted = dataclasses.replace(config, hidden_size=fitted.width)
    assert fitted.passes == pytest.approx(sizing.chars_read(600.0, at_fitted, speed) / long)
    passes = [sizing.chars_read(600.0, dataclasses.replace(config, hidden_size=w), speed) / long
              for w in (fitted.width - 32, fitted.width + 32)]
    assert passes[0] > sizing.MIN_PASSES > passes[1]


def test_the_width_grows_as_the_fourth_root_of_the_budget():
    # Work and parameters both grow as H² (for H much larger than the vocabulary and embedding): the characters
    # read per parameter fall as H⁴, so 16 times the budget is twice the width, near enough.
    config = ModelConfig(vocab_size=65, embedding_size=64)
    speed = speed_for(320, config, 60.0)
    widths = [sizing.width_for_time(seconds, config, speed).width for seconds in (60.0, 960.0)]
    assert widths[0] == 320 and 576 <= widths[1] <= 640


def test_the_width_stays_within_bounds():
    config = ModelConfig(vocab_size=65)
    assert sizing.width_for_time(1e-3, config, 1e9).width == sizing.MIN_WIDTH
    assert sizing.width_for_time(1e9, config, 1e12).width == sizing.MAX_WIDTH


def test_the_speed_probe_measures_something():
    speed = sizing.measure_speed(batch_size=8)
    assert 1e6 < speed < 1e16  # multiply-adds a second: at least a slow core's, at most a large accelerator's


def test_only_a_run_that_time_alone_limits_gets_a_fitted_width():
    config = ModelConfig(vocab_size=65)
    timed = TrainConfig(max_time=60.0, max_epochs=None)
    fitted_config, fitted = sizing.fit_width(config, timed, val_chars=10_000)
    assert fitted is not None and fitted_config.hidden_size == fitted.width
    assert fitted.width % sizing.WIDTH_MULTIPLE == 0
    for other in (TrainConfig(), TrainConfig(max_time=60.0), TrainConfig(max_time=60.0, max_epochs=None,
                                                                           max_steps=100),
                  TrainConfig(max_time=60.0, max_epochs=None, gradient="rtrl")):
        unfitted, why = sizing.fit_width(config, other, val_chars=10_000)
        assert why is None and unfitted.hidden_size == sizing.DEFAULT_WIDTH


def test_a_layer_normalised_cell_is_fitted_at_its_slower_speed(monkeypatch):
    monkeypatch.setattr(sizing, "measure_speed", lambda batch_size, placement=None, precision="float32": 50e9)
    timed = TrainConfig(max_time=600.0, max_epochs=None)
    _, plain = sizing.fit_width(ModelConfig(vocab_size=65), timed, val_chars=10_000)
    _, normed = sizing.fit_width(ModelConfig(vocab_size=65, layer_norm=True), timed, val_chars=10_000)
    assert normed.speed == pytest.approx(sizing.LAYER_NORM_SPEED * plain.speed)
    assert normed.width < plain.width


def test_prepare_fits_the_width_only_when_none_is_given(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    small = {k: v for k, v in TINY.items() if k != "hidden_size"}
    fitted = runs.prepare(corpus, options={**small, "max_time": 60.0})
    assert fitted.fitted_width is not None and fitted.model_config.hidden_size == fitted.fitted_width.width
    given = runs.prepare(corpus, options={**TINY, "max_time": 60.0})
    assert given.fitted_width is None and given.model_config.hidden_size == 16
    untimed = runs.prepare(corpus, options={**small, "hidden_size": None})
    assert untimed.fitted_width is None and untimed.model_config.hidden_size == sizing.DEFAULT_WIDTH


def test_prepare_fits_the_batch_only_when_none_is_given(monkeypatch, tmp_path):
    fake_speeds(monkeypatch, 1e6, 1e6)  # so slow that the little corpus cannot be read 6 times in a minute
    corpus = write_corpus(tmp_path / "corpus.txt")
    auto = {**TINY, "batch_size": None, "hidden_size": None}
    assert runs.prepare(corpus, options={**auto, "max_time": 60.0}).config.batch_size == sizing.LONG_CORPUS_BATCH
    assert runs.prepare(corpus, options={**auto, "max_time": 60.0, "batch_size": 8}).config.batch_size == 8
    assert runs.prepare(corpus, options={**auto, "max_steps": 5}).config.batch_size == 32
    fake_speeds(monkeypatch, 1e12, 1e12)  # read hundreds of times: the batch stays
    assert runs.prepare(corpus, options={**auto, "max_time": 60.0}).config.batch_size == 32


def fake_speeds(monkeypatch, float32, bfloat16):
    """measure_speed answering `float32` or `bfloat16` multiply-adds a second by precision, the calls recorded."""
    calls = []

    def measure(batch_size, placement=None, precision="float32"):
        calls.append(precision)
        return {"float32": float32, "bfloat16": bfloat16}[precision]

    monkeypatch.setattr(sizing, "measure_speed", measure)
    return calls


def test_a_corpus_read_few_times_in_the_budget_is_read_in_more_streams(monkeypatch):
    batches = []

    def measure(batch_size, placement=None, precision="float32"):  # a step of 64 rows costs what 32 rows do
        batches.append(batch_size)
        return 1e11 * (2.0 if batch_size == 64 else 1.0)

    monkeypatch.setattr(sizing, "measure_speed", measure)
    config, timed = ModelConfig(vocab_size=65), TrainConfig(max_time=600.0, max_epochs=None)
    free = sizing.fit_width(config, timed, 10_000, train_chars=1)[1]  # the width for any corpus not too long...
    read = free.passes  # ...reads this many characters
    long, short = int(2 * read / sizing.MIN_PASSES), int(read / (sizing.LONG_CORPUS_PASSES + 1))
    wide, speeds = sizing.fit_batch(config, timed, 10_000, train_chars=long)
    assert wide.batch_size == sizing.LONG_CORPUS_BATCH == 64 and speeds == {"float32": pytest.approx(sizing.LONG_CORPUS_PROBE_RATIO * 2e11)}
    assert batches[-1] == 64  # the width is then fitted at the speed of 64 rows
    narrow_width = sizing.fit_width(config, timed, 10_000, train_chars=long)[1].width
    assert sizing.fit_width(config, wide, 10_000, train_chars=long, speeds=speeds)[1].width > narrow_width
    # Read often enough: as it is, with the speeds it measured, for the width to be fitted at without probing again.
    assert sizing.fit_batch(config, timed, 10_000, train_chars=short) == (timed, {"float32": 1e11})
    # Not narrowed by the passes, but read fewer than LONG_CORPUS_PASSES times: more streams too.
    middling = int(read / (sizing.LONG_CORPUS_PASSES - 1))
    assert sizing.fit_width(config, timed, 10_000, train_chars=middling)[1].width == free.width
    assert sizing.fit_batch(config, timed, 10_000, train_chars=middling)[0].batch_size == 64
    for other in (TrainConfig(), TrainConfig(max_time=600.0, max_epochs=None, max_steps=100),
                  TrainConfig(max_time=600.0, max_epochs=None, batch_size=128)):
        assert sizing.fit_batch(config, other, 10_000, train_chars=long)[0] == other


@pytest.mark.parametrize("probe_speedup,chosen", [(2.1, "bfloat16"), (1.3, "bfloat16"), (1.2, "float32"),
                                                   (0.4, "float32")])
def test_a_run_that_time_alone_limits_takes_bfloat16_only_where_it_is_enough_faster(monkeypatch, probe_speedup,
                                                                                     chosen):
    # The probe's own rates compared (training's estimates are the probe's times PROBE_TO_TRAINING): bfloat16 at
    # 2.1 or 1.3 times float32's rate is taken; at 1.2 (under BFLOAT16_MIN_SPEEDUP = 1.25) or slower, not.
    bfloat16 = probe_speedup * 1e11 / sizing.PROBE_TO_TRAINING["float32"] * sizing.PROBE_TO_TRAINING["bfloat16"]
    fake_speeds(monkeypatch, 1e11, bfloat16)
    timed = TrainConfig(max_time=600.0, max_epochs=None)
    config, speeds = sizing.fit_precision(timed)
    assert config.precision == chosen and speeds == {"float32": 1e11, "bfloat16": bfloat16}
    for other in (TrainConfig(), TrainConfig(max_time=60.0, max_epochs=None, max_steps=100),
                  TrainConfig(max_time=60.0, max_epochs=None, gradient="rtrl")):
        assert sizing.fit_precision(other) == (other, None)


def test_the_width_is_fitted_at_the_chosen_precisions_speed_alone(monkeypatch):
    calls = fake_speeds(monkeypatch, 1e11, 2e11)
    timed = TrainConfig(max_time=600.0, max_epochs=None)
    _, exact = sizing.fit_width(ModelConfig(vocab_size=65), timed, val_chars=1_000_000)
    mixed_config, speeds = sizing.fit_precision(timed)
    _, mixed = sizing.fit_width(ModelConfig(vocab_size=65), mixed_config, val_chars=1_000_000, speeds=speeds)
    assert exact.speed == pytest.approx(1.0e11) and mixed.speed == pytest.approx(2.0e11)
    assert mixed.width > exact.width
    # Validation multiplies in the training step's precision, so only that precision's speed is measured.
    calls.clear()
    sizing.fit_width(ModelConfig(vocab_size=65), mixed_config, val_chars=1_000_000)  # no speeds: measures its own
    assert calls == ["bfloat16"] * sizing.PROBE_ROUNDS


def test_the_precisions_are_probed_in_turn_and_a_disturbed_probe_does_not_decide(monkeypatch):
    calls, disturbed = [], {1}  # the first bfloat16 probe ran beside other work, at a third of its speed

    def measure(batch_size, placement=None, precision="float32"):
        calls.append(precision)
        speed = {"float32": 1e11, "bfloat16": 1.5e11}[precision]
        return speed / 3 if len(calls) - 1 in disturbed else speed

    monkeypatch.setattr(sizing, "measure_speed", measure)
    assert sizing.measure_speeds(32) == {"float32": 1e11, "bfloat16": 1.5e11}
    assert calls[:4] == ["float32", "bfloat16", "float32", "bfloat16"]
    calls.clear()
    config, _ = sizing.fit_precision(TrainConfig(max_time=600.0, max_epochs=None))
    assert config.precision == "bfloat16"  # one probe alone would have found 0.5e11 and chosen float32


def test_prepare_fits_the_precision_unless_it_is_given_and_a_resumed_run_keeps_its_own(monkeypatch, tmp_path):
    fake_speeds(monkeypatch, 1e9, 3e9)
    corpus = write_corpus(tmp_path / "corpus.txt")
    precision = lambda **options: runs.prepare(corpus, options={**TINY, **options}).config.precision
    assert precision(max_time=60.0) == "bfloat16"
    assert precision(max_time=60.0, precision="auto") == "bfloat16"
    assert precision(max_time=60.0, precision="float32") == "float32"
    assert precision(max_steps=5) == "float32"
    assert precision(max_steps=5, precision="bfloat16") == "bfloat16"
    # A layer-normalised cell trains through the plain scan, in float32: never fitted to bfloat16, and refused it.
    normed = runs.prepare(corpus, options={**TINY, "max_time": 60.0, "layer_norm": True})
    assert normed.config.precision == "float32"
    with pytest.raises(ConfigError, match="layer-norm"):
        runs.prepare(corpus, options={**TINY, "max_steps": 5, "layer_norm": True, "precision": "bfloat16"})
