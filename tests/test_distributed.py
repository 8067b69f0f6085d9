"""Data parallelism: many devices in one process, many processes, and the options that ask for them.

JAX fixes its device count when it starts, so the four-device runs happen in a child process started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (four CPU devices, one machine). The multi-process test
starts two `charrnn train` processes that meet on 127.0.0.1 (a free port) and reduce their gradients with
gloo, and compares them with one process training on the same global batch.

Tolerance: the sharded runs add up the loss and the gradients per device and then across devices, in another
order than one device does, so float32 rounding differs in the last bits (1e-7 relative at the first step, the
same order after 20). Losses and parameters must agree to rtol 1e-5 (atol 1e-6) at every step: a bug (a window
fed to the wrong device, a missed or doubled gradient, a carry reset at the wrong time) moves them by 1e-3 or more.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from charrnn import checkpoint, data, distributed
from conftest import assert_one_line_error, invoke
from charrnn.config import ConfigError

RTOL, ATOL = 1e-5, 1e-6
TIMEOUT = 240


def child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {**env, "JAX_PLATFORMS": "cpu", **extra}


# --- many devices, one process ----------------------------------------------------------------------------------

FOUR_DEVICES = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import jax, numpy as np
    from charrnn import checkpoint, data, distributed, runlog, train
    from charrnn.config import ModelConfig, TrainConfig

    out = Path(sys.argv[1])
    assert len(jax.devices()) == 4, jax.devices()
    text = "".join("abcdefg\\n"[(i * i + i // 7) % 8] for i in range(3000))
    vocab = data.Vocabulary.from_text(text)
    corpus = data.Corpus(vocab.encode(text), vocab, data.CorpusInfo("c.txt", "0" * 64, len(text)))
    model = ModelConfig(vocab_size=len(vocab), cell="lstm", hidden_size=8, num_layers=2, embedding_size=4,
                        dropout=0.1, weight_drop=0.2)
    # 15 validation characters: 14 targets in 7 streams, padded with a masked one to 8 for four devices.
    config = TrainConfig(batch_size=8, seq_length=16, max_steps=20, max_epochs=None, eval_every=10, log_every=1,
                         sample_every=0, warmup_steps=5, val_fraction=0.005, test_fraction=0.0)

    def run(devices, name, stop_at=None, resume=None):
        losses = []
        callback = lambda e: losses.append(e.train_nats) if isinstance(e, runlog.Logged) else None
        stop = (lambda: len(losses) >= stop_at) if stop_at else (lambda: False)
        finished = train.train(corpus, model, config, out / name, resume=resume, callback=callback,
                               should_stop=stop, placement=distributed.placement(devices))
        return {"losses": losses, "val": [h["val_nats"] for h in checkpoint.load(out / name / "latest.safetensors").history],
                "step": finished.step}

    result = {"one": run(1, "one"), "four": run(4, "four"), "part": run(4, "part", stop_at=7)}
    at_7 = checkpoint.load(out / "part" / "latest.safetensors")
    result["resumed"] = run(4, "part", resume=at_7)
    result["resumed_on_two"] = run(2, "part-on-two", resume=at_7)  # a checkpoint holds no device layout
    print(json.dumps(result))
''')


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    """One child with four CPU devices: a one-device run, a four-device run, and a four-device run stopped at
    step 7 and resumed, all from the same seed."""
    root = tmp_path_factory.mktemp("four-devices")
    script = root / "four.py"
    script.write_text(FOUR_DEVICES)
    done = subprocess.run([sys.executable, str(script), str(root)], capture_output=True, text=True, timeout=TIMEOUT,
                          env=child_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    assert done.returncode == 0, done.stderr[-3000:]
    return root, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_four_devices_follow_the_loss_curve_of_one_step_by_step(four_devices):
    _, result = four_devices
    one, four = result["one"], result["four"]
    assert len(one["losses"]) == len(four["losses"]) == 20
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(four["val"], one["val"], rtol=RTOL, atol=ATOL)  # evaluation with a padded row
    assert four["losses"][-1] < four["losses"][0]


@pytest.mark.slow
def test_four_devices_give_the_parameters_of_one(four_devices):
    root, _ = four_devices
    one = checkpoint.load(root / "one" / checkpoint.LATEST)
    four = checkpoint.load(root / "four" / checkpoint.LATEST)
    assert sorted(one.arrays) == sorted(four.arrays)
    for name in one.arrays:  # the carry too: gathered from the four devices, rows in stream order
        np.testing.assert_allclose(four.arrays[name], one.arrays[name], rtol=RTOL, atol=ATOL, err_msg=name)
    assert four.state["devices"] == 4 and one.state["devices"] == 1


@pytest.mark.slow
def test_a_four_device_run_stopped_and_resumed_is_bit_identical(four_devices):
    root, result = four_devices
    assert result["part"]["step"] == 7 and result["resumed"]["step"] == 20
    whole = checkpoint.load(root / "four" / checkpoint.LATEST).arrays
    resumed = checkpoint.load(root / "part" / checkpoint.LATEST).arrays
    assert sorted(whole) == sorted(resumed)
    assert all(np.array_equal(whole[name], resumed[name]) for name in whole)


@pytest.mark.slow
def test_a_four_device_checkpoint_resumes_on_two_devices(four_devices):
    root, result = four_devices
    assert result["resumed_on_two"]["step"] == 20
    np.testing.assert_allclose(result["resumed_on_two"]["losses"], result["four"]["losses"][7:], rtol=RTOL, atol=ATOL)
    whole = checkpoint.load(root / "four" / checkpoint.LATEST).arrays
    on_two = checkpoint.load(root / "part-on-two" / checkpoint.LATEST)
    assert on_two.state["devices"] == 2
    for name in whole:
        np.testing.assert_allclose(on_two.arrays[name], whole[name], rtol=RTOL, atol=ATOL, err_msg=name)


def test_a_batch_that_does_not_split_over_the_devices_says_what_would():
    data.check_batch(32, 4)
    with pytest.raises(ConfigError) as e:
        data.check_batch(30, 4, available=8)
    assert str(e.value) == ("--batch-size 30 does not split evenly over 4 devices; use a multiple of 4 (28 or 32) "
                            "or --devices 1, 2, 3, 5 or 6")
    with pytest.raises(ConfigError, match=r"\(4\) or --devices 1 or 3$"):
        data.check_batch(3, 4)


def test_a_tiny_corpus_shrinks_the_batch_to_a_multiple_of_the_devices():
    from charrnn import data

    B, T, warnings = data.fit_window(100, 32, 10, multiple=4)
    assert (B, T) == (8, 10) and "--batch-size 8 (a multiple of the 4 devices)" in warnings[0]
    with pytest.raises(data.CorpusError, match="each of 4 devices"):
        data.fit_window(30, 32, 10, multiple=4)


# --- many processes -------------------------------------------------------------------------------------------

CORPUS = "".join("the cat sat on the mat. " if i % 3 else "A dog, a log; a fog!\n" for i in range(300))
RUN = ["--cell", "gru", "--hidden-size", "16", "--num-layers", "2", "--embedding-size", "8", "--dropout", "0.1",
       "--seq-length", "16", "--batch-size", "8", "--max-steps", "30", "--eval-every", "15", "--log-every", "5",
       "--sample-every", "15", "--warmup-steps", "5", "--seed", "4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_the_model_of_one_process_with_the_same_global_batch(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    env = child_env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-cache"),
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    # Process 1 is given its own --out: it must write nothing there (only process 0 writes).
    results = start_two(tmp_path, [corpus, corpus], env=env)
    for returncode, _, err in results:
        assert returncode == 0, err[-3000:]
    single = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), *RUN, "--out",
                             str(tmp_path / "single")], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert single.returncode == 0, single.stderr[-3000:]

    (_, out0, err0), (_, out1, err1) = results
    assert out0.strip() == str(tmp_path / "rank0" / checkpoint.BEST)  # results on stdout, nothing else there
    assert out1 == "" and not (tmp_path / "rank1").exists()
    assert "step" not in err1 and "Training" not in err1 and "Training" in err0  # progress from process 0 only

    two = checkpoint.load(tmp_path / "rank0" / checkpoint.LATEST)
    one = checkpoint.load(tmp_path / "single" / checkpoint.LATEST)
    assert two.state["step"] == one.state["step"] == 30 and two.state["processes"] == 2
    for name in one.arrays:
        np.testing.assert_allclose(two.arrays[name], one.arrays[name], rtol=RTOL, atol=ATOL, err_msg=name)
    losses = lambda run: [r["train_nats"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
                          if r["event"] == "log"]
    assert len(losses("rank0")) == 6
    np.testing.assert_allclose(losses("rank0"), losses("single"), rtol=RTOL, atol=ATOL)


def start_two(tmp_path, corpora, *more, env=None):
    """Two `charrnn train` processes on loopback, process i on corpora[i] writing to tmp_path / f"rank{i}";
    returns [(returncode, stdout, stderr)]."""
    port, procs = free_port(), []
    for rank, corpus in enumerate(corpora):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "charrnn", "train", str(corpus), *RUN, "--out", str(tmp_path / f"rank{rank}"),
             "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(rank), *more],
            cwd=tmp_path, env=env or child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


@pytest.mark.slow
def test_processes_given_different_corpora_refuse_to_train_and_write_nothing(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    same_name = [tmp_path / "a" / "corpus.txt", tmp_path / "b" / "corpus.txt"]
    same_name[0].write_text(CORPUS)
    same_name[1].write_text(CORPUS.replace("cat", "rat"))  # same length, other text
    for returncode, out, err in start_two(tmp_path, same_name, "--max-steps", "2"):
        # Gloo prints a line of its own when the processes connect; ours is the one error line.
        lines = [line for line in err.strip().splitlines() if not line.startswith("[Gloo]")]
        assert returncode == 1 and out == "" and len(lines) == 1, err[-3000:]
        assert lines[0].startswith("error: process 1 does not train on what process 0 does"), err
    assert not (tmp_path / "rank0").exists() and not (tmp_path / "rank1").exists()


# --- the options ------------------------------------------------------------------------------------------------


def one_line_error(args, exit_code):
    return assert_one_line_error(invoke("train", *args), code=exit_code)


@pytest.mark.parametrize("args, exit_code, fragment", [
    (["--devices", "0"], 1, "--devices must be at least 1"),
    (["--devices", "64"], 1, "--devices 64: only 1 cpu device is visible"),
    (["--coordinator", "nohost"], 2, "is not HOST:PORT"),
    (["--coordinator", "10.0.0.1:99999"], 2, "is not HOST:PORT"),
    (["--num-processes", "2", "--process-id", "0"], 1, "go with --coordinator"),
    (["--coordinator", "127.0.0.1:1234"], 1, "needs --num-processes and --process-id"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], 1,
     "--process-id must be in [0, 1]"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "0", "--process-id", "0"], 1,
     "--num-processes must be at least 1"),
])
def test_bad_distribution_options_are_one_line_errors(tmp_path, args, exit_code, fragment):
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS)
    line = one_line_error([str(corpus), "--out", str(tmp_path / "run"), *args], exit_code)
    assert fragment in line
    assert not (tmp_path / "run").exists()


def test_coordinator_addresses():
    assert distributed.parse_coordinator("10.0.0.1:1234") == ("10.0.0.1", 1234)
    assert distributed.parse_coordinator("node-7.cluster:80") == ("node-7.cluster", 80)
    assert distributed.parse_coordinator("[::1]:8476") == ("[::1]", 8476)
    for bad in ("10.0.0.1", ":1234", "host:0", "host:port", "a b:1"):
        with pytest.raises(ValueError):
            distributed.parse_coordinator(bad)


# --- joining a run that cannot start ------------------------------------------------------------------------------
# JAX aborts the process (or crashes it) when joining fails, so these run `charrnn train` in a child process: the
# user must see one line saying what is wrong, soon, and nothing may be written.


@pytest.fixture
def listener():
    """A port on which another program listens (on every address, as JAX's coordinator would)."""
    with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as s:
        s.bind(("::" if socket.has_ipv6 else "0.0.0.0", 0))
        s.listen()
        yield s.getsockname()[1]


def join(tmp_path, coordinator, process_id, timeout="2s"):
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS)
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(tmp_path / "run"),
                           "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(process_id),
                           "--join-timeout", timeout], cwd=tmp_path, env=child_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and done.stdout == "", done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    assert not (tmp_path / "run").exists()
    return lines[0], time.perf_counter() - t


