"""Checkpoints as data: one safetensors file per checkpoint, with no pickled code.

A checkpoint file contains the model weights under `model/`, and, for resuming,
the optimizer tensors under `optim/` and the torch RNG states under `rng/`.
Everything else (the recipe, the label vocabularies, the step, the optimizer's
hyperparameters, the Python and NumPy RNG states) is plain JSON in the
safetensors header. Loading therefore never unpickles anything, and generation
needs nothing but the file.

Files are written to a temporary name in the same folder, flushed to disk and
renamed, so a crash leaves either the old file or the new one, never a mix.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from condgen.errors import CheckpointError, OutputExistsError

log = logging.getLogger(__name__)

FORMAT_NAME = "condgen-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """The contents of a checkpoint file.

    `meta` is JSON data: `recipe`, `vocabularies`, `step`, `domain`, `head`
    and head-specific extras. `train_state` contains what resuming needs, or is
    empty for an inference-only file.
    """

    meta: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    train_state: dict[str, Any] = field(default_factory=dict)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file with mode 0600; give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def replace_folder(source: Path, target: Path) -> None:
    """Rename the finished folder `source` to `target`, replacing an existing `target` (file or folder).

    A non-empty folder cannot be renamed over, so the old `target` moves aside
    first and is deleted only after the new one is in place. If the rename
    fails, the old one is put back.
    """
    if not target.exists():
        os.replace(source, target)
        return
    old = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.old")
    os.replace(target, old)
    try:
        os.replace(source, target)
    except BaseException:
        os.replace(old, target)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def check_writable(path: Path, force: bool) -> None:
    """Raise `OutputExistsError` when `path` exists and `force` is false."""
    if Path(path).exists() and not force:
        raise OutputExistsError(f"{path} exists already; pass --force to overwrite it")


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write a checkpoint atomically."""
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in checkpoint.model_state.items():
        tensors[f"model/{name}"] = tensor.detach().to("cpu").contiguous()
    train_json: dict[str, Any] = {}
    if checkpoint.train_state:
        train_json = _flatten_train_state(checkpoint.train_state, tensors)
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "meta": checkpoint.meta,
        "train": train_json,
    }
    data = save_safetensors_bytes(tensors, metadata={"condgen": json.dumps(header)})
    write_bytes_atomic(Path(path), data)


def load_checkpoint(path: str | Path, with_train_state: bool = True) -> Checkpoint:
    """Read a checkpoint, raising `CheckpointError` that names the file on any problem."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a checkpoint file such as {path / 'latest.safetensors'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
        header_length = int.from_bytes(data[:8], "little")
        raw_header = json.loads(data[8 : 8 + header_length])
    except (SafetensorError, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint (truncated or corrupt?): {error}") from None
    try:
        header = json.loads(raw_header["__metadata__"]["condgen"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is a safetensors file but not a condgen checkpoint (no condgen metadata)") from None
    if header.get("format") != FORMAT_NAME or header.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format {header.get('format')!r} version {header.get('version')!r}; expected {FORMAT_NAME} version {FORMAT_VERSION}")
    model_state = {name[len("model/"):]: tensor for name, tensor in tensors.items() if name.startswith("model/")}
    train_state = _unflatten_train_state(header.get("train", {}), tensors) if with_train_state else {}
    return Checkpoint(meta=header["meta"], model_state=model_state, train_state=train_state)


def _flatten_train_state(state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Move the tensors of the training state into `tensors`, return the rest as JSON data."""
    optimizer = state["optimizer"]
    optimizer_json: dict[str, Any] = {"param_groups": optimizer["param_groups"], "state": {}}
    for param_id, param_state in optimizer["state"].items():
        entry = {}
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{param_id}/{key}"] = value.detach().to("cpu").contiguous()
                entry[key] = {"tensor": f"optim/{param_id}/{key}"}
            else:
                entry[key] = {"value": value}
        optimizer_json["state"][str(param_id)] = entry
    tensors["rng/torch"] = state["rng"]["torch"]
    for i, cuda_state in enumerate(state["rng"].get("cuda", [])):
        tensors[f"rng/cuda/{i}"] = cuda_state
    return {
        "optimizer": optimizer_json,
        "scheduler": state["scheduler"],
        "rng": {
            "python": state["rng"]["python"],
            "numpy": state["rng"]["numpy"],
            "n_cuda": len(state["rng"].get("cuda", [])),
        },
        "extra": state.get("extra", {}),
    }


def _unflatten_train_state(train_json: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    if not train_json:
        return {}
    optimizer_state = {}
    for param_id, entry in train_json["optimizer"]["state"].items():
        optimizer_state[int(param_id)] = {
            key: tensors[spec["tensor"]] if "tensor" in spec else spec["value"] for key, spec in entry.items()
        }
    # JSON has no tuples; AdamW and Adam keep `betas` as a tuple.
    param_groups = [
        {key: tuple(value) if key == "betas" else value for key, value in group.items()}
        for group in train_json["optimizer"]["param_groups"]
    ]
    rng = dict(train_json["rng"])
    rng["torch"] = tensors["rng/torch"]
    rng["cuda"] = [tensors[f"rng/cuda/{i}"] for i in range(rng.pop("n_cuda", 0))]
    return {
        "optimizer": {"state": optimizer_state, "param_groups": param_groups},
        "scheduler": train_json["scheduler"],
        "rng": rng,
        "extra": train_json.get("extra", {}),
    }
