"""Checkpoints: one safetensors file, written atomically, loaded without running any code.

A checkpoint holds named arrays — ``params/...``, ``opt_state/...``, ``carry/...`` — and JSON
metadata: the format and its version, the model and training configs, the vocabulary, where the corpus came
from and how it was split, the training position and the loss history, and a SHA-256 checksum over all of it.
Array names are paths into the pytrees (``params/layers/0/W``), so a checkpoint can be read with any
safetensors reader.

Nothing is pickled: safetensors stores raw little-endian arrays behind a JSON header, and the pytrees are
rebuilt from templates derived from the configs, never from anything the file says to construct.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from pathlib import Path
from typing import Any, Union

import jax
import numpy as np

from . import files
from .config import ModelConfig, TrainConfig
from .data import Splits
from .text import CorpusInfo, Vocabulary

FORMAT = "charrnn"
FORMAT_VERSION = 1
BEST, LATEST = "best.safetensors", "latest.safetensors"


class CheckpointError(Exception):
    """A checkpoint is missing, damaged, from another program or another format version."""


@dataclasses.dataclass
class Checkpoint:
    """Everything a run needs to sample, inspect or resume.

    Attributes:
      model: the architecture.
      train: the training configuration.
      vocab: the vocabulary.
      corpus: where the text came from and how it was read.
      splits: train / validation / test boundaries in the corpus.
      arrays: flat name -> array, e.g. "params/layers/0/W"; see `tree` to rebuild a pytree.
      state: training position and layout: step, epoch, steps_per_epoch, batch_size, seq_length,
        total_steps, best_val_nats and val_nats (nats per character), devices and processes.
      history: evaluations so far, a list of {"step", "val_nats", ...}.
    """

    model: ModelConfig
    train: TrainConfig
    vocab: Vocabulary
    corpus: CorpusInfo
    splits: Splits
    arrays: dict[str, np.ndarray]
    state: dict[str, Any]
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def tree(self, prefix: str, template: Any) -> Any:
        """Rebuilds the pytree stored under `prefix` with the structure of `template`.

        `template` may hold arrays or `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape`); every leaf must be
        present with the template's shape.
        """
        leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(template)
        leaves = []
        for path, like in leaves_with_paths:
            name = f"{prefix}/{path_name(path)}" if path else prefix
            if name not in self.arrays:
                raise CheckpointError(f"checkpoint lacks array {name!r}; it was written by a different model")
            value = self.arrays[name]
            if tuple(value.shape) != tuple(like.shape):
                raise CheckpointError(f"checkpoint array {name!r} has shape {value.shape}, expected {like.shape}")
            leaves.append(value)
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def has(self, prefix: str) -> bool:
        return any(name == prefix or name.startswith(prefix + "/") for name in self.arrays)


def path_name(path) -> str:
    """A pytree key path as a slash-separated name: (DictKey('layers'), SequenceKey(0)) -> "layers/0"."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def flatten(prefix: str, tree: Any) -> dict[str, np.ndarray]:
    """Flat name -> NumPy array for every leaf of `tree`, names as in `path_name`."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[f"{prefix}/{path_name(path)}" if path else prefix] = np.asarray(leaf)
    return out


def _contiguous(a) -> np.ndarray:
    # Not np.ascontiguousarray: it turns a 0-d array (Adam's step count) into shape (1,).
    return np.require(np.asarray(a), requirements="C")


def _checksum(arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(arrays):
        a = _contiguous(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def to_bytes(ckpt: Checkpoint) -> bytes:
    """The checkpoint serialised as safetensors bytes."""
    from safetensors.numpy import save

    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model": json.dumps(ckpt.model.to_dict()),
        "train": json.dumps(ckpt.train.to_dict()),
        "vocab": ckpt.vocab.to_json(),
        "corpus": json.dumps(ckpt.corpus.to_dict()),
        "splits": json.dumps(ckpt.splits.to_dict()),
        "state": json.dumps(ckpt.state),
        "history": json.dumps(ckpt.history),
    }
    arrays = {name: _contiguous(a) for name, a in ckpt.arrays.items()}
    metadata["checksum"] = _checksum(arrays, metadata)
    return save(arrays, metadata=metadata)


def save(path: Union[str, Path], ckpt: Checkpoint) -> Path:
    """Writes `ckpt` to `path` atomically (`charrnn.files.write_atomic`)."""
    return files.write_atomic(path, to_bytes(ckpt))


def remove_stale_temporaries(directory: Union[str, Path]) -> list[Path]:
    """Deletes the temporary files (``.latest.safetensors.*.tmp``, ``.best.safetensors.*.tmp``, and those of
    run.json and metrics.jsonl) that an atomic write leaves behind when its process is killed mid-write.
    Returns the paths removed.

    Only for a run directory that no other process is writing to (training calls it before it starts)."""
    removed = []
    for name in (BEST, LATEST, "run.json", "metrics.jsonl"):
        for path in files.stale_temporaries(directory, name):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def resolve(path: Union[str, Path], prefer: str = BEST) -> Path:
    """The checkpoint file a path means. A file is itself; a run directory means its best checkpoint (to sample,
    inspect or evaluate the model), or with ``prefer=LATEST`` its latest one (to resume training, or to read the
    run's whole history); either way the other one when the preferred one is missing (a run killed between
    writing its first best and its first latest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        for name in (prefer, LATEST if prefer == BEST else BEST):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path} holds no checkpoint ({BEST} or {LATEST}); train one with `charrnn train`")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    return path


