"""Run records (run.json, metrics.jsonl), run summaries and their renderings, checkpoint info."""

import re

import jax
import pytest
from rich.console import Console

from charrnn import checkpoint, data, html, model, render, report, runlog
from charrnn.config import ModelConfig, TrainConfig


def make_run(run_dir, hidden=8, val=(2.0, 1.5, 1.7), speeds=(1000.0, 3000.0, 2000.0), with_records=True,
             weight_average=0.0, state=None):
    config = ModelConfig(vocab_size=5, cell="lstm", hidden_size=hidden, num_layers=1, embedding_size=3)
    train_config = TrainConfig(learning_rate=1e-3 * hidden, weight_average=weight_average)
    corpus = data.CorpusInfo("c.txt", "ab" * 32, 100)
    ckpt = checkpoint.Checkpoint(
        model=config, train=train_config, vocab=data.Vocabulary.from_text("abcd\n"), corpus=corpus,
        splits=data.split(100, 0.05, 0.05), arrays=checkpoint.flatten("params", model.init(jax.random.key(0), config)),
        state={"step": 30, "epoch": 1.5, "val_nats": val[-1], "best_val_nats": min(val), **(state or {})},
        history=[{"step": 10 * (i + 1), "val_nats": v, "elapsed_s": 5.0 * (i + 1)} for i, v in enumerate(val)])
    checkpoint.save(run_dir / checkpoint.LATEST, ckpt)
    if with_records:
        runlog.write_run_info(run_dir, {"model": config.to_dict(), "train": train_config.to_dict(),
                                        "corpus": corpus.to_dict()})
        writer = runlog.MetricsWriter(run_dir)
        for i, (v, speed) in enumerate(zip(val, speeds)):
            writer.write({"event": "log", "step": 10 * i + 5, "train_nats": 2.5 - i / 2, "chars_per_s": speed,
                          "elapsed_s": 5.0 * i + 2})
            writer.write({"event": "eval", "step": 10 * (i + 1), "val_nats": v, "elapsed_s": 5.0 * (i + 1)})
    return run_dir


def test_metrics_survive_a_torn_last_line(tmp_path):
    make_run(tmp_path)
    with open(tmp_path / runlog.METRICS, "a") as f:
        f.write('{"event": "log", "step": 4')  # a crash mid-write
    records = runlog.read_metrics(tmp_path)
    assert len(records) == 6 and records[-1] == {"event": "eval", "step": 30, "val_nats": 1.7, "elapsed_s": 15.0}


def test_resumed_metrics_drop_records_past_the_checkpoint(tmp_path):
    make_run(tmp_path)
    writer = runlog.MetricsWriter(tmp_path, resume_step=20)
    writer.write({"event": "log", "step": 21})
    assert [r["step"] for r in runlog.read_metrics(tmp_path)] == [5, 10, 15, 20, 21]


def test_run_info_records_versions_and_what_was_given(tmp_path):
    runlog.write_run_info(tmp_path, {"model": {"cell": "gru"}})
    info = runlog.read_run_info(tmp_path)
    assert info["model"] == {"cell": "gru"} and set(info["versions"]) >= {"python", "jax", "optax", "charrnn"}


def test_summary_from_records(tmp_path):
    summary = report.summarize(make_run(tmp_path))
    assert summary.best_val_nats == 1.5 and summary.best_step == 20 and summary.step == 30
    assert summary.chars_per_s == 2000.0  # the median, not the mean or the last
    assert summary.val_curve == [(10, 2.0), (20, 1.5), (30, 1.7)]
    assert summary.train_curve == [(5, 2.5), (15, 2.0), (25, 1.5)]
    assert summary.settings["model.hidden_size"] == 8 and summary.settings["corpus.path"] == "c.txt"


def test_summary_from_a_checkpoint_alone(tmp_path):
    summary = report.summarize(make_run(tmp_path, with_records=False))
    assert summary.val_curve == [(10, 2.0), (20, 1.5), (30, 1.7)] and summary.chars_per_s is None
    assert summary.settings["train.learning_rate"] == pytest.approx(8e-3)


def test_not_a_run(tmp_path):
    with pytest.raises(report.ReportError, match="holds no run"):
        report.summarize(tmp_path)
    with pytest.raises(report.ReportError, match="not a run directory"):
        report.summarize(tmp_path / "absent")


def test_differences_are_only_the_settings_that_differ(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = report.summarize(make_run(tmp_path / "a", hidden=8))
    b = report.summarize(make_run(tmp_path / "b", hidden=16))
    diff = report.differences([a, b])
    assert diff == {"model.hidden_size": [8, 16], "train.learning_rate": [pytest.approx(8e-3), pytest.approx(1.6e-2)]}


def test_checkpoint_info(tmp_path):
    make_run(tmp_path)
    info = report.checkpoint_info(tmp_path)
    assert info["parameters"] == 5 * 3 + (3 * 32 + 8 * 32 + 32) + 8 * 5 + 5
    assert info["vocabulary"] == {"size": 5, "byte_level": False, "symbols": "\nabcd"}
    assert info["step"] == 30 and info["best_val_nats"] == 1.5 and info["format_version"] == checkpoint.FORMAT_VERSION
    console = Console(record=True, width=200)
    console.print(render.checkpoint_info(info))
    text = console.export_text()
    assert "1-layer LSTM, 8 units" in text and "↵abcd" in text and "1.5000 nats" in text
    assert info["weight_average"] == 0.0 and re.search(r"\n weights +as trained", text)


@pytest.mark.parametrize("asked, how", [(None, "fitted to the run"), (0.9924, "--weight-average")])
def test_checkpoint_info_says_when_the_model_is_a_moving_average_of_the_weights(tmp_path, asked, how):
    make_run(tmp_path, weight_average=asked, state={"weight_average": 0.9924})  # the decay in use at this step
    info = report.checkpoint_info(tmp_path)
    assert info["weight_average"] == 0.9924
    console = Console(record=True, width=200)
    console.print(render.checkpoint_info(info))
    row = re.search(r"\n weights +(.*?) *\n", console.export_text()).group(1)
    assert row == f"moving average of the trained weights, decay 0.9924 ({how})"


def test_text_plot_puts_the_lowest_point_at_the_bottom():
    console = Console(record=True, width=120)
    console.print(render.text_plot({"a": [(0, 2.0), (50, 1.0), (100, 1.5)]}, width=21, height=5))
    lines = console.export_text().splitlines()
    assert lines[0].startswith("   2.000 │●") and lines[4].startswith("   1.000 │") and lines[4][10 + 10] == "●"
    assert lines[2][-1] == "●"  # 1.5 at the right edge, half way up


def test_report_page_draws_every_run(tmp_path, chromium):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    runs = [report.summarize(make_run(tmp_path / "a", hidden=8)),
            report.summarize(make_run(tmp_path / "b", hidden=16, val=(2.2, 1.9, 1.4)))]
    page = html.runs_page(runs, report.differences(runs))
    assert page.count("<polyline") == 4  # validation and training curve of each run
    assert "model.hidden_size" in page
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    dom = chromium(path.as_uri(), "--dump-dom")
    assert dom.returncode == 0 and dom.stdout.count("<polyline") == 4
    assert not re.search(r"Uncaught|CONSOLE.*[Ee]rror", dom.stderr)
