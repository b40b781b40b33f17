"""`condgen generate` for every audio head: spectrogram checkpoints render through Griffin-Lim, and rendering options are checked."""

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from condgen.cli import main
from condgen.errors import CondgenError, LabelError
from condgen.synth.generate import NoteGenerator
from test_train_generate import REPO_ROOT
from test_train_generate import train as train_ddsp

NOTE = ["--instrument", "brass_acoustic_016", "--pitch", "60", "--velocity", "127"]
# The high constant learning rate lifts the untrained output above the log
# floor within two steps, so that the generated notes are not silent.
TINY_SPECTROGRAM = [
    "train.lr=0.05",
    "train.schedule=constant",
    "model.n_fft=512",
    "model.channels=[8, 8, 4]",
    "model.griffin_lim_iters=4",
    "conditioning.fused_dim=16",
    "train.batch_size=2",
    "train.log_every=1",
    "train.sample_every=2",
    "train.checkpoint_every=2",
    "train.keep_last=1",
    "train.num_workers=0",
    "train.warmup_steps=0",
]


def train_spectrogram(nsynth_dir: Path, run_dir: Path, *extra: str) -> Path:
    args = [
        "train",
        str(REPO_ROOT / "recipes" / "nsynth_spectrogram.toml"),
        f"data.root={nsynth_dir}",
        'data.path=["nsynth-mini.tfrecord"]',
        "data.pitch_min=60",
        "data.pitch_max=60",
        f"run_dir={run_dir}",
        "train.steps=2",
        *TINY_SPECTROGRAM,
        *extra,
        "--no-progress",
    ]
    assert main(args) == 0
    return run_dir / "checkpoints" / "latest.safetensors"


@pytest.fixture(scope="module")
def spectrogram_checkpoint(nsynth_dir, tmp_path_factory) -> Path:
    return train_spectrogram(nsynth_dir, tmp_path_factory.mktemp("spectrogram"))


@pytest.fixture(scope="module")
def if_checkpoint(nsynth_dir, tmp_path_factory) -> Path:
    return train_spectrogram(nsynth_dir, tmp_path_factory.mktemp("spectrogram_if"), "model.instantaneous_frequency=true")


@pytest.fixture(scope="module")
def ddsp_checkpoint(nsynth_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ddsp")
    assert train_ddsp(nsynth_dir, run_dir, 2) == 0
    return run_dir / "checkpoints" / "latest.safetensors"


def test_spectrogram_generate_writes_wav(spectrogram_checkpoint, tmp_path):
    output = tmp_path / "note.wav"
    assert main(["generate", str(spectrogram_checkpoint), *NOTE, "-o", str(output)]) == 0
    info = soundfile.info(output)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 64000, "PCM_16")
    written, _ = soundfile.read(output, dtype="float32")
    expected = NoteGenerator(spectrogram_checkpoint).generate("brass_acoustic_016", 60, 127)
    assert expected.shape == (64000,)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(written, np.clip(expected, -1, 32767 / 32768), atol=1 / 32768 + 1e-6)


def test_spectrogram_options_change_audio(spectrogram_checkpoint):
    default = NoteGenerator(spectrogram_checkpoint).generate("brass_acoustic_016", 60, 127)
    same = NoteGenerator(spectrogram_checkpoint, griffin_lim_iters=4, griffin_lim_seed=0).generate("brass_acoustic_016", 60, 127)
    np.testing.assert_array_equal(same, default)
    other_seed = NoteGenerator(spectrogram_checkpoint, griffin_lim_seed=1).generate("brass_acoustic_016", 60, 127)
    assert other_seed.shape == (64000,)
    assert not np.allclose(other_seed, default)


def test_spectrogram_cli_options_write_notes(spectrogram_checkpoint, tmp_path):
    folder = tmp_path / "notes"
    args = ["generate", str(spectrogram_checkpoint), *NOTE[:4], "--velocity", "75,127", "-o", str(folder)]
    assert main([*args, "--griffin-lim-iters", "2", "--griffin-lim-momentum", "0", "--griffin-lim-seed", "5"]) == 0
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["brass_acoustic_016-060-075.wav", "brass_acoustic_016-060-127.wav"]
    for path in folder.iterdir():
        assert soundfile.info(path).frames == 64000


