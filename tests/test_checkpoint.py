"""Checkpoints: round trip, atomic writes, and every kind of damaged or foreign file refused clearly."""

import json
import os

import jax
import numpy as np
import pytest

from charrnn import checkpoint, data, model
from charrnn.checkpoint import Checkpoint, CheckpointError
from charrnn.config import ModelConfig, TrainConfig


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config = ModelConfig(vocab_size=5, cell="gru", hidden_size=4, num_layers=2, embedding_size=3)
    params = model.init(jax.random.key(0), config)
    vocab = data.Vocabulary.from_text("abcé\n")
    ckpt = Checkpoint(
        model=config, train=TrainConfig(batch_size=2, seq_length=8), vocab=vocab,
        corpus=data.CorpusInfo("corpus.txt", "0" * 64, 100), splits=data.split(100, 0.05, 0.05),
        arrays=checkpoint.flatten("params", params), state={"step": 7, "best_val_nats": 1.25},
        history=[{"step": 7, "val_nats": 1.25}],
    )
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    checkpoint.save(path, ckpt)
    return ckpt, params, path


def test_round_trip_restores_everything(saved):
    ckpt, params, path = saved
    back = checkpoint.load(path)
    assert back.model == ckpt.model and back.train == ckpt.train and back.vocab == ckpt.vocab
    assert back.corpus == ckpt.corpus and back.splits == ckpt.splits
    assert back.state == ckpt.state and back.history == ckpt.history
    restored = checkpoint.load_params(back)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_arrays_are_named_by_their_place_in_the_model(saved):
    _, _, path = saved
    from safetensors.numpy import load_file

    names = set(load_file(path))
    assert {"params/embedding", "params/layers/0/W", "params/layers/1/U", "params/head/b"} <= names


def test_atomic_write_leaves_no_temporary_files_and_replaces_in_one_step(tmp_path, saved):
    ckpt, _, _ = saved
    target = tmp_path / "latest.safetensors"
    target.write_bytes(b"old contents")
    checkpoint.save(target, ckpt)
    assert os.listdir(tmp_path) == ["latest.safetensors"]
    assert checkpoint.load(target).state["step"] == 7


def test_failed_write_keeps_the_old_checkpoint(tmp_path, saved, monkeypatch):
    ckpt, _, path = saved
    target = tmp_path / "latest.safetensors"
    target.write_bytes(path.read_bytes())

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        checkpoint.save(target, ckpt)
    monkeypatch.undo()
    assert target.read_bytes() == path.read_bytes()
    assert os.listdir(tmp_path) == ["latest.safetensors"]


def test_a_run_directory_resolves_to_its_best_checkpoint(tmp_path, saved):
    _, _, path = saved
    (tmp_path / "latest.safetensors").write_bytes(path.read_bytes())
    assert checkpoint.resolve(tmp_path).name == "latest.safetensors"
    (tmp_path / "best.safetensors").write_bytes(path.read_bytes())
    assert checkpoint.resolve(tmp_path).name == "best.safetensors"


def damaged(path, tmp_path, how):
    blob = bytearray(path.read_bytes())
    if how == "truncated":
        blob = blob[: len(blob) // 2]
    elif how == "truncated header":
        blob = blob[:40]
    elif how == "bit flip in data":
        blob[-20] ^= 0x04
    elif how == "bit flip in metadata":
        i = blob.index(b'step\\": 7')  # inside the JSON header: the state is a JSON string within JSON
        blob[i + 9] = ord("8")
    out = tmp_path / "damaged.safetensors"
    out.write_bytes(bytes(blob))
    return out


@pytest.mark.parametrize(
    "how, message",
    [("truncated", "truncated|damaged"), ("truncated header", "truncated"), ("bit flip in data", "corrupted"),
     ("bit flip in metadata", "corrupted")],
)
def test_damage_is_detected(tmp_path, saved, how, message):
    _, _, path = saved
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(damaged(path, tmp_path, how))


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world, this is text", os.urandom(4096), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}"],
)
def test_foreign_files_are_not_checkpoints(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a charrnn checkpoint|truncated"):
        checkpoint.load(path)


def test_safetensors_from_another_program_is_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "other.safetensors"
    save_file({"weight": np.zeros((2, 2), np.float32)}, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a charrnn checkpoint"):
        checkpoint.load(path)


def test_other_format_version_says_which(tmp_path, saved):
    _, _, path = saved
    blob = path.read_bytes()
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    header["__metadata__"]["format_version"] = "99"
    new_header = json.dumps(header).encode()
    out = tmp_path / "future.safetensors"
    out.write_bytes(len(new_header).to_bytes(8, "little") + new_header + blob[8 + header_len :])
    with pytest.raises(CheckpointError, match="format version 99; this charrnn reads version 1"):
        checkpoint.load(out)


def test_missing_checkpoint_and_empty_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        checkpoint.load(tmp_path)


def test_params_of_another_architecture_are_refused(saved):
    ckpt, _, _ = saved
    wrong = Checkpoint(**{**ckpt.__dict__, "model": ModelConfig(vocab_size=5, cell="gru", hidden_size=6, num_layers=2, embedding_size=3)})
    with pytest.raises(CheckpointError, match="shape"):
        checkpoint.load_params(wrong)
