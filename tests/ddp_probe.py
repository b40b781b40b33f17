"""Train a tiny chair model and record what this process saw; run by test_distributed.py, alone or under torchrun.

Usage: ddp_probe.py OUT RECIPE [KEY=VALUE ...]

Writes OUT/rank<R>.json (the dataset indices that this rank read, in order)
and OUT/rank<R>.safetensors (its final weights).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from condgen.recipe import load_recipe
from condgen.trainer import Trainer


class RecordingDataset(torch.utils.data.Dataset):
    """Pass items through from `inner`, keeping the index of every item read."""

    def __init__(self, inner):
        self.inner = inner
        self.metadata = inner.metadata
        self.indices: list[int] = []

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        self.indices.append(int(index))
        return self.inner[index]


def main() -> None:
    out, recipe_path, *overrides = sys.argv[1:]
    torch.set_num_threads(1)
    trainer = Trainer(load_recipe(recipe_path, overrides), show_progress=False)
    recording = RecordingDataset(trainer.train_set)
    trainer.train_set = recording
    rank = trainer.dist.rank
    trainer.fit()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"indices": recording.indices, "world_size": int(os.environ.get("WORLD_SIZE", "1"))}))
    save_file({name: tensor.contiguous() for name, tensor in trainer.model.state_dict().items()}, str(out_dir / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    main()