@pytest.mark.slow
def test_an_unreachable_coordinator_is_one_line_after_the_join_timeout(tmp_path):
    line, took = join(tmp_path, f"127.0.0.1:{free_port()}", 1)
    assert line.startswith("error: could not reach the coordinator at 127.0.0.1:") and "within 2 s" in line
    assert "--join-timeout" in line and took < 30


@pytest.mark.slow
def test_process_0_alone_gives_up_with_one_line_after_the_join_timeout(tmp_path):
    line, took = join(tmp_path, f"127.0.0.1:{free_port()}", 0)
    assert line.startswith("error: not all 2 processes joined the run at 127.0.0.1:") and "within 2 s" in line
    assert took < 40


def test_a_coordinator_port_in_use_is_one_line(tmp_path, listener):
    line, _ = join(tmp_path, f"127.0.0.1:{listener}", 0)
    assert f"process 0 cannot listen on port {listener}" in line and "choose another port" in line


def test_auto_outside_a_cluster_is_one_line(tmp_path):
    env = {k: v for k, v in child_env().items() if not k.startswith(("SLURM_", "OMPI_", "TPU_", "JAX_COORDINATOR"))}
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS)
    done = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(tmp_path / "run"),
                           "--coordinator", "auto"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 1 and done.stdout == "" and not (tmp_path / "run").exists()
    assert done.stderr.startswith("error: --coordinator auto: JAX found no TPU pod, Slurm or Open MPI job")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_unknown_coordinator_host_is_one_line(tmp_path):
    line, _ = join(tmp_path, "no-such-host.invalid:1234", 1)
    assert "cannot resolve 'no-such-host.invalid'" in line


@pytest.mark.slow
def test_when_a_process_dies_the_other_stops_soon_with_one_line(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS * 4)
    port, procs = free_port(), []
    for rank in range(2):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "charrnn", "train", str(corpus), *RUN, "--max-steps", "100000", "--out",
             str(tmp_path / f"rank{rank}"), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
             "--process-id", str(rank)],
            cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        seen = []
        for line in procs[0].stderr:  # training has started once the step is compiled
            seen.append(line)
            if "compiled in" in line:
                break
        procs[1].kill()
        t = time.perf_counter()
        rest = procs[0].communicate(timeout=TIMEOUT)[1]
        took = time.perf_counter() - t
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for stream in (p.stdout, p.stderr):
                stream.close()
    errors = [line for line in rest.splitlines() if line.startswith("error:")]
    assert procs[0].returncode == 1 and "Traceback" not in rest, "".join(seen) + rest[-3000:]
    assert len(errors) == 1 and errors[0].startswith("error: the run lost another process"), rest[-3000:]
    assert took < 60  # not JAX's heartbeat timeout (100 s) and abort
