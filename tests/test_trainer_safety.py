"""The trainer under failure: non-finite losses, full disks, checkpoints from elsewhere, bf16 and bad batch splits."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from condgen.checkpoint import load_checkpoint, save_checkpoint
from condgen.cli import main
from condgen.errors import CheckpointError, RecipeError
from condgen.model import load_model
from condgen.recipe import load_recipe
from condgen.trainer import Trainer, TrainingError
from test_crash_resume import sine_notes  # noqa: F401  (module-scoped fixture)
from test_train_generate import TINY

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_trainer(data: Path, run_dir: Path, *extra: str) -> Trainer:
    overrides = [
        f"data.root={data.parent}",
        f'data.path=["{data.name}"]',
        f"run_dir={run_dir}",
        *TINY,
        "train.steps=6",
        "train.schedule=constant",
        *extra,
    ]
    return Trainer(load_recipe(REPO_ROOT / "recipes" / "nsynth_ddsp.toml", overrides), show_progress=False)


def poison_steps(trainer: Trainer, bad_steps: set[int]) -> list[dict[str, torch.Tensor]]:
    """Make the loss NaN at the given 1-based steps; return the weights seen before each step."""
    real_terms = trainer.model.loss_terms
    snapshots: list[dict[str, torch.Tensor]] = []

    def loss_terms(output, target):
        snapshots.append({name: value.detach().clone() for name, value in trainer.model.state_dict().items()})
        terms = real_terms(output, target)
        if trainer.step + 1 in bad_steps:
            terms["spectral"] = terms["spectral"] * float("nan")
        return terms

    trainer.model.loss_terms = loss_terms
    return snapshots


def test_nan_steps_skipped_within_allowance(sine_notes, tmp_path):
    trainer = make_trainer(sine_notes, tmp_path / "run", "train.max_skipped_steps=2")
    snapshots = poison_steps(trainer, {3, 4})
    result = trainer.fit()

    assert result.step == 6
    assert trainer.skipped_steps == 2
    # Steps 3 and 4 left the weights as they were: the weights before step 5
    # equal those before step 3, while step 2 did change them.
    for name in snapshots[2]:
        assert torch.equal(snapshots[2][name], snapshots[4][name]), name
    assert any(not torch.equal(snapshots[1][name], snapshots[2][name]) for name in snapshots[1])
    latest = load_checkpoint(result.latest)
    assert latest.train_state["extra"]["skipped_steps"] == 2


def test_nan_beyond_allowance_keeps_last_checkpoint(sine_notes, tmp_path):
    trainer = make_trainer(sine_notes, tmp_path / "run", "train.max_skipped_steps=1")
    poison_steps(trainer, {3, 4})
    with pytest.raises(TrainingError) as error:
        trainer.fit()

    message = str(error.value)
    assert "step 4" in message
    assert "spectral nan" in message
    assert "max_skipped_steps = 1" in message
    assert "--resume" in message
    latest = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.safetensors")
    assert latest.meta["step"] == 2


class FullDisk:
    """A file object that writes half of what it is given, then fails as a full disk does."""

    def __init__(self, file):
        self.file = file

    def write(self, data: bytes) -> int:
        self.file.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_full_disk_keeps_previous_checkpoint(sine_notes, tmp_path, monkeypatch):
    import condgen.checkpoint as checkpoint_module

    trainer = make_trainer(sine_notes, tmp_path / "run")
    real_fdopen = checkpoint_module.os.fdopen
    writes = {"count": 0}

    def fdopen(*args, **kwargs):
        writes["count"] += 1
        file = real_fdopen(*args, **kwargs)
        # The run writes recipe.json, then step_2, latest and best at step 2;
        # the disk is full after that.
        return file if writes["count"] <= 4 else FullDisk(file)

    monkeypatch.setattr(checkpoint_module.os, "fdopen", fdopen)
    with pytest.raises(CheckpointError) as error:
        trainer.fit()

    message = str(error.value)
    assert "step 4" in message
    assert "No space left on device" in message
    assert "intact" in message
    assert "--resume" in message
    checkpoints = tmp_path / "run" / "checkpoints"
    assert load_checkpoint(checkpoints / "latest.safetensors").meta["step"] == 2
    assert sorted(path.name for path in checkpoints.iterdir()) == ["best.safetensors", "latest.safetensors", "step_00000002.safetensors"]


@pytest.fixture
def tiny_filesystem(tmp_path):
    """Mount a tmpfs of a given size (root only); yield a function that mounts it."""
    mounts: list[Path] = []

    def mount(size_bytes: int) -> Path:
        target = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
        target.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(target)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
        mounts.append(target)
        return target

    yield mount
    for target in mounts:
        subprocess.run(["umount", str(target)], check=False)


def test_real_full_filesystem(sine_notes, tmp_path, tiny_filesystem):
    probe = make_trainer(sine_notes, tmp_path / "probe", "train.steps=2", "train.sample_every=1000")
    probe.fit()
    checkpoint_bytes = (tmp_path / "probe" / "checkpoints" / "latest.safetensors").stat().st_size

    # Room for the three files of the first save (step_2, latest, best) and
    # the TensorBoard events, but not for the fourth file of the second save.
    disk = tiny_filesystem(int(3.5 * checkpoint_bytes) + 64 * 1024)
    trainer = make_trainer(sine_notes, disk / "run", "train.sample_every=1000")
    with pytest.raises(CheckpointError) as error:
        trainer.fit()

    assert "No space left on device" in str(error.value)
    checkpoints = disk / "run" / "checkpoints"
    assert load_checkpoint(checkpoints / "latest.safetensors").meta["step"] == 2
    assert not [path.name for path in checkpoints.iterdir() if path.name.endswith(".tmp")]


def test_cli_reports_full_disk_in_one_line(sine_notes, tmp_path, monkeypatch, capsys):
    import condgen.checkpoint as checkpoint_module

    def fdopen(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_module.os, "fdopen", fdopen)
    args = ["train", str(REPO_ROOT / "recipes" / "nsynth_ddsp.toml"), f"data.root={sine_notes.parent}", f'data.path=["{sine_notes.name}"]', f"run_dir={tmp_path / 'run'}", *TINY, "train.steps=2", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err
    assert "Traceback" not in err


# -- checkpoints that do not fit -----------------------------------------------


@pytest.fixture(scope="module")
def ddsp_checkpoint(sine_notes, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ddsp") / "run"
    make_trainer(sine_notes, run_dir, "train.steps=2").fit()
    return run_dir / "checkpoints" / "latest.safetensors"


def test_checkpoint_from_other_domain_named(ddsp_checkpoint):
    with pytest.raises(CheckpointError) as error:
        load_model(ddsp_checkpoint, expect_domain="chairs")
    message = str(error.value)
    assert str(ddsp_checkpoint) in message
    assert "'nsynth'" in message
    assert "'ddsp'" in message
    assert "'chairs'" in message


def test_render_rejects_audio_checkpoint(ddsp_checkpoint, tmp_path, capsys):
    assert main(["render", str(ddsp_checkpoint), "--chair", "0", "--azimuth", "0", "--elevation", "20", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "nsynth" in err
    assert str(ddsp_checkpoint) in err
    assert not (tmp_path / "x.png").exists()


def test_resume_from_other_head_named(sine_notes, ddsp_checkpoint, tmp_path):
    checkpoint = load_checkpoint(ddsp_checkpoint)
    checkpoint.meta["recipe"]["head"] = "upconv"
    foreign = tmp_path / "foreign.safetensors"
    save_checkpoint(foreign, checkpoint)
    recipe = load_recipe(REPO_ROOT / "recipes" / "nsynth_ddsp.toml", [f"data.root={sine_notes.parent}", f'data.path=["{sine_notes.name}"]', f"run_dir={tmp_path / 'run'}", *TINY])
    with pytest.raises(CheckpointError) as error:
        Trainer(recipe, resume=foreign, show_progress=False)
    message = str(error.value)
    assert str(foreign) in message
    assert "nsynth/upconv" in message
    assert "nsynth/ddsp" in message


def test_truncated_checkpoint_named(ddsp_checkpoint, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(ddsp_checkpoint.read_bytes()[:-1000])
    with pytest.raises(CheckpointError) as error:
        load_model(truncated)
    assert str(truncated) in str(error.value)
    assert "truncated or corrupt" in str(error.value)


def test_shape_mismatch_named(ddsp_checkpoint, tmp_path):
    checkpoint = load_checkpoint(ddsp_checkpoint)
    # The stored recipe now describes a wider decoder than the stored weights.
    checkpoint.meta["recipe"]["model"]["hidden_dim"] = 48
    mismatched = tmp_path / "mismatched.safetensors"
    save_checkpoint(mismatched, checkpoint)
    with pytest.raises(CheckpointError) as error:
        load_model(mismatched)
    message = str(error.value)
    assert str(mismatched) in message
    assert "shape mismatch" in message
    assert "(32" in message
    assert "(48" in message


# -- precision and process counts ----------------------------------------------


def test_bf16_autocast_trains_on_cpu(sine_notes, tmp_path):
    trainer = make_trainer(sine_notes, tmp_path / "run", "train.precision=bf16", "train.steps=2")
    seen = []
    real_forward = trainer.model.forward

    def forward(labels):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real_forward(labels)

    trainer.model.forward = forward
    result = trainer.fit()
    assert result.step == 2
    assert seen[0] is True
    weights = load_checkpoint(result.latest).model_state
    assert all(tensor.dtype == torch.float32 and torch.isfinite(tensor).all() for tensor in weights.values())


def test_bad_precision_rejected():
    with pytest.raises(RecipeError, match="train.precision 'fp8' is invalid"):
        load_recipe(REPO_ROOT / "recipes" / "nsynth_ddsp.toml", ["train.precision=fp8"])


def test_batch_must_split_across_processes(sine_notes, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    import condgen.distributed as distributed_module

    monkeypatch.setattr(distributed_module, "setup", lambda context, device: device)
    with pytest.raises(RecipeError) as error:
        make_trainer(sine_notes, tmp_path / "run", "train.batch_size=4")
    assert "train.batch_size 4" in str(error.value)
    assert "3 processes" in str(error.value)
