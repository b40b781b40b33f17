"""Checkpoint files: round trip, atomic writes, and rejection of foreign or broken files."""

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from condgen.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, write_bytes_atomic
from condgen.errors import CheckpointError


def make_checkpoint() -> Checkpoint:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return Checkpoint(
        meta={"step": 5, "recipe": {"head": "ddsp"}, "vocabularies": {"pitch": [60, 62]}},
        model_state=model.state_dict(),
        train_state={
            "optimizer": optimizer.state_dict(),
            "scheduler": {"last_epoch": 5},
            "rng": {"python": [3, [1, 2], None], "numpy": ["MT19937", [1, 2], 0, 0, 0.0], "torch": torch.get_rng_state(), "cuda": []},
            "extra": {"epoch": 1, "epoch_position": 8},
        },
    )


def test_round_trip_keeps_everything(tmp_path):
    original = make_checkpoint()
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, original)
    loaded = load_checkpoint(path)
    assert loaded.meta == original.meta
    for name, tensor in original.model_state.items():
        assert torch.equal(loaded.model_state[name], tensor)
    exp_avg = original.train_state["optimizer"]["state"][0]["exp_avg"]
    assert torch.equal(loaded.train_state["optimizer"]["state"][0]["exp_avg"], exp_avg)
    assert loaded.train_state["optimizer"]["param_groups"] == original.train_state["optimizer"]["param_groups"]
    assert torch.equal(loaded.train_state["rng"]["torch"], original.train_state["rng"]["torch"])
    assert loaded.train_state["extra"] == {"epoch": 1, "epoch_position": 8}


def test_truncated_file_names_path(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, make_checkpoint())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_foreign_safetensors_rejected(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a condgen checkpoint"):
        load_checkpoint(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_checkpoint_rejected_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"model": _Exploit()}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "c.bin"
    write_bytes_atomic(path, b"old")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.bin"]


def test_missing_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.safetensors")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_header_is_plain_json(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, make_checkpoint())
    data = path.read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert json.loads(header["__metadata__"]["condgen"])["meta"]["step"] == 5
