"""Reliability of `charrnn train`: resume that really resumes, crash safety, the numerical guard, and an answer
for every bad input.

Signals and kills need a real process: those tests run `python -m charrnn` (or a small script around the
library) as a subprocess in tmp_path, with output captured in files and a timeout on every wait, so a hung
child fails its test instead of hanging the suite. The subprocesses share a JAX compilation cache, so that
after the first one each starts training in about a second. Every run uses the same tiny model with dropout
(so the random stream matters), a warm-up and a corpus of a few epochs (so the carry is reset at epoch starts).

The contract checked for every error a user can fix: exit code != 0, no traceback, one line on stderr that
starts with "error:" and names the key fact, and nothing written or overwritten.
"""

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from charrnn import checkpoint
from charrnn.checkpoint import BEST, LATEST, CheckpointError
from conftest import (CORPUS_TEXT, TINY_MODEL, TINY_WINDOWS, assert_names, assert_one_line_error, invoke,
                      write_corpus)

STEPS = 400
# Warm-up past the first interruption, so a resume must restore the schedule; constant decay after it, so that
# the compiled step does not depend on --max-steps and every subprocess hits the shared compilation cache.
RUN = ["--cell", "lstm", "--hidden-size", "16", "--num-layers", "2", "--embedding-size", "8", "--dropout", "0.1",
       "--seq-length", "16", "--batch-size", "4", "--learning-rate", "1e-2", "--warmup-steps", "100",
       "--decay", "constant", "--seed", "3", "--max-steps", str(STEPS)]
TINY = TINY_MODEL + TINY_WINDOWS
TEMPORARY = re.compile(r"\.(best|latest)\.safetensors\..+\.tmp")
TIMEOUT = 120  # seconds any one child may take before its test fails


# --- helpers -----------------------------------------------------------------------------------------------


def the_error_line(stderr: str) -> str:
    """The one "error:" line of a run that printed progress first; it must be the last line."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert stderr.strip().splitlines()[-1] == errors[0], stderr
    return errors[0]


class Child:
    """A subprocess with its stdout and stderr in files, so that a chatty child never blocks on a full pipe."""

    def __init__(self, argv, cwd: Path, env: dict, name: str):
        self.out, self.err = cwd / f"{name}.stdout", cwd / f"{name}.stderr"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env, stdout=out, stderr=err)

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout=TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"child {self.proc.args} still running after {timeout} s:\n{self.stderr}")

    @property
    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    @property
    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def children():
    """Spawns children and kills (by pid, one by one) any still running when the test ends."""
    started = []

    def spawn(argv, cwd, env, name):
        child = Child(argv, cwd, env, name)
        started.append(child)
        return child

    yield spawn
    for child in started:
        if child.running():
            child.proc.kill()
            child.proc.wait(30)


def charrnn_argv(*args):
    return [sys.executable, "-m", "charrnn", *args]


def run_charrnn(*args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in charrnn_argv(*args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)


def wait_until(condition, child: Child, timeout=TIMEOUT, poll=0.005) -> None:
    """Polls `condition` until it holds; fails if the child exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if not child.running():
            pytest.fail(f"the child exited (code {child.proc.returncode}) before the awaited moment:\n{child.stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s in vain:\n{child.stderr}")
        time.sleep(poll)