def test_if_checkpoint_generates(if_checkpoint, tmp_path):
    output = tmp_path / "note.wav"
    assert main(["generate", str(if_checkpoint), *NOTE, "-o", str(output)]) == 0
    assert soundfile.info(output).frames == 64000


def test_training_logs_rendered_audio(spectrogram_checkpoint):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(spectrogram_checkpoint.parents[1] / "tensorboard"), size_guidance={"audio": 0, "scalars": 0})
    accumulator.Reload()
    assert "loss/log_magnitude" in accumulator.Tags()["scalars"]
    assert any(tag.startswith("samples/") for tag in accumulator.Tags()["audio"])


def test_ddsp_rejects_griffin_lim_option(ddsp_checkpoint, tmp_path, capsys):
    output = tmp_path / "note.wav"
    assert main(["generate", str(ddsp_checkpoint), *NOTE, "-o", str(output), "--griffin-lim-iters", "4"]) == 2
    message = capsys.readouterr().err
    assert "--griffin-lim-iters does not apply" in message
    assert "head 'ddsp'" in message
    assert "outputs its audio directly" in message
    assert not output.exists()


def test_ddsp_api_rejects_option(ddsp_checkpoint):
    with pytest.raises(LabelError) as error:
        NoteGenerator(ddsp_checkpoint, griffin_lim_momentum=0.5)
    assert "--griffin-lim-momentum" in str(error.value)
    assert "'ddsp'" in str(error.value)


def test_ddsp_render_rejects_options(ddsp_checkpoint):
    model = NoteGenerator(ddsp_checkpoint).model
    assert model.render_options() == frozenset()
    audio = np.zeros((1, 64000), dtype=np.float32)
    with pytest.raises(CondgenError) as error:
        model.render(torch.from_numpy(audio), n_iter=4)
    assert "n_iter" in str(error.value)
    assert "outputs its audio directly" in str(error.value)


def test_if_head_rejects_griffin_lim_seed(if_checkpoint, tmp_path, capsys):
    output = tmp_path / "note.wav"
    assert main(["generate", str(if_checkpoint), *NOTE, "-o", str(output), "--griffin-lim-seed", "3"]) == 2
    message = capsys.readouterr().err
    assert "--griffin-lim-seed does not apply" in message
    assert "head 'spectrogram'" in message
    assert "without Griffin-Lim" in message
    assert not output.exists()


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--griffin-lim-iters", "0", "--griffin-lim-iters 0 must be at least 1"),
        ("--griffin-lim-momentum", "1.0", "--griffin-lim-momentum 1.0 is outside [0, 1)"),
        ("--griffin-lim-momentum", "-0.1", "--griffin-lim-momentum -0.1 is outside [0, 1)"),
        ("--griffin-lim-momentum", "nan", "--griffin-lim-momentum nan is outside [0, 1)"),
        ("--griffin-lim-seed", "-1", "--griffin-lim-seed -1 is outside [0, 2**63)"),
    ],
)
def test_out_of_range_options_rejected(spectrogram_checkpoint, tmp_path, capsys, flag, value, message):
    output = tmp_path / "note.wav"
    assert main(["generate", str(spectrogram_checkpoint), *NOTE, "-o", str(output), flag, value]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_failed_write_leaves_no_partial_set(ddsp_checkpoint, tmp_path, monkeypatch, capsys):
    import errno
    import os

    import condgen.synth.generate as generate_module

    out = tmp_path / "notes"
    out.mkdir()
    kept = out / "brass_acoustic_016-060-127.wav"
    kept.write_bytes(b"an earlier file")
    real_write = generate_module.write_bytes_atomic
    calls = {"count": 0}

    def write_bytes_atomic(path, data):
        calls["count"] += 1
        if calls["count"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(generate_module, "write_bytes_atomic", write_bytes_atomic)
    args = ["generate", str(ddsp_checkpoint), "--instrument", "brass_acoustic_016", "--pitch", "60", "--velocity", "50,75,127", "-o", str(out), "--force"]
    assert main(args) == 2

    assert "No space left on device" in capsys.readouterr().err
    assert calls["count"] == 3
    assert sorted(path.name for path in out.iterdir()) == [kept.name]
    assert kept.read_bytes() == b"an earlier file"