def _read_metadata(data: bytes, path: Path) -> dict[str, str]:
    not_ours = f"{path} is not a charrnn checkpoint"
    if len(data) < 8:
        raise CheckpointError(f"{not_ours} (it is {len(data)} bytes long)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        if data[8:9] == b"{":
            raise CheckpointError(f"{path} is truncated (a torn or partial copy); use another checkpoint")
        raise CheckpointError(not_ours)
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(not_ours) from None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2] if isinstance(header, dict) else []
    if ends and 8 + header_len + max(ends) > len(data):
        raise CheckpointError(f"{path} is truncated (a torn or partial copy); use another checkpoint")
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{not_ours} (a safetensors file from another program)" if isinstance(header, dict) else not_ours)
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path} is charrnn checkpoint format version {version}; this charrnn reads version {FORMAT_VERSION}"
        )
    return metadata


def load(path: Union[str, Path], prefer: str = BEST) -> Checkpoint:
    """Reads and verifies a checkpoint: a file, or a run directory's best one (or latest one: see `resolve`).

    Raises:
      CheckpointError: missing, truncated, corrupted (checksum mismatch), foreign or of another version.
    """
    path = resolve(path, prefer)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror})") from None
    metadata = _read_metadata(data, path)
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_arrays

    try:
        arrays = load_arrays(data)
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{path} is damaged ({e}); use another checkpoint") from None
    expected = metadata.pop("checksum", None)
    if expected != _checksum(arrays, metadata):
        raise CheckpointError(f"{path} is corrupted (its checksum does not match its contents); use another checkpoint")
    try:
        return Checkpoint(
            model=ModelConfig.from_dict(json.loads(metadata["model"])),
            train=TrainConfig.from_dict(json.loads(metadata["train"])),
            vocab=Vocabulary.from_json(metadata["vocab"]),
            corpus=CorpusInfo.from_dict(json.loads(metadata["corpus"])),
            splits=Splits.from_dict(json.loads(metadata["splits"])),
            arrays=arrays,
            state=json.loads(metadata["state"]),
            history=json.loads(metadata["history"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has unreadable metadata ({e})") from None


def load_params(ckpt: Checkpoint) -> Any:
    """The model parameters of `ckpt` as a pytree of NumPy arrays, checked against its model config."""
    from . import model

    template = jax.eval_shape(lambda: model.init(jax.random.key(0), ckpt.model))
    return ckpt.tree("params", template)
