"""Data-parallel training with real torchrun processes on the CPU (gloo backend)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from condgen.trainer import EpochSampler
from test_render import TINY_TRAIN

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
STEPS = 4
GLOBAL_BATCH = 8


def probe_command(out: Path, chairs_dir: Path, run_dir: Path) -> list[str]:
    names = sorted(p.name for p in (chairs_dir / "rendered_chairs").iterdir() if p.is_dir())[:3]
    chair_list = "[" + ", ".join(f'"{name}"' for name in names) + "]"
    overrides = [option for option in TINY_TRAIN if not option.startswith(("train.steps", "train.batch_size", "train.checkpoint_every"))]
    return [
        str(HERE / "ddp_probe.py"),
        str(out),
        str(REPO_ROOT / "recipes" / "chairs_64.toml"),
        f"data.root={chairs_dir / 'rendered_chairs'}",
        f"data.chairs={chair_list}",
        f"run_dir={run_dir}",
        *overrides,
        f"train.steps={STEPS}",
        f"train.batch_size={GLOBAL_BATCH}",
        "train.checkpoint_every=2",
        "train.schedule=constant",
        "train.device=cpu",
    ]


@pytest.fixture(scope="module")
def runs(chairs_dir, tmp_path_factory) -> dict[str, Path]:
    """One single-process run and one 2-process torchrun run of the same recipe."""
    root = tmp_path_factory.mktemp("ddp")
    single = subprocess.run([sys.executable, *probe_command(root / "single", chairs_dir, root / "run_single")], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    double = subprocess.run([*torchrun, *probe_command(root / "double", chairs_dir, root / "run_double")], capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-4000:]
    return {"single": root / "single", "double": root / "double", "run_double": root / "run_double"}


def read_indices(folder: Path, rank: int) -> list[int]:
    return json.loads((folder / f"rank{rank}.json").read_text())["indices"]


def test_ranks_read_disjoint_halves(runs):
    single = read_indices(runs["single"], 0)
    rank0, rank1 = read_indices(runs["double"], 0), read_indices(runs["double"], 1)
    half = GLOBAL_BATCH // 2
    assert len(single) == STEPS * GLOBAL_BATCH
    assert len(rank0) == len(rank1) == STEPS * half
    for step in range(STEPS):
        batch = single[step * GLOBAL_BATCH : (step + 1) * GLOBAL_BATCH]
        part0 = rank0[step * half : (step + 1) * half]
        part1 = rank1[step * half : (step + 1) * half]
        assert not set(part0) & set(part1), f"step {step}: both ranks read {set(part0) & set(part1)}"
        assert part0 + part1 == batch, f"step {step}: the ranks together did not read the single-process batch"


def test_ranks_end_with_identical_weights(runs):
    rank0 = load_file(str(runs["double"] / "rank0.safetensors"))
    rank1 = load_file(str(runs["double"] / "rank1.safetensors"))
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name


def test_two_processes_match_one(runs):
    # The two runs differ only in the order of floating-point sums (gradient
    # all-reduce versus one batch mean), so the weights agree to about 1e-6.
    single = load_file(str(runs["single"] / "rank0.safetensors"))
    double = load_file(str(runs["double"] / "rank0.safetensors"))
    for name in single:
        torch.testing.assert_close(double[name], single[name], rtol=1e-4, atol=1e-5, msg=name)
    changed = sum(1 for name in single if "conditioner" in name or "decoder" in name)
    assert changed > 0


def test_only_rank_zero_writes(runs):
    run_dir = runs["run_double"]
    checkpoints = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["best.safetensors", "latest.safetensors", "step_00000002.safetensors", "step_00000004.safetensors"]
    event_files = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(event_files) == 1


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_epoch_sampler_splits_global_batches(world_size):
    global_batch = 8
    reference = list(EpochSampler(50, seed=3, global_batch=global_batch))
    shards = [list(EpochSampler(50, seed=3, global_batch=global_batch, rank=rank, world_size=world_size)) for rank in range(world_size)]
    per_rank = global_batch // world_size
    assert len(reference) == 48
    rebuilt = []
    for batch in range(6):
        for shard in shards:
            rebuilt.extend(shard[batch * per_rank : (batch + 1) * per_rank])
    assert rebuilt == reference
