"""`charrnn evaluate` as a user meets it, on one tiny run trained in-process: the run's test split by default,
any file as TEXT, the terminal tables, --json, --html, the test loss kept for `charrnn report`, and every bad
input refused in one line with nothing written."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
from conftest import assert_one_line_error, invoke, write_corpus

from charrnn import checkpoint, data, evaluation, runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny LSTM trained for 20 steps; tests that write into a run copy it (`run_copy`)."""
    root = tmp_path_factory.mktemp("evaluate")
    corpus = write_corpus(root / "corpus.txt")
    out = root / "run"
    runs.train(corpus, out=out, hidden_size=16, num_layers=1, embedding_size=8, batch_size=4, seq_length=16,
               max_steps=20, eval_every=10, log_every=5, sample_every=0)
    return {"corpus": corpus, "out": out}


@pytest.fixture
def run_copy(trained, tmp_path):
    return shutil.copytree(trained["out"], tmp_path / "run")


def test_the_best_checkpoint_on_the_validation_split_gives_the_recorded_best_validation_loss(trained, tmp_path):
    ckpt = checkpoint.load(trained["out"] / checkpoint.BEST)
    text, _ = runs.held_out_text(ckpt, "val")
    ids = ckpt.vocab.encode(text)
    nll = evaluation.network_nll(checkpoint.load_params(ckpt), ckpt.model, ids,
                                 batch_size=ckpt.state["batch_size"], seq_length=ckpt.state["seq_length"])
    recorded = ckpt.state["best_val_nats"]
    assert float(nll.mean()) == pytest.approx(recorded, rel=1e-5)
    # The command says the same, given the validation text as a file.
    (tmp_path / "val.txt").write_text(text, encoding="utf-8")
    result = invoke("evaluate", trained["out"], tmp_path / "val.txt", "--max-order", 3, "--json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["loss"]["nats"] == pytest.approx(recorded, rel=1e-5)


def test_the_test_split_by_default_in_tables_kept_for_report(run_copy):
    result = invoke("evaluate", run_copy, "--max-order", 5)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for heading in ("loss per character", "loss by character class", "n-gram models", "closing brackets",
                    "the network's errors"):
        assert heading in out
    assert "the test split of" in out and "best n-gram (n = " in out and "rare_word" in out
    kept = json.loads((run_copy / evaluation.RUN_FILE).read_text(encoding="utf-8"))
    # Independently: the network's mean loss on the test split, read as validation reads a split.
    ckpt = checkpoint.load(run_copy)
    text, _ = runs.held_out_text(ckpt, "test")
    nll = evaluation.network_nll(checkpoint.load_params(ckpt), ckpt.model, ckpt.vocab.encode(text),
                                 batch_size=ckpt.state["batch_size"], seq_length=ckpt.state["seq_length"])
    assert kept["loss"]["nats"] == pytest.approx(float(nll.mean()), rel=1e-9)
    assert kept["characters"] == len(text) - 1 and kept["checkpoint"]["step"] == ckpt.state["step"]
    assert f"{kept['loss']['nats']:.4f}" in out

    report = invoke("report", run_copy)
    assert report.exit_code == 0, report.output
    assert "test nats" in report.stdout and f"{kept['loss']['nats']:.4f}" in report.stdout
    summary = json.loads(invoke("report", run_copy, "--json").stdout)["runs"][0]
    assert summary["test_nats"] == kept["loss"]["nats"]
    assert summary["test_bpc"] == pytest.approx(kept["loss"]["nats"] / math.log(2))
    page = invoke("report", run_copy, "--html", run_copy / "report.html")
    assert page.exit_code == 0
    assert "test (nats)" in (run_copy / "report.html").read_text(encoding="utf-8")


def test_report_leaves_the_test_columns_out_until_a_run_is_evaluated(trained):
    result = invoke("report", trained["out"])
    assert result.exit_code == 0 and "test nats" not in result.stdout
    assert json.loads(invoke("report", trained["out"], "--json").stdout)["runs"][0]["test_nats"] is None


def test_json_schema(trained, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text('Zoë said: "Not yet!" (then laughed) 42 times?\n' * 3, encoding="utf-8")
    result = invoke("evaluate", trained["out"], text, "--max-order", 4, "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert list(d) == ["schema", "characters", "loss", "by_class", "ngram", "long_range", "errors", "settings",
                       "text", "checkpoint"]
    assert d["schema"] == evaluation.SCHEMA and d["characters"] == len(text.read_text(encoding="utf-8")) - 1
    assert [row["n"] for row in d["ngram"]["table"]] == [1, 2, 3, 4] and d["settings"]["max_order"] == 4
    assert d["ngram"]["train_characters"] == np.diff(checkpoint.load(trained["out"]).splits.train)[0]
    assert d["text"]["path"] == str(text) and d["text"]["skipped_chars"] == 0
    assert d["checkpoint"]["path"].endswith(checkpoint.BEST)
    assert sum(b["count"] for b in d["long_range"]["buckets"]) == 6  # three ( ) and three " "
    assert not (trained["out"] / evaluation.RUN_FILE).exists()  # a TEXT is not the run's test loss


def test_characters_the_model_does_not_know_are_skipped_with_a_warning(trained, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The café € opened at dawn €€.\n" * 2, encoding="utf-8")
    result = invoke("evaluate", trained["out"], text, "--max-order", 2, "--json")
    assert result.exit_code == 0, result.output
    assert "skipped 6 character(s)" in result.stderr and "'€'" in result.stderr
    assert json.loads(result.stdout)["text"]["skipped_chars"] == 6


def test_html_page_escapes_what_comes_from_files(trained, tmp_path, chromium):
    text = tmp_path / "<b>x&y.txt"
    text.write_text("The café opened (at dawn).\n" * 4, encoding="utf-8")
    result = invoke("evaluate", trained["out"], text, "--max-order", 3, "--html", tmp_path / "page.html", "-q")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert "<b>x" not in page and "&lt;b&gt;x&amp;y.txt" in page
    assert page.count("<svg") == 1 and "accuracy on closing characters by distance" in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
    for heading in ("Loss by character class", "n-gram baselines", "The network's errors"):
        assert heading in page
    dom = chromium((tmp_path / "page.html").as_uri(), "--dump-dom")  # a real browser reads the same page
    assert dom.returncode == 0 and "&lt;b&gt;x&amp;y.txt" in dom.stdout and "<b>x" not in dom.stdout
    assert dom.stdout.count("<svg") == 1 and "accuracy on closing characters by distance" in dom.stdout


@pytest.fixture
def no_test_split(run_copy):
    """The copied run's checkpoints, as if trained with --test-fraction 0."""
    for name in (checkpoint.BEST, checkpoint.LATEST):
        ckpt = checkpoint.load(run_copy / name)
        end = ckpt.splits.test[1]
        splits = data.Splits(ckpt.splits.train, (ckpt.splits.val[0], end), (end, end))
        checkpoint.save(run_copy / name, dataclasses.replace(ckpt, splits=splits))
    return run_copy


def test_a_run_without_a_test_split_is_refused_saying_what_to_do(no_test_split, tmp_path):
    result = invoke("evaluate", no_test_split, "--html", tmp_path / "page.html")
    assert_one_line_error(result, "--test-fraction 0", "TEXT")
    assert not (no_test_split / evaluation.RUN_FILE).exists() and not (tmp_path / "page.html").exists()


@pytest.mark.parametrize("case, fragments", [
    ("unknown characters only", ["knows", "alphabet"]),
    ("empty file", ["empty"]),
    ("not a checkpoint", []),
    ("order 0", ["1..20"]),
    ("order 21", ["1..20"]),
    ("max-chars 1", ["--max-chars"]),
])
def test_bad_input_is_one_line_and_nothing_is_written(run_copy, tmp_path, case, fragments):
    text = tmp_path / "text.txt"
    text.write_text("The café opened at dawn.\n", encoding="utf-8")
    args = [run_copy]
    if case == "unknown characters only":
        text.write_text("€€€€∑∑", encoding="utf-8")
        args.append(text)
    elif case == "empty file":
        text.write_text("", encoding="utf-8")
        args.append(text)
    elif case == "not a checkpoint":
        args = [text]
    elif case.startswith("order"):
        args += ["--max-order", case.split()[1]]
    else:
        args += ["--max-chars", 1]
    result = invoke("evaluate", *args, "--html", tmp_path / "page.html")
    assert_one_line_error(result, *fragments)
    assert not (run_copy / evaluation.RUN_FILE).exists() and not (tmp_path / "page.html").exists()