def saved_step(path: Path):
    """The step recorded in a checkpoint's header, or None if there is none (or it cannot be read now)."""
    try:
        blob = Path(path).read_bytes()
        n = int.from_bytes(blob[:8], "little")
        return json.loads(json.loads(blob[8 : 8 + n])["__metadata__"]["state"])["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def newest_step(run: Path) -> int:
    steps = [saved_step(run / name) for name in (BEST, LATEST)]
    return max((s for s in steps if s is not None), default=0)


def arrays(path: Path) -> dict:
    return checkpoint.load(path).arrays


def assert_bit_identical(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    differ = [name for name in want if got[name].dtype != want[name].dtype or not np.array_equal(got[name], want[name])]
    assert not differ, f"arrays that differ from the uninterrupted run: {differ}"


def check_run_directory(run: Path) -> list[str]:
    """Every checkpoint in `run` loads (checksum verified); returns the names of the temporary files of checkpoint
    writes cut short. (Other files, such as run records, are not this test's business.)"""
    if not run.exists():
        return []
    temporary = []
    for path in sorted(run.iterdir()):
        if path.suffix == ".safetensors":
            checkpoint.load(path)  # raises CheckpointError on a torn or damaged file
        elif TEMPORARY.fullmatch(path.name):
            temporary.append(path.name)
    return temporary


def assert_best_is_the_lowest_validation_loss(run: Path) -> None:
    history = checkpoint.load(run / LATEST).history
    best = checkpoint.load(run / BEST)
    lowest = min(history, key=lambda h: h["val_nats"])
    assert (best.state["step"], best.state["val_nats"]) == (lowest["step"], lowest["val_nats"]), \
        f"best.safetensors is from step {best.state['step']}, the lowest validation loss at step {lowest['step']}"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The environment of every subprocess: CPU, and one JAX compilation cache for the whole module."""
    cache = tmp_path_factory.mktemp("jax-compilation-cache")
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
    """The uninterrupted run of STEPS steps that every interrupted run must reproduce bit for bit."""
    root = tmp_path_factory.mktemp("reference")
    corpus = write_corpus(root / "corpus.txt")
    done = run_charrnn("train", corpus, *RUN, "--eval-every", STEPS, "--out", root / "run", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    return {"corpus": corpus, "run": root / "run", "arrays": arrays(root / "run" / LATEST)}


def copy_of_reference(reference, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(reference["run"], run)
    return run


def snapshot(directory: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())} if directory.exists() else {}


# --- exact resume ------------------------------------------------------------------------------------------


def assert_stopped_cleanly(child: Child, run: Path, after_step: int) -> int:
    """The child stopped on a signal: exit code 0, a message with the step and where the checkpoint is, and
    latest.safetensors at that step. Returns the step."""
    assert child.wait() == 0, child.stderr
    stderr = child.stderr
    assert "Traceback" not in stderr
    stopped = re.search(r"Stopped at step ([\d,]+) \(interrupted\)", stderr)
    assert stopped, stderr
    step = int(stopped.group(1).replace(",", ""))
    assert str(run / LATEST) in stderr, stderr
    assert saved_step(run / LATEST) == step
    assert after_step < step < STEPS, f"stopped at step {step}; the test needs a stop inside the run"
    return step


@pytest.mark.slow
def test_a_run_stopped_by_ctrl_c_and_by_sigterm_then_resumed_ends_bit_identical(reference, env, tmp_path, children):
    run = tmp_path / "run"
    # Checkpoints every 50 steps; each signal comes just after one, so the stop saves one of its own in between.
    first = children(charrnn_argv("train", reference["corpus"], *RUN, "--eval-every", "50", "--log-every", "1",
                                  "--out", run), tmp_path, env, "first")
    wait_until(lambda: saved_step(run / LATEST) is not None, first)
    first.proc.send_signal(signal.SIGINT)
    k1 = assert_stopped_cleanly(first, run, after_step=0)

    second = children(charrnn_argv("train", "--resume", run), tmp_path, env, "second")
    wait_until(lambda: (saved_step(run / LATEST) or 0) > k1, second)
    second.proc.send_signal(signal.SIGTERM)
    k2 = assert_stopped_cleanly(second, run, after_step=k1)
    assert f"resuming at step {k1:,}" in second.stderr

    third = run_charrnn("train", "--resume", run, cwd=tmp_path, env=env)
    assert third.returncode == 0, third.stderr
    assert f"resuming at step {k2:,}" in third.stderr
    assert f"Stopped at step {STEPS:,} (reached --max-steps)" in third.stderr
    assert_bit_identical(arrays(run / LATEST), reference["arrays"])


# --- crash safety ------------------------------------------------------------------------------------------


def temporary_files(run: Path) -> set[str]:
    return {name for name in os.listdir(run) if TEMPORARY.fullmatch(name)} if run.exists() else set()


@pytest.mark.slow
def test_kill_9_at_random_moments_never_tears_a_checkpoint_and_resuming_loses_nothing(reference, env, tmp_path,
                                                                                       children):
    """Six kills: while importing JAX, then, after each resumed run has saved something, alternately at a
    random moment and the moment a checkpoint write is seen under way (a temporary file exists). After each: the
    checkpoints load, none saved is lost, and the next run resumes at the newest; at the end, the parameters
    are bit-identical to the uninterrupted run's."""
    rng = random.Random(1789)
    run = tmp_path / "run"
    kills, caught_writing, left_behind = 0, 0, set()
    for cycle in range(6):
        has_checkpoint = (run / LATEST).exists() or (run / BEST).exists()
        resume_from = saved_step(run / LATEST) if (run / LATEST).exists() else saved_step(run / BEST)
        start = newest_step(run)
        argv = (charrnn_argv("train", "--resume", run) if has_checkpoint else
                charrnn_argv("train", reference["corpus"], *RUN, "--eval-every", "2", "--out", run))
        child = children(argv, tmp_path, env, f"cycle{cycle}")
        if cycle == 0:
            time.sleep(rng.uniform(0.05, 0.3))  # still importing JAX: before any checkpoint
        else:
            wait_until(lambda: newest_step(run) > start, child)  # a checkpoint every second step
            assert not left_behind & temporary_files(run), "the resumed run kept the temporary files of a killed write"
            if cycle % 2:
                wait_until(lambda: temporary_files(run), child, poll=0.0005)  # a checkpoint write under way
            else:
                time.sleep(rng.uniform(0.0, 0.05))
        child.proc.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL, f"cycle {cycle}: the run ended before it was killed:\n{child.stderr}"
        kills += 1

        left_behind = set(check_run_directory(run))
        caught_writing += bool(left_behind)
        assert newest_step(run) >= start, f"cycle {cycle}: a saved checkpoint was lost"
        if has_checkpoint:
            assert f"resuming at step {resume_from:,}" in child.stderr, child.stderr

    resume_from = saved_step(run / LATEST) if (run / LATEST).exists() else saved_step(run / BEST)
    final = run_charrnn("train", "--resume", run, "--eval-every", "100", cwd=tmp_path, env=env)
    assert final.returncode == 0, final.stderr
    assert f"resuming at step {resume_from:,}" in final.stderr
    assert check_run_directory(run) == [], "the resumed run kept the temporary files of a killed write"
    assert_bit_identical(arrays(run / LATEST), reference["arrays"])
    assert_best_is_the_lowest_validation_loss(run)
    print(f"{kills} kills survived, {caught_writing} of them inside a checkpoint write; "
          f"resumed from step {resume_from}; final parameters bit-identical")


# A writer that dies (SIGXFSZ, default action: terminate) once it has written `limit` bytes of the new file, i.e.
# in the middle of the checkpoint write; when "refused" (Python ignores SIGXFSZ) the write fails with EFBIG.
CUT_SHORT_WRITER = """
import resource, signal, sys
from pathlib import Path
from charrnn import files
target, new, limit = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes(), int(sys.argv[3])
if sys.argv[4] == "killed":
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    files.write_atomic(target, new)
except OSError as e:
    print(e.errno)
    sys.exit(3)
"""


@pytest.mark.slow
def test_a_process_killed_in_the_middle_of_a_checkpoint_write_leaves_the_previous_checkpoint_whole(reference,
                                                                                                  tmp_path, children):
    old = (reference["run"] / LATEST).read_bytes()
    ckpt = checkpoint.load(reference["run"] / LATEST)
    ckpt.history = ckpt.history + [{"step": STEPS + 1, "val_nats": 1.0}]
    new = checkpoint.to_bytes(ckpt)
    (tmp_path / "new.bin").write_bytes(new)
    cases = [("killed", 0), ("killed", 4096), ("killed", len(new) // 2), ("killed", len(new) - 1),
             ("refused", len(new) // 2)]
    started = []
    for i, (how, limit) in enumerate(cases):  # in parallel: each child spends its time importing JAX
        directory = tmp_path / f"case{i}"
        directory.mkdir()
        (directory / LATEST).write_bytes(old)
        argv = [sys.executable, "-c", CUT_SHORT_WRITER, directory / LATEST, tmp_path / "new.bin", limit, how]
        started.append((how, limit, directory, children(argv, tmp_path, os.environ, f"case{i}")))
    for how, limit, directory, child in started:
        code = child.wait()
        assert (directory / LATEST).read_bytes() == old, f"{how} at byte {limit}: latest.safetensors was changed"
        checkpoint.load(directory / LATEST)
        temporary = [p for p in directory.iterdir() if p.name != LATEST]
        if how == "killed":
            assert code == -signal.SIGXFSZ, child.stderr
            # The kill hit the write: the cut-short temporary file is there, exactly `limit` bytes long.
            assert [p.stat().st_size for p in temporary] == [limit]
            assert TEMPORARY.fullmatch(temporary[0].name)
        else:
            assert code == 3 and child.stdout.strip() == str(errno.EFBIG), child.stderr
            assert temporary == [], "a failed write must remove its temporary file"


@pytest.mark.slow
def test_the_next_run_removes_temporary_files_left_by_a_killed_write(reference, env, tmp_path):
    run = copy_of_reference(reference, tmp_path)
    stale = [run / ".latest.safetensors.k2j4h1x_.tmp", run / ".best.safetensors.q9w8e7r6.tmp"]
    for path in stale:
        path.write_bytes((run / LATEST).read_bytes()[:1000])
    kept = [run / "notes.txt", run / ".latest.safetensors.backup"]
    for path in kept:
        path.write_text("the user's own file")
    done = run_charrnn("train", "--resume", run, "--max-steps", STEPS + 1, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert not any(path.exists() for path in stale)
    assert all(path.read_text() == "the user's own file" for path in kept)


# Kills itself (SIGKILL) when the checkpoint of step $KILL_AT_STEP has written its first file and is about to
# write the second: best.safetensors and latest.safetensors are two files, so there is a moment between them.
KILLED_BETWEEN_FILES = """
import json, os, signal, sys
from charrnn import cli, files
kill_at, real, written = int(os.environ["KILL_AT_STEP"]), files.write_atomic, []
def write(path, data):
    if not path.name.endswith(".safetensors"):  # run.json goes through the same atomic write
        return real(path, data)
    n = int.from_bytes(data[:8], "little")
    if json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["state"])["step"] == kill_at:
        written.append(path.name)
        if len(written) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(path, data)
files.write_atomic = write
sys.argv[0] = "charrnn"
cli.main()
"""


@pytest.mark.slow
def test_a_kill_between_writing_best_and_latest_loses_neither_the_run_nor_the_best_model(reference, env, tmp_path):
    run = tmp_path / "run"

    def killed_at(step, *args):
        done = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_FILES, *map(str, args)], cwd=tmp_path,
                              env={**env, "KILL_AT_STEP": str(step)}, capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == -signal.SIGKILL, f"step {step} wrote no second file (not a new best?)\n{done.stderr}"
        assert check_run_directory(run) == []
        return done

    # The very first checkpoint (always a new best), then a later one that is a new best.
    killed_at(5, "train", reference["corpus"], *RUN, "--eval-every", "5", "--out", run)
    assert newest_step(run) == 5
    resumed = killed_at(20, "train", "--resume", run)
    assert "resuming at step 5" in resumed.stderr
    # Resume up to the step that was being saved: what is on disk must be a consistent run with its best model.
    done = run_charrnn("train", "--resume", run, "--max-steps", "20", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert saved_step(run / LATEST) == 20
    assert_best_is_the_lowest_validation_loss(run)


@pytest.mark.parametrize("stage", ["rename", "second Ctrl-C during fsync"])
@pytest.mark.slow
def test_a_write_that_fails_or_is_interrupted_before_its_rename_keeps_the_previous_checkpoint(reference, tmp_path, monkeypatch, stage):
    old = (reference["run"] / LATEST).read_bytes()
    target = tmp_path / LATEST
    target.write_bytes(old)
    ckpt = checkpoint.load(target)
    ckpt.state = {**ckpt.state, "step": STEPS + 1}
    if stage == "rename":
        def fail(*args, **kwargs):
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "replace", fail)
        expected = OSError
    else:
        def fail(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(os, "fsync", fail)
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        checkpoint.save(target, ckpt)
    monkeypatch.undo()
    assert target.read_bytes() == old
    assert os.listdir(tmp_path) == [LATEST]


# The disk fills up once the first checkpoint (best and latest) is written: every later fsync of a checkpoint
# file fails (run.json, written once at the start, is left alone).
FULL_DISK = """
import errno, os, stat, sys
from charrnn import cli
real_fsync, files_synced = os.fsync, []
def fsync(fd):
    if stat.S_ISREG(os.fstat(fd).st_mode) and "safetensors" in os.readlink(f"/proc/self/fd/{fd}"):
        files_synced.append(fd)
        if len(files_synced) > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_fsync(fd)
os.fsync = fsync
sys.argv[0] = "charrnn"
cli.main()
"""


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_write_stops_with_one_line_and_keeps_the_previous_checkpoint(reference, env,
                                                                                                  tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", FULL_DISK, "train", reference["corpus"], *RUN, "--eval-every", "5",
                           "--out", run], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    line = assert_names(the_error_line(done.stderr), "at step 10", "No space left on device", "intact", "--resume")
    assert str(run) in line
    for name in (BEST, LATEST):
        assert checkpoint.load(run / name).state["step"] == 5
    assert check_run_directory(run) == []

    resumed = run_charrnn("train", "--resume", run, "--max-steps", "12", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step 5" in resumed.stderr
    assert saved_step(run / LATEST) == 12


# --- integrity ---------------------------------------------------------------------------------------------


def regions(blob: bytes) -> dict[str, range]:
    """Byte ranges of a checkpoint: the header length, the JSON metadata (configs, vocabulary, history, checksum),
    the JSON tensor table (names, dtypes, shapes, offsets), the header's padding and the tensor data."""
    n = int.from_bytes(blob[:8], "little")
    header = blob[8 : 8 + n]
    assert header.startswith(b'{"__metadata__":')
    table_start = min(header.index(json.dumps(name).encode() + b":{") for name in json.loads(header) if name != "__metadata__")
    padding = len(header.rstrip(b" "))
    return {"header length": range(0, 8), "metadata": range(8, 8 + table_start),
            "tensor table": range(8 + table_start, 8 + padding), "header padding": range(8 + padding, 8 + n),
            "tensor data": range(8 + n, len(blob))}


KNOWN_DAMAGE = re.compile(r"corrupted|damaged|truncated|not a charrnn checkpoint|format version|unreadable metadata")


@pytest.mark.slow
def test_a_bit_flip_anywhere_in_a_checkpoint_is_refused(reference, tmp_path):
    blob = (reference["run"] / LATEST).read_bytes()
    rng = np.random.default_rng(7)
    flipped = tmp_path / "flipped.safetensors"
    detected = {}
    for region, span in regions(blob).items():
        offsets = list(span) if len(span) <= 16 else sorted(rng.choice(span, 60, replace=False))
        for offset in offsets:
            damaged = bytearray(blob)
            damaged[offset] ^= 1 << int(rng.integers(8))
            flipped.write_bytes(bytes(damaged))
            with pytest.raises(CheckpointError) as refused:
                checkpoint.load(flipped)
            message = str(refused.value)
            assert str(flipped) in message and KNOWN_DAMAGE.search(message), message
            detected[region] = detected.get(region, 0) + 1
    print(f"bit flips detected: {sum(detected.values())} ({detected})")


@pytest.mark.parametrize("region", ["metadata", "tensor table", "tensor data"])
@pytest.mark.slow
def test_sampling_from_a_checkpoint_with_a_flipped_bit_is_a_one_line_error(reference, tmp_path, region):
    blob = bytearray((reference["run"] / LATEST).read_bytes())
    span = regions(bytes(blob))[region]
    blob[span[len(span) // 3]] ^= 0x10
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(blob))
    assert KNOWN_DAMAGE.search(assert_one_line_error(invoke("sample", flipped, "--length", "5"), str(flipped)))


@pytest.mark.slow
def test_a_checkpoint_cut_at_any_length_is_refused_as_truncated(reference, tmp_path):
    blob = (reference["run"] / LATEST).read_bytes()
    spans = regions(blob)
    data = spans["tensor data"]
    lengths = sorted({*range(1, spans["tensor table"].stop + 8, 7), *range(data.start, data.stop, 97), data.stop - 1})
    cut = tmp_path / "cut.safetensors"
    for length in lengths:
        cut.write_bytes(blob[:length])
        with pytest.raises(CheckpointError, match="truncated" if length >= 9 else "not a charrnn checkpoint"):
            checkpoint.load(cut)
    print(f"cut checkpoints refused: {len(lengths)}")


@pytest.mark.slow
def test_a_checkpoint_with_bytes_appended_is_refused(reference, tmp_path):
    longer = tmp_path / "longer.safetensors"
    longer.write_bytes((reference["run"] / LATEST).read_bytes() + b"\0" * 64)
    with pytest.raises(CheckpointError, match="damaged"):
        checkpoint.load(longer)


@pytest.mark.slow
def test_resume_from_a_corrupted_checkpoint_is_one_line_and_overwrites_nothing(reference, tmp_path):
    run = copy_of_reference(reference, tmp_path)
    blob = bytearray((run / LATEST).read_bytes())
    blob[-100] ^= 0x01
    (run / LATEST).write_bytes(bytes(blob))
    before = snapshot(run)
    assert_one_line_error(invoke("train", "--resume", run, "--max-steps", STEPS + 10), str(run / LATEST), "corrupted")
    assert snapshot(run) == before


# --- the numerical guard -----------------------------------------------------------------------------------


def assert_every_saved_array_is_finite(run: Path) -> None:
    for path in sorted(run.glob("*.safetensors")):
        for name, array in checkpoint.load(path).arrays.items():
            assert np.isfinite(array).all(), f"{path.name}: {name} is not finite"


def test_an_absurd_learning_rate_stops_training_naming_the_step_and_the_rate(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    result = invoke("train", corpus, *TINY, "--learning-rate", "1e30", "--warmup-steps", "0", "--decay", "constant",
                    "--max-bad-steps", "3", "--log-every", "1", "--eval-every", "2", "--max-steps", "50",
                    "--out", run)
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    assert result.stdout == ""
    assert_names(the_error_line(result.stderr), "step 3", "3 consecutive", "learning rate 1e+30")
    assert_every_saved_array_is_finite(run)


@pytest.mark.slow
def test_resuming_from_poisoned_parameters_never_saves_a_non_finite_array(reference, env, tmp_path):
    ckpt = checkpoint.load(reference["run"] / LATEST)
    ckpt.arrays = {**ckpt.arrays, "params/embedding": np.full_like(ckpt.arrays["params/embedding"], np.nan)}
    poisoned = tmp_path / "poisoned.safetensors"
    checkpoint.save(poisoned, ckpt)
    before = poisoned.read_bytes()
    run = tmp_path / "run"
    # A checkpoint is due at every step, the bad-step limit only after three.
    done = run_charrnn("train", "--resume", poisoned, "--out", run, "--max-steps", STEPS + 50, "--max-bad-steps", "3",
                       "--eval-every", "1", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    line = assert_names(the_error_line(done.stderr), "training stopped at step", "learning rate 0.01")
    assert int(re.search(r"at step (\d+)", line).group(1)) > STEPS
    assert "the last good checkpoint is" not in line or (run / LATEST).exists()
    assert poisoned.read_bytes() == before
    assert_every_saved_array_is_finite(run)


# --- bad input ---------------------------------------------------------------------------------------------

# Those not already in test_cli.py (zero hidden size and sequence length, dropout 1, negative learning rate).
OUT_OF_RANGE = [
    ("--batch-size", "0", "batch-size"), ("--batch-size", "-4", "batch-size"),
    ("--num-layers", "0", "num-layers"), ("--num-layers", "-1", "num-layers"),
    ("--embedding-size", "0", "embedding-size"), ("--hidden-size", "-16", "hidden-size"),
    ("--seq-length", "-5", "seq-length"),
    ("--dropout", "1.5", "dropout"), ("--dropout", "-0.1", "dropout"), ("--dropout", "nan", "dropout"),
    ("--learning-rate", "0", "learning-rate"), ("--learning-rate", "nan", "learning-rate"),
    ("--grad-clip", "0", "grad-clip"), ("--warmup-steps", "-1", "warmup-steps"),
    ("--max-steps", "0", "max-steps"), ("--max-epochs", "0", "max-epochs"), ("--max-epochs", "-1", "max-epochs"),
    ("--max-bad-steps", "0", "max-bad-steps"), ("--eval-every", "0", "eval-every"), ("--log-every", "-1", "log-every"),
    ("--val-fraction", "0.5", "val-fraction"), ("--test-fraction", "-0.1", "test-fraction"),
    ("--max-time", "0", "max-time"), ("--max-time", "-5m", "max-time"), ("--max-time", "soon", "max-time"),
    ("--cell", "transformer", "cell"), ("--optimizer", "sgd", "optimizer"), ("--hidden-size", "many", "hidden-size"),
]


@pytest.mark.parametrize("option, value, named", OUT_OF_RANGE)
def test_train_rejects_an_option_out_of_range_in_one_line_writing_nothing(tmp_path, option, value, named):
    corpus = write_corpus(tmp_path / "corpus.txt")
    result = invoke("train", corpus, *TINY, option, value, "--out", tmp_path / "run")
    assert_one_line_error(result, named, value, code=(1, 2))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, value", [("--max-steps", "0"), ("--eval-every", "0"), ("--max-bad-steps", "-3"),
                                           ("--log-every", "0"), ("--max-epochs", "-2")])
@pytest.mark.slow
def test_resume_rejects_a_new_limit_out_of_range_and_overwrites_nothing(reference, tmp_path, option, value):
    run = copy_of_reference(reference, tmp_path)
    before = snapshot(run)
    assert_one_line_error(invoke("train", "--resume", run, option, value), option.lstrip("-"), value)
    assert snapshot(run) == before


def test_train_rejects_out_below_a_file(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    (tmp_path / "afile").write_text("not a directory")
    out = tmp_path / "afile" / "run"
    assert_one_line_error(invoke("train", corpus, *TINY, "--out", out), str(out), "cannot write")
    assert (tmp_path / "afile").read_text() == "not a directory"


def test_train_rejects_a_read_only_out_directory(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        try:
            (locked / "probe").write_text("")
        except PermissionError:
            pass
        else:
            pytest.skip("this user writes into a 0o500 directory anyway (root); test_train_rejects_out_below_a_file "
                        "covers an unwritable --out")
        assert_one_line_error(invoke("train", corpus, *TINY, "--out", locked), str(locked), "cannot write")
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.slow
def test_resume_refuses_a_corpus_that_changed_since_the_checkpoint(reference, tmp_path):
    run = copy_of_reference(reference, tmp_path)
    corpus = write_corpus(tmp_path / "corpus.txt", CORPUS_TEXT.replace("dawn", "dusk"))
    before = snapshot(run)
    assert_one_line_error(invoke("train", corpus, "--resume", run, "--max-steps", STEPS + 1), str(corpus),
                          "changed", "--force")
    assert snapshot(run) == before


@pytest.mark.slow
def test_resume_accepts_a_changed_corpus_with_force(reference, env, tmp_path):
    run = copy_of_reference(reference, tmp_path)
    corpus = write_corpus(tmp_path / "corpus.txt", CORPUS_TEXT.replace("dawn", "dusk"))
    done = run_charrnn("train", corpus, "--resume", run, "--force", "--max-steps", STEPS + 1, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert f"resuming at step {STEPS:,}" in done.stderr
    assert saved_step(run / LATEST) == STEPS + 1


@pytest.mark.slow
def test_resume_with_force_still_refuses_a_corpus_with_characters_the_model_lacks(reference, tmp_path):
    run = copy_of_reference(reference, tmp_path)
    corpus = write_corpus(tmp_path / "corpus.txt", CORPUS_TEXT.replace("dawn", "☃"))
    before = snapshot(run)
    assert_one_line_error(invoke("train", corpus, "--resume", run, "--force", "--max-steps", STEPS + 1), str(corpus),
                          "'☃'", "start a new run")
    assert snapshot(run) == before
