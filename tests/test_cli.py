"""The command line as a user meets it: `charrnn train` and `charrnn sample`, run in-process with click's
CliRunner on tiny models and tiny corpora written under tmp_path.

The contract for every error a user can fix: exit code 1, nothing on stdout, exactly one line on stderr that
starts with "error:" and names the key fact, no traceback, and nothing written or overwritten.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import (CORPUS_TEXT, TINY_MODEL, TINY_WINDOWS, assert_one_line_error, invoke,
                      write_corpus)

TINY = TINY_MODEL + TINY_WINDOWS + ["--max-steps", "20", "--eval-every", "10"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny model trained for 20 steps, shared by every test that only reads it."""
    root = tmp_path_factory.mktemp("shared")
    corpus = write_corpus(root / "corpus.txt")
    out = root / "run"
    result = invoke("train", corpus, *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    return {"corpus": corpus, "out": out, "result": result}


def sample(*args):
    return invoke("sample", *args)


def sampled_text(result, prime: str = "") -> str:
    """stdout of a one-sample run, checked to be prime + text + newline; returns the text."""
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(prime) and result.stdout.endswith("\n")
    return result.stdout[len(prime):-1]


# --- entry points ------------------------------------------------------------------------------------------


def test_python_dash_m_help_lists_the_commands():
    done = subprocess.run([sys.executable, "-m", "charrnn", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^\s+train\s", done.stdout, re.MULTILINE)
    assert re.search(r"^\s+sample\s", done.stdout, re.MULTILINE)


def test_error_stays_on_one_line_in_a_narrow_non_terminal(tmp_path):
    missing = tmp_path / ("a-rather-long-directory-name-" * 4) / "missing-checkpoint.safetensors"
    env = {**os.environ, "COLUMNS": "40"}
    done = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(missing)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(missing) in lines[0]


# --- train -------------------------------------------------------------------------------------------------


def test_train_writes_best_and_latest_and_prints_the_checkpoint_path(run):
    result, out = run["result"], run["out"]
    assert (out / "best.safetensors").is_file()
    assert (out / "latest.safetensors").is_file()
    assert result.stdout.strip() == str(out / "best.safetensors")
    assert "Traceback" not in result.stderr


def test_train_rejects_a_missing_corpus(tmp_path):
    missing = tmp_path / "no-such-corpus.txt"
    assert_one_line_error(invoke("train", missing, *TINY, "--out", tmp_path / "out"), str(missing))
    assert not (tmp_path / "out").exists()


def test_train_rejects_a_directory(tmp_path):
    (tmp_path / "texts").mkdir()
    assert_one_line_error(invoke("train", tmp_path / "texts", *TINY, "--out", tmp_path / "out"), "directory")
    assert not (tmp_path / "out").exists()


def test_train_rejects_an_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    assert_one_line_error(invoke("train", tmp_path / "empty.txt", *TINY, "--out", tmp_path / "out"), "empty")
    assert not (tmp_path / "out").exists()


def test_train_rejects_undecodable_bytes_naming_the_offset_and_the_way_out(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"hello \xff\xfe world")
    message = assert_one_line_error(invoke("train", tmp_path / "bad.txt", *TINY, "--out", tmp_path / "out"),
                                "offset 6", "--encoding", "--bytes")
    assert "0xff" in message
    assert not (tmp_path / "out").exists()


def test_train_rejects_an_unknown_encoding(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    assert_one_line_error(invoke("train", corpus, *TINY, "--encoding", "no-such-codec", "--out", tmp_path / "out"),
                      "no-such-codec")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value, named", [
    ("--hidden-size", "0", "hidden-size"),
    ("--dropout", "1.0", "dropout"),
    ("--weight-drop", "1.0", "weight-drop"),
    ("--eval-every", "0", "eval-every"),
    ("--learning-rate", "-0.01", "learning-rate"),
    ("--weight-decay", "-0.1", "weight-decay"),
    ("--min-lr-ratio", "1.5", "min-lr-ratio"),
    ("--weight-average", "1.0", "weight-average"),
    ("--seq-length", "0", "seq-length"),
    ("--segment-length", "-100", "segment-length"),
    ("--segment-length", "150", "segment-length"),
])
def test_train_rejects_options_out_of_range(tmp_path, option, value, named):
    corpus = write_corpus(tmp_path / "corpus.txt")
    assert_one_line_error(invoke("train", corpus, *TINY, option, value, "--out", tmp_path / "out"), named, value)
    assert not (tmp_path / "out").exists()


def test_train_takes_a_dropout_rate_or_auto(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    assert_one_line_error(invoke("train", corpus, *TINY, "--dropout", "some", "--out", tmp_path / "out"),
                          "'some'", "dropout", "auto", code=2)
    assert not (tmp_path / "out").exists()


def test_train_takes_a_width_or_auto(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    assert_one_line_error(invoke("train", corpus, *TINY, "--hidden-size", "wide", "--out", tmp_path / "out"),
                          "'wide'", "hidden-size", "auto", code=2)
    assert not (tmp_path / "out").exists()


def test_train_fits_the_width_to_a_time_budget_and_says_so(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    small = ["--num-layers", "1", "--embedding-size", "8", *TINY_WINDOWS, "--sample-every", "0"]
    result = invoke("train", corpus, *small, "--max-time", "2s", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    width = json.loads((tmp_path / "out" / "run.json").read_text())["model"]["hidden_size"]
    assert f"({width} units, the width for 2 s on this machine" in result.output


def test_train_refuses_to_overwrite_checkpoints_in_out_without_force(run, tmp_path):
    taken = tmp_path / "taken"
    shutil.copytree(run["out"], taken)
    before = {p.name: p.read_bytes() for p in taken.iterdir()}
    assert {"best.safetensors", "latest.safetensors"} <= set(before)
    assert_one_line_error(invoke("train", run["corpus"], *TINY, "--out", taken), str(taken), "--force")
    assert {p.name: p.read_bytes() for p in taken.iterdir()} == before  # every file as it was, nothing added


def test_train_rejects_out_that_is_a_file(run, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    assert_one_line_error(invoke("train", run["corpus"], *TINY, "--out", tmp_path / "file"), "is a file")
    assert (tmp_path / "file").read_text() == "not a directory"


def test_resume_rejects_a_changed_architecture_naming_the_option(run):
    latest = run["out"] / "latest.safetensors"
    before = latest.read_bytes()
    assert_one_line_error(invoke("train", "--resume", run["out"], "--hidden-size", "32"), "--hidden-size", "16", "32")
    assert latest.read_bytes() == before


def test_resume_rejects_a_missing_checkpoint(tmp_path):
    assert_one_line_error(invoke("train", "--resume", tmp_path / "gone"), str(tmp_path / "gone"))


def test_resume_refuses_to_overwrite_another_runs_checkpoints_without_force(run, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "best.safetensors").write_bytes(b"another run's checkpoint")
    result = invoke("train", "--resume", run["out"], "--out", other, "--max-steps", "21")
    assert (other / "best.safetensors").read_bytes() == b"another run's checkpoint"
    assert_one_line_error(result, str(other), "--force")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A 41-character corpus trained with the default --seq-length 100 and --batch-size 32."""
    root = tmp_path_factory.mktemp("short")
    corpus = write_corpus(root / "short.txt", "The café — a short corpus of forty chars.")
    out = root / "run"
    result = invoke("train", corpus, *TINY_MODEL, "--max-steps", "2", "--eval-every", "10", "--out", out)
    return {"corpus": corpus, "out": out, "result": result}


@pytest.mark.slow
def test_train_shrinks_the_window_to_fit_a_corpus_shorter_than_one_window(short_run):
    result = short_run["result"]
    assert result.exit_code == 0, result.output
    assert (short_run["out"] / "best.safetensors").is_file()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    # 41 characters: 2 for validation, 2 for test, 37 to train on, i.e. 36 targets.
    assert any("--seq-length 36" in w for w in warnings), result.stderr
    assert any("--batch-size 1" in w for w in warnings), result.stderr


def test_resume_accepts_the_options_the_run_was_started_with_after_shrinking(short_run):
    result = invoke("train", "--resume", short_run["out"], "--seq-length", "100", "--max-steps", "3")
    assert result.exit_code == 0, result.output


def test_train_rejects_a_corpus_too_short_to_split_saying_how_long_it_must_be(tmp_path):
    (tmp_path / "tiny.txt").write_text("abc", encoding="utf-8")
    result = invoke("train", tmp_path / "tiny.txt", *TINY, "--out", tmp_path / "out")
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ")
    assert "3 characters" in message and "at least 6" in message


def test_train_rejects_a_corpus_too_short_to_split_before_starting_the_run(tmp_path):
    (tmp_path / "tiny.txt").write_text("abc", encoding="utf-8")
    result = invoke("train", tmp_path / "tiny.txt", *TINY, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert_one_line_error(result, "at least 6")


def test_error_messages_name_paths_exactly(tmp_path):
    missing = tmp_path / "notes:smile:.txt"
    assert_one_line_error(invoke("train", missing, *TINY, "--out", tmp_path / "out"), str(missing))


@pytest.mark.slow
def test_train_on_bytes_accepts_invalid_utf8_and_samples_bytes(tmp_path):
    corpus = tmp_path / "binary.dat"
    corpus.write_bytes(b"hello \xff\xfe world \x00\x01 caf\xc3\xa9\n" * 20)
    out = tmp_path / "run"
    result = invoke("train", corpus, "--bytes", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "best.safetensors").is_file()
    sampled = sample(out, "--length", "20", "--seed", "1", "-q")
    assert sampled.exit_code == 0, sampled.output
    assert len(sampled.stdout_bytes) == 21 and sampled.stdout_bytes.endswith(b"\n")


# --- sample ------------------------------------------------------------------------------------------------


def test_sample_prints_length_characters_from_the_corpus_alphabet(run):
    text = sampled_text(sample(run["out"], "--length", "50", "--seed", "1", "-q"))
    assert len(text) == 50
    assert set(text) <= set(CORPUS_TEXT)


def test_sample_from_the_run_directory_uses_its_best_checkpoint(run):
    from_dir = sample(run["out"], "--length", "50", "--seed", "1", "-q")
    from_file = sample(run["out"] / "best.safetensors", "--length", "50", "--seed", "1", "-q")
    assert from_file.exit_code == 0, from_file.output
    assert sampled_text(from_dir) == sampled_text(from_file)


def test_sample_from_latest_checkpoint_file(run):
    text = sampled_text(sample(run["out"] / "latest.safetensors", "--length", "50", "--seed", "1", "-q"))
    assert len(text) == 50


def test_sample_same_seed_same_text_other_seed_other_text(run):
    first = sampled_text(sample(run["out"], "--length", "50", "--seed", "1", "-q"))
    again = sampled_text(sample(run["out"], "--length", "50", "--seed", "1", "-q"))
    other = sampled_text(sample(run["out"], "--length", "50", "--seed", "2", "-q"))
    assert first == again
    assert first != other


def test_sample_reports_its_random_seed_so_it_can_be_repeated(run):
    result = sample(run["out"], "--length", "30")
    text = sampled_text(result)
    seed = re.search(r"--seed (\d+)", result.stderr)
    assert seed, result.stderr
    assert sampled_text(sample(run["out"], "--length", "30", "--seed", seed.group(1), "-q")) == text


def test_sample_quiet_prints_nothing_on_stderr(run):
    result = sample(run["out"], "--length", "10", "--seed", "1", "-q")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_sample_temperature_zero_ignores_the_seed(run):
    one = sampled_text(sample(run["out"], "--length", "50", "--temperature", "0", "--seed", "1", "-q"))
    two = sampled_text(sample(run["out"], "--length", "50", "--temperature", "0", "--seed", "2", "-q"))
    assert len(one) == 50
    assert one == two


def test_sample_starts_with_the_prime_and_continues_it(run):
    text = sampled_text(sample(run["out"], "--prime", "abc", "--length", "50", "--seed", "1", "-q"), prime="abc")
    assert len(text) == 50


def test_sample_with_length_zero_prints_just_the_prime(run):
    result = sample(run["out"], "--prime", "abc", "--length", "0", "--seed", "1", "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout == "abc\n"


def test_sample_num_samples_prints_each_sample_whole(run):
    result = sample(run["out"], "--prime", "abc", "--length", "10", "--num-samples", "3", "--seed", "1")
    assert result.exit_code == 0, result.output
    block = len("abc") + 10 + 1
    assert len(result.stdout) == 3 * block
    samples = [result.stdout[i * block:(i + 1) * block] for i in range(3)]
    assert all(s.startswith("abc") and s.endswith("\n") for s in samples)
    assert len(set(samples)) > 1
    assert "sample 2 of 3" in result.stderr and "sample 3 of 3" in result.stderr


def test_sample_rejects_a_missing_checkpoint(tmp_path):
    assert_one_line_error(sample(tmp_path / "gone.safetensors"), str(tmp_path / "gone.safetensors"))


def test_sample_rejects_a_directory_without_checkpoint(tmp_path):
    assert_one_line_error(sample(tmp_path), str(tmp_path), "no checkpoint")


def test_sample_rejects_a_truncated_checkpoint(run, tmp_path):
    data = (run["out"] / "best.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    message = assert_one_line_error(sample(cut, "--length", "5"), str(cut))
    assert "damaged" in message or "truncated" in message


def test_sample_rejects_a_checkpoint_cut_inside_its_header_as_truncated(run, tmp_path):
    data = (run["out"] / "best.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:100])
    assert_one_line_error(sample(cut, "--length", "5"), str(cut), "truncated")


def test_sample_says_a_checkpoint_cut_in_its_tensor_data_is_truncated(run, tmp_path):
    data = (run["out"] / "best.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    assert_one_line_error(sample(cut, "--length", "5"), str(cut), "truncated")


def test_sample_detects_a_flipped_byte_in_the_tensor_data(run, tmp_path):
    data = bytearray((run["out"] / "best.safetensors").read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    middle = 8 + header_len + (len(data) - 8 - header_len) // 2
    data[middle] ^= 0x01
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(data))
    assert_one_line_error(sample(flipped, "--length", "5"), str(flipped), "corrupted")


def test_sample_rejects_random_bytes(tmp_path):
    noise = tmp_path / "noise.safetensors"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_one_line_error(sample(noise, "--length", "5"), str(noise), "not a charrnn checkpoint")


def test_sample_rejects_a_text_file(tmp_path):
    text = write_corpus(tmp_path / "corpus.txt")
    assert_one_line_error(sample(text, "--length", "5"), str(text), "not a charrnn checkpoint")


def test_sample_rejects_a_safetensors_file_without_charrnn_metadata(tmp_path):
    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": np.zeros((4, 4), np.float32)}, str(foreign))
    assert_one_line_error(sample(foreign, "--length", "5"), str(foreign), "not a charrnn checkpoint")


@pytest.mark.parametrize("option, value, named", [
    ("--temperature", "-0.5", "temperature"),
    ("--temperature", "nan", "temperature"),
    ("--length", "-1", "length"),
    ("--top-k", "-1", "top-k"),
    ("--num-samples", "0", "num-samples"),
])
def test_sample_rejects_options_out_of_range(run, option, value, named):
    assert_one_line_error(sample(run["out"], option, value), named, value)


def test_sample_rejects_prime_with_unknown_characters(run):
    assert "☃" not in CORPUS_TEXT and "é" in CORPUS_TEXT
    result = sample(run["out"], "--prime", "café ☃", "--length", "5", "-q")
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "prime" in lines[0] and "'☃'" in lines[0]
    assert "'é'" not in lines[0]


def test_sample_rejects_prime_with_unknown_characters_before_printing_anything(run):
    result = sample(run["out"], "--prime", "café ☃", "--length", "5")
    assert_one_line_error(result, "'☃'")


# --- watching, records, reports, info, configuration --------------------------------------------------------------


@pytest.mark.slow
def test_training_in_a_log_is_plain_lines_with_samples(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    done = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), *TINY, "--sample-every", "10",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "\r" not in done.stderr  # no control codes in a log
    lines = done.stderr.splitlines()
    assert any(re.match(r"step +10  epoch 0\.\d\d  train \d\.\d{3} \(\d\.\d\d bpc\)  val .*lr .*chars/s  ETA", l) for l in lines)
    assert any(re.match(r"step +20  val \d\.\d{4} nats \(\d\.\d{3} bpc\) [↓↑]", l) for l in lines)
    assert sum("sample at step 10, temperature" in l for l in lines) == 3
    assert done.stdout.strip() == str(tmp_path / "run" / "best.safetensors")
    # The command gave itself a CPU device per core and split the batch of 4 over as many as divide it.
    from charrnn import launch

    cores = min(launch.usable_cores(), launch.MAX_CPU_DEVICES)
    run_info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_info["devices"] == max(d for d in range(1, cores + 1) if 4 % d == 0)


def test_a_run_keeps_its_metrics_and_settings(run):
    import json

    from charrnn import runlog

    records = runlog.read_metrics(run["out"])
    logs = [r for r in records if r["event"] == "log"]
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [10, 20] and [r["step"] for r in logs] == [10, 20]
    assert all(r["train_bpc"] == pytest.approx(r["train_nats"] / np.log(2)) for r in logs)
    info = json.loads((run["out"] / "run.json").read_text())
    assert info["model"]["hidden_size"] == 16 and info["train"]["max_steps"] == 20
    assert len(info["corpus"]["sha256"]) == 64 and info["versions"]["jax"]


def test_info_describes_a_checkpoint(run):
    import json

    result = invoke("info", run["out"])
    assert result.exit_code == 0, result.output
    for fragment in ("1-layer LSTM, 16 units", "parameters", "vocabulary", "step", "20", "format version", "sha256",
                     "dropout auto ("):
        assert fragment in result.stdout
    details = json.loads(invoke("info", run["out"], "--json").stdout)
    assert details["step"] == 20 and details["model"]["cell"] == "lstm"
    # The default dropout: asked for as "auto" (None), fitted to the run, the rate in use saved with the step.
    assert details["model"]["dropout"] is None and 0.0 <= details["dropout"] < 1.0
    assert set(details["vocabulary"]["symbols"]) == set(CORPUS_TEXT)


@pytest.mark.slow
def test_report_compares_runs_and_writes_a_page(run, tmp_path):
    other = tmp_path / "other"
    assert invoke("train", run["corpus"], *TINY, "--hidden-size", "8", "--out", other).exit_code == 0
    page = tmp_path / "report.html"
    result = invoke("report", run["out"], other, "--html", page)
    assert result.exit_code == 0, result.output
    assert "settings that differ" in result.stdout and "model.hidden_size" in result.stdout
    assert "validation loss" in result.stdout and page.read_text().count("<polyline") == 4
    assert_one_line_error(invoke("report", tmp_path / "nothing-here"), "not a run directory")


@pytest.mark.slow
def test_options_can_come_from_a_toml_file_and_the_command_line_wins(run, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('hidden-size = 12\nnum_layers = 1\nembedding_size = 4\nseq_length = 16\nbatch_size = 4\n'
                      'max_steps = 5\neval_every = 5\nweight_drop = 0.2\n')
    result = invoke("train", run["corpus"], "--config", config, "--max-steps", "3", "--out", tmp_path / "r", "--json")
    assert result.exit_code == 0, result.output
    import json

    summary = json.loads(result.stdout)
    assert summary["step"] == 3 and summary["reason"] == "max_steps"
    assert json.loads(invoke("info", tmp_path / "r", "--json").stdout)["model"]["hidden_size"] == 12
    assert "weight drop 0.2" in invoke("info", tmp_path / "r").stdout
    config.write_text("hiden_size = 12\n")
    assert_one_line_error(invoke("train", run["corpus"], "--config", config), "hiden_size", "known:", "hidden-size", code=2)
    config.write_text("hidden_size = \n")
    assert_one_line_error(invoke("train", run["corpus"], "--config", config), "not valid TOML", code=2)


def test_quiet_training_prints_only_the_checkpoint(run, tmp_path):
    result = invoke("train", run["corpus"], *TINY, "--max-steps", "5", "--out", tmp_path / "q", "--quiet")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.strip() == str(tmp_path / "q" / "best.safetensors")


def test_sample_json_for_scripts(run):
    import json

    result = sample(run["out"], "--length", "30", "--num-samples", "2", "--seed", "4", "--prime", "The", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    d = json.loads(result.stdout)
    assert d["seed"] == 4 and len(d["samples"]) == 2 and all(s.startswith("The") and len(s) == 33 for s in d["samples"])


def test_explore_writes_one_page_and_prints_its_path(run, tmp_path):
    page = tmp_path / "page.html"
    result = invoke("explore", run["out"], "--out", page, "--max-chars", "300", "--ablation-chars", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(page) and page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "MB" in result.stderr


def test_explore_refuses_what_is_not_a_checkpoint_with_one_line_and_no_page(tmp_path):
    fake, page = write_corpus(tmp_path / "fake.safetensors"), tmp_path / "page.html"
    assert_one_line_error(invoke("explore", fake, "--out", page), "is not a charrnn checkpoint")
    assert_one_line_error(invoke("explore", tmp_path / "none", "--out", page), "no such checkpoint")
    assert not page.exists()


@pytest.mark.slow
def test_a_relu_rnn_trains_samples_and_keeps_its_activation_in_the_checkpoint(tmp_path):
    from charrnn import checkpoint

    corpus, out = write_corpus(tmp_path / "corpus.txt"), tmp_path / "relu"
    result = invoke("train", corpus, "--cell", "rnn", "--activation", "relu", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    assert checkpoint.load(out).model.activation == "relu"
    assert invoke("sample", out, "--length", "20", "--seed", "1").exit_code == 0


def test_a_layer_normalised_lstm_trains_samples_is_inspected_and_keeps_its_norm(tmp_path):
    from charrnn import checkpoint

    corpus, out = write_corpus(tmp_path / "corpus.txt"), tmp_path / "ln"
    result = invoke("train", corpus, "--layer-norm", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    assert checkpoint.load(out).model.layer_norm and "c_gain" in checkpoint.load_params(checkpoint.load(out))["layers"][0]
    assert "LSTM (layer-normalised)" in invoke("info", out).stdout
    assert invoke("sample", out, "--length", "20", "--seed", "1").exit_code == 0
    inspected = invoke("inspect-cells", out, "--max-chars", "300", "--ablation-chars", "0", "--json")
    assert inspected.exit_code == 0, inspected.output
    # A run keeps its architecture: resuming without the normalisation is refused, in one line.
    assert_one_line_error(invoke("train", "--resume", out, "--no-layer-norm", "--max-steps", "30"), "layer")


def test_bfloat16_products_train_are_saved_and_may_change_on_resume(tmp_path):
    from charrnn import checkpoint

    corpus, out = write_corpus(tmp_path / "corpus.txt"), tmp_path / "mixed"
    result = invoke("train", corpus, "--precision", "bfloat16", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    assert "bfloat16 products" in result.stderr
    assert checkpoint.load(out).train.precision == "bfloat16"
    assert invoke("sample", out, "--length", "20", "--seed", "1").exit_code == 0
    # How the products are computed is not what the run learns: a resumed run may change it.
    resumed = invoke("train", "--resume", out, "--precision", "float32", "--max-steps", "30")
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint.load(out).train.precision == "float32" and checkpoint.load(out).state["step"] == 30
    assert_one_line_error(invoke("train", corpus, "--precision", "float16", *TINY), "float16", code=2)
    assert_one_line_error(invoke("train", corpus, "--gradient", "rtrl", "--precision", "bfloat16", *TINY),
                          "RTRL runs in float32")


def test_an_activation_for_a_cell_that_has_none_is_one_line(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    assert_one_line_error(invoke("train", corpus, "--cell", "gru", "--activation", "identity", *TINY,
                                 "--out", tmp_path / "x"), "--activation identity is for the vanilla RNN")
    assert not (tmp_path / "x").exists()


RTRL = ["--cell", "rnn", "--hidden-size", "8", "--num-layers", "1", "--embedding-size", "4", "--batch-size", "1",
        "--gradient", "rtrl", "--state-reset", "never", "--update-every", "10", "--eval-every", "10",
        "--sample-every", "0", "--val-fraction", "0.02", "--test-fraction", "0.02"]


@pytest.mark.slow
def test_continuous_rtrl_training_resumes_to_the_same_parameters(tmp_path):
    """`--gradient rtrl --state-reset never`: the sensitivities are saved with the carry, so 10 + 10 steps end
    where 20 steps do."""
    from charrnn import checkpoint

    corpus = write_corpus(tmp_path / "corpus.txt")
    assert invoke("train", corpus, *RTRL, "--max-steps", "20", "--out", tmp_path / "whole").exit_code == 0
    assert invoke("train", corpus, *RTRL, "--max-steps", "10", "--out", tmp_path / "half").exit_code == 0
    assert "sensitivities" in checkpoint.load(tmp_path / "half", prefer=checkpoint.LATEST).arrays
    resumed = invoke("train", "--resume", tmp_path / "half", "--max-steps", "20")
    assert resumed.exit_code == 0, resumed.output
    whole, half = (checkpoint.load(tmp_path / d, prefer=checkpoint.LATEST) for d in ("whole", "half"))
    for name, array in whole.arrays.items():
        np.testing.assert_array_equal(array, half.arrays[name], err_msg=name)


@pytest.mark.parametrize("extra, fragments", [
    (["--hidden-size", "256", "--num-layers", "2"], ["flops per character", "--hidden-size", "--gradient bptt"]),
    (["--devices", "2"], ["runs on one device", "drop --devices 2"]),
    (["--dropout", "0.2"], ["without dropout"]),
    (["--weight-drop", "0.2"], ["without weight drop"]),
])
def test_rtrl_refuses_what_it_cannot_do_in_one_line(tmp_path, extra, fragments):
    corpus = write_corpus(tmp_path / "corpus.txt")
    assert_one_line_error(invoke("train", corpus, *RTRL, *extra, "--out", tmp_path / "x"), *fragments)
    assert not (tmp_path / "x").exists()


def test_update_every_is_for_rtrl_only(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    assert_one_line_error(invoke("train", corpus, *TINY, "--update-every", "5", "--out", tmp_path / "x"),
                          "--update-every is for --gradient rtrl")
