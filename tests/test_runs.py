"""Preparing a run as the command does, from Python: the options a time budget implies, resuming, refusing
early; and a run that a time budget alone stops decays its learning rate over that time."""

import json

import pytest

from charrnn import checkpoint, data, optim, runs, sizing
from charrnn.config import ConfigError
from conftest import write_corpus

TINY = dict(hidden_size=16, num_layers=1, embedding_size=8, seq_length=16, batch_size=4, sample_every=0)


def info_rate(run_dir):
    return json.loads((run_dir / "run.json").read_text())["train"]["learning_rate"]


def test_the_default_learning_rate_is_higher_for_a_run_that_only_time_stops(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    timed = runs.prepare(corpus, options={**TINY, "max_time": 60.0}).config
    assert timed.learning_rate == optim.TIME_LIMITED_LEARNING_RATE == 7e-3
    for options in (TINY, {**TINY, "max_time": 60.0, "max_steps": 100}, {**TINY, "learning_rate": None}):
        assert runs.prepare(corpus, options=options).config.learning_rate == 3e-3
    chosen = runs.prepare(corpus, options={**TINY, "max_time": 60.0, "learning_rate": 1e-3}).config
    assert chosen.learning_rate == 1e-3  # a rate asked for is the rate used


def test_adams_second_moment_forgets_faster_in_a_run_that_only_time_stops_on_a_long_corpus(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus.txt")
    monkeypatch.setattr(sizing, "measure_speed", lambda *args, **kwargs: 1e6)  # slow: the corpus is long for it
    untuned = {k: v for k, v in TINY.items() if k not in ("batch_size", "hidden_size")}
    long_for_it = runs.prepare(corpus, options={**untuned, "max_time": 60.0}).config
    assert long_for_it.batch_size == sizing.LONG_CORPUS_BATCH and long_for_it.adam_beta2 == 0.99
    for options in ({**TINY, "max_time": 60.0}, {**untuned, "max_steps": 100}, {**TINY, "adam_beta2": None}):
        assert runs.prepare(corpus, options=options).config.adam_beta2 == 0.999  # batch 4 / not timed: Adam's
    assert runs.prepare(corpus, options={**TINY, "max_time": 60.0, "batch_size": 64}).config.adam_beta2 == 0.99
    chosen = runs.prepare(corpus, options={**untuned, "max_time": 60.0, "adam_beta2": 0.9}).config
    assert chosen.adam_beta2 == 0.9  # a decay asked for is the decay used


def test_a_run_that_only_time_stops_validates_and_saves_a_moving_average_of_its_weights(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    timed = runs.prepare(corpus, options={**TINY, "max_time": 60.0}).config
    assert timed.weight_average is None and timed.averages_weights  # fitted to the run's length
    for options in (TINY, {**TINY, "max_time": 60.0, "max_steps": 100}, {**TINY, "weight_average": None}):
        assert runs.prepare(corpus, options=options).config.weight_average == 0.0  # the weights themselves
    chosen = runs.prepare(corpus, options={**TINY, "max_time": 60.0, "weight_average": 0.0}).config
    assert chosen.weight_average == 0.0  # none, asked for
    assert runs.prepare(corpus, options={**TINY, "weight_average": 0.9}).config.weight_average == 0.9


def test_a_run_that_only_time_stops_reads_shuffled_segments_by_default(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    timed = runs.prepare(corpus, options={**TINY, "max_time": 60.0}).config
    assert timed.segment_length == data.SEGMENT_WINDOWS * TINY["seq_length"] == 320
    for options in (TINY, {**TINY, "max_time": 60.0, "max_steps": 100}, {**TINY, "segment_length": None},
                    {**TINY, "max_time": 60.0, "state_reset": "never"}):  # continuous training needs streams
        assert runs.prepare(corpus, options=options).config.segment_length == 0  # contiguous, as before
    chosen = runs.prepare(corpus, options={**TINY, "max_time": 60.0, "segment_length": 64}).config
    assert chosen.segment_length == 64
    assert runs.prepare(corpus, options={**TINY, "segment_length": 48}).config.segment_length == 48


def test_a_time_budget_alone_lifts_the_epoch_limit(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    assert runs.prepare(corpus, options={**TINY, "max_time": 60.0}).config.max_epochs is None
    assert runs.prepare(corpus, options={**TINY, "max_time": 60.0, "max_epochs": 3.0}).config.max_epochs == 3.0
    assert runs.prepare(corpus, options=TINY).config.max_epochs == 20.0
    # As the command sees it: a default --max-epochs is not one the user gave.
    given = set(TINY) | {"max_time"}
    options = {**TINY, "max_time": 60.0, "max_epochs": 20.0}
    assert runs.prepare(corpus, options=options, given=given).config.max_epochs is None


@pytest.mark.slow
def test_resuming_takes_the_checkpoints_settings_and_refuses_a_changed_model(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    finished = runs.train(corpus, out=tmp_path / "run", max_steps=4, eval_every=2, log_every=2, **TINY)
    assert finished.step == 4
    resumed = runs.prepare(resume=tmp_path / "run", options={"max_steps": 8})
    assert resumed.config.max_steps == 8 and resumed.model_config.hidden_size == 16 and resumed.overwrite
    with pytest.raises(ConfigError, match="--hidden-size 16, this run asks for 32"):
        runs.prepare(resume=tmp_path / "run", options={"hidden_size": 32})
    with pytest.raises(ConfigError, match="--segment-length 0, this run asks for 32"):
        runs.prepare(resume=tmp_path / "run", options={"segment_length": 32})
    # "auto" (None) asks for nothing: the run keeps what it chose.
    assert runs.prepare(resume=tmp_path / "run", options={"segment_length": None, "learning_rate": None}).config \
        .segment_length == 0


class TickingClock:
    """A stand-in for `time.perf_counter` that moves on a fixed `tick` of seconds at every reading, so a run limited
    by time makes the same steps however busy the machine is (a real clock under load made too few steps for the
    decay to show)."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


@pytest.mark.slow
def test_a_run_stopped_by_time_alone_decays_its_learning_rate_over_that_time(tmp_path, monkeypatch):
    from conftest import CORPUS_TEXT
    from charrnn import train

    # About 1.4 readings a step (the time check, and the logs' and validations' readings): some 300 steps in 8 s.
    monkeypatch.setattr(train, "time", TickingClock(tick=0.02))
    corpus = write_corpus(tmp_path / "corpus.txt", CORPUS_TEXT)  # small: 8 s make many passes over it
    events = []
    finished = runs.train(corpus, out=tmp_path / "run", max_time=8.0, eval_every=25, log_every=5,
                          warmup_steps=10, callback=events.append, **{**TINY, "batch_size": 16})
    assert finished.reason == "max_time"
    rates = [e.learning_rate for e in events if type(e).__name__ == "Logged"]
    state = checkpoint.load(tmp_path / "run", prefer=checkpoint.LATEST).state
    assert state["schedule_steps"] is not None and state["schedule_steps"] > 25
    peak = optim.TIME_LIMITED_LEARNING_RATE  # the default peak of a run that only time stops
    assert max(rates) == pytest.approx(peak, rel=1e-6) and info_rate(tmp_path / "run") == peak
    assert rates[-1] < 0.8 * peak  # decayed towards the end of the time, not constant
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["train"]["max_epochs"] is None
    # The default dropout too: none until the first validation has timed the steps, then the rate for the
    # passes over this small corpus that the time holds (many: so not none).
    rates = [e.dropout for e in events if type(e).__name__ == "Logged"]
    assert rates[0] == 0.0 and rates[-1] > 0.0 and state["dropout"] == rates[-1]
    assert info["model"]["dropout"] is None
    # And the moving average of the weights, saved as the model: fitted (None) to span 8% of the planned steps.
    assert info["train"]["weight_average"] is None
    assert state["weight_average"] == pytest.approx(1 - 1 / (0.08 * state["schedule_steps"]))
    latest = checkpoint.load(tmp_path / "run", prefer=checkpoint.LATEST)
    assert any(name.startswith("training_params/") for name in latest.arrays)


def test_a_default_dropout_is_the_one_for_the_passes_the_run_makes(tmp_path):
    from conftest import CORPUS_TEXT

    corpus = write_corpus(tmp_path / "corpus.txt", CORPUS_TEXT)
    events = []
    runs.train(corpus, out=tmp_path / "run", max_epochs=12.0, eval_every=1000, log_every=5, callback=events.append,
               **TINY)
    ckpt = checkpoint.load(tmp_path / "run", prefer=checkpoint.LATEST)
    expected = optim.dropout_for_epochs(12.0)
    assert expected > 0.0  # 12 passes: past the point where dropout starts
    assert {e.dropout for e in events if type(e).__name__ == "Logged"} == {expected}
    assert ckpt.state["dropout"] == expected
    assert ckpt.model.dropout is None  # as asked: a resumed run fits it again
