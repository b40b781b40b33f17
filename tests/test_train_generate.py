"""Train a tiny DDSP model on real NSynth notes through the CLI, then generate from its checkpoint."""

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from condgen.checkpoint import load_checkpoint
from condgen.cli import main
from condgen.synth.generate import Note, NoteGenerator, wav_bytes, write_wav
from condgen.errors import OutputExistsError

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.n_frames=50",
    "model.hidden_dim=32",
    "model.time_dim=8",
    "model.n_harmonics=8",
    "model.reverb=false",
    "model.fft_sizes=[512, 128]",
    "conditioning.fused_dim=16",
    "train.batch_size=2",
    "train.log_every=1",
    "train.sample_every=2",
    "train.checkpoint_every=2",
    "train.keep_last=1",
    "train.num_workers=0",
    "train.warmup_steps=0",
]


def train(nsynth_dir: Path, run_dir: Path, steps: int, *extra: str) -> int:
    args = [
        "train",
        str(REPO_ROOT / "recipes" / "nsynth_ddsp.toml"),
        f"data.root={nsynth_dir}",
        'data.path=["nsynth-mini.tfrecord"]',
        "data.pitch_min=60",
        "data.pitch_max=60",
        f"run_dir={run_dir}",
        f"train.steps={steps}",
        *TINY,
        *(option for option in extra if "=" in option),
        "--no-progress",
        *(option for option in extra if "=" not in option),
    ]
    return main(args)


@pytest.fixture(scope="module")
def trained(nsynth_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    assert train(nsynth_dir, run_dir, 4) == 0
    return run_dir


def test_run_folder_contents(trained):
    checkpoints = trained / "checkpoints"
    assert (checkpoints / "latest.safetensors").is_file()
    assert (checkpoints / "best.safetensors").is_file()
    # keep_last=1: only the newest step checkpoint remains.
    assert [p.name for p in checkpoints.glob("step_*")] == ["step_00000004.safetensors"]
    assert (trained / "recipe.json").is_file()
    assert "loss" in (trained / "train.log").read_text()
    events = list((trained / "tensorboard").glob("events.out.tfevents.*"))
    assert events


def test_tensorboard_has_audio_and_scalars(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(trained / "tensorboard"), size_guidance={"audio": 0, "scalars": 0})
    accumulator.Reload()
    assert "loss/spectral" in accumulator.Tags()["scalars"]
    assert any(tag.startswith("samples/") for tag in accumulator.Tags()["audio"])


def test_checkpoint_stores_vocabularies(trained):
    checkpoint = load_checkpoint(trained / "checkpoints" / "latest.safetensors")
    assert checkpoint.meta["step"] == 4
    assert checkpoint.meta["vocabularies"]["pitch"] == [60]
    assert "brass_acoustic_016" in checkpoint.meta["vocabularies"]["instrument_str"]


def test_existing_run_needs_resume_or_force(trained, nsynth_dir):
    assert train(nsynth_dir, trained, 4) == 2


def test_resume_continues_bit_exact(nsynth_dir, tmp_path):
    # A constant learning rate, so that the 2-step run follows the same
    # schedule as the first half of the 4-step run.
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(nsynth_dir, straight, 4, "train.schedule=constant") == 0
    assert train(nsynth_dir, resumed, 2, "train.schedule=constant") == 0
    assert train(nsynth_dir, resumed, 4, "train.schedule=constant", "--resume") == 0
    a = load_checkpoint(straight / "checkpoints" / "latest.safetensors").model_state
    b = load_checkpoint(resumed / "checkpoints" / "latest.safetensors").model_state
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_generate_cli_writes_pcm16_wav(trained, tmp_path):
    output = tmp_path / "note.wav"
    checkpoint = trained / "checkpoints" / "latest.safetensors"
    code = main(["generate", str(checkpoint), "--instrument", "brass_acoustic_016", "--pitch", "60", "--velocity", "127", "-o", str(output)])
    assert code == 0
    info = soundfile.info(output)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 64000, "PCM_16")
    written, _ = soundfile.read(output, dtype="float32")
    expected = NoteGenerator(checkpoint).generate("brass_acoustic_016", 60, 127)
    np.testing.assert_allclose(written, np.clip(expected, -1, 32767 / 32768), atol=1 / 32768 + 1e-6)


def test_generate_refuses_overwrite(trained, tmp_path):
    output = tmp_path / "note.wav"
    output.write_bytes(b"keep me")
    checkpoint = trained / "checkpoints" / "latest.safetensors"
    args = ["generate", str(checkpoint), "--instrument", "brass_acoustic_016", "--pitch", "60", "--velocity", "127", "-o", str(output)]
    assert main(args) == 2
    assert output.read_bytes() == b"keep me"
    assert main([*args, "--force"]) == 0
    assert soundfile.info(output).frames == 64000


def test_generate_lists_write_one_file_per_note(trained, tmp_path):
    checkpoint = trained / "checkpoints" / "latest.safetensors"
    vocabulary = load_checkpoint(checkpoint).meta["vocabularies"]["velocity"]
    velocities = ",".join(str(v) for v in vocabulary[:2])
    assert main(["generate", str(checkpoint), "--instrument", "brass_acoustic_016", "--pitch", "60:60:1", "--velocity", velocities, "-o", str(tmp_path / "out")]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"brass_acoustic_016-060-{v:03d}.wav" for v in vocabulary[:2])


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--instrument", "brass_acoustic_01", "closest valid names"),
        ("--pitch", "200", "pitch 200 is outside the valid range 0-127"),
        ("--pitch", "61", "closest valid values: 60"),
        ("--velocity", "-1", "velocity"),
    ],
)
def test_generate_bad_labels_leave_no_output(trained, tmp_path, capsys, flag, value, message):
    values = {"--instrument": "brass_acoustic_016", "--pitch": "60", "--velocity": "127", flag: value}
    args = ["generate", str(trained / "checkpoints" / "latest.safetensors")]
    for name, text in values.items():
        args += [name, text]
    assert main([*args, "-o", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_blend_endpoints_equal_instruments(trained):
    generator = NoteGenerator(trained / "checkpoints" / "latest.safetensors")
    a, b = generator.instruments[:2]
    alone_a = generator.generate(a, 60, 127)
    alone_b = generator.generate(b, 60, 127)
    np.testing.assert_allclose(generator.generate(a, 60, 127, blend_with=b, mix=0.0), alone_a, atol=1e-6)
    np.testing.assert_allclose(generator.generate(a, 60, 127, blend_with=b, mix=1.0), alone_b, atol=1e-6)
    halfway = generator.generate(a, 60, 127, blend_with=b, mix=0.5)
    assert not np.allclose(halfway, alone_a)
    assert not np.allclose(halfway, alone_b)


def test_wav_clips_instead_of_wrapping(tmp_path):
    audio = np.array([0.0, 0.5, 1.5, -1.5, 1.0, -1.0], dtype=np.float32)
    write_wav(tmp_path / "clip.wav", audio, 16000)
    pcm, _ = soundfile.read(tmp_path / "clip.wav", dtype="int16")
    np.testing.assert_array_equal(pcm, [0, 16384, 32767, -32768, 32767, -32768])
    with pytest.raises(OutputExistsError):
        write_wav(tmp_path / "clip.wav", audio, 16000)


def test_wav_bytes_nan_becomes_silence():
    import io

    pcm, rate = soundfile.read(io.BytesIO(wav_bytes(np.array([np.nan, 0.25]), 16000)), dtype="int16")
    assert rate == 16000
    np.testing.assert_array_equal(pcm, [0, 8192])


def test_note_file_name():
    assert Note("guitar_acoustic_001", 48, 75).file_name() == "guitar_acoustic_001-048-075.wav"


def test_force_replaces_previous_run(nsynth_dir, tmp_path):
    run_dir = tmp_path / "run"
    assert train(nsynth_dir, run_dir, 4, "train.keep_last=5") == 0
    assert train(nsynth_dir, run_dir, 2, "train.keep_last=5", "--force") == 0
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    assert names == ["step_00000002.safetensors"]
    assert load_checkpoint(run_dir / "checkpoints" / "latest.safetensors").meta["step"] == 2


def test_resume_and_force_rejected(trained, nsynth_dir, capsys):
    assert train(nsynth_dir, trained, 4, "--resume", "--force") == 2
    assert "contradict" in capsys.readouterr().err


def test_resume_uses_stored_recipe(nsynth_dir, tmp_path):
    run_dir = tmp_path / "run"
    assert train(nsynth_dir, run_dir, 2) == 0
    # Resume without the first command's model overrides: the stored recipe
    # still builds the tiny model, so the weights load and training goes on.
    args = ["train", str(REPO_ROOT / "recipes" / "nsynth_ddsp.toml"), f"run_dir={run_dir}", "train.steps=3", "--no-progress", "--resume"]
    assert main(args) == 0
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "latest.safetensors")
    assert checkpoint.meta["step"] == 3
    assert checkpoint.meta["recipe"]["model"]["n_harmonics"] == 8


@pytest.mark.parametrize(
    "extra,message",
    [
        (["-o", "OUT/note.mp3"], "suffix '.mp3'"),
        (["-o", "OUT/note.wav", "--device", "tpu"], "--device 'tpu' is invalid"),
        (["-o", "OUT/note.wav", "--mix", "0.3"], "--mix 0.3 needs --blend-with"),
        (["-o", "OUT/file.txt/note.wav"], "file operation failed"),
    ],
)
def test_generate_bad_options(trained, tmp_path, capsys, extra, message):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    extra = [value.replace("OUT", str(tmp_path)) for value in extra]
    args = ["generate", str(trained / "checkpoints" / "latest.safetensors"), "--instrument", "brass_acoustic_016", "--pitch", "60", "--velocity", "127", *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "note.mp3").exists()


def test_written_files_follow_umask(tmp_path):
    import os

    previous = os.umask(0o022)
    try:
        write_wav(tmp_path / "a.wav", np.zeros(16), 16000)
    finally:
        os.umask(previous)
    assert (tmp_path / "a.wav").stat().st_mode & 0o777 == 0o644


def test_unknown_label_name_rejected_early(nsynth_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train(nsynth_dir, run_dir, 2, "conditioning.labels=[{name = \"pitchh\"}]", "model.pitch_label=pitchh") == 2
    message = capsys.readouterr().err
    assert "pitchh are not in the nsynth data" in message
    assert "instrument_str" in message
    assert not (run_dir / "tensorboard").exists()


def test_non_finite_loss_stops_with_terms(nsynth_dir, tmp_path):
    from condgen.recipe import load_recipe
    from condgen.trainer import Trainer, TrainingError

    overrides = [f"data.root={nsynth_dir}", 'data.path=["nsynth-mini.tfrecord"]', "data.pitch_min=60", "data.pitch_max=60", f"run_dir={tmp_path}", "train.steps=3", *TINY]
    trainer = Trainer(load_recipe(REPO_ROOT / "recipes" / "nsynth_ddsp.toml", overrides), show_progress=False)
    real_terms = trainer.model.loss_terms
    trainer.model.loss_terms = lambda output, target: {**real_terms(output, target), "spectral": real_terms(output, target)["spectral"] * float("nan")}
    with pytest.raises(TrainingError) as error:
        trainer.fit()
    assert "step 1" in str(error.value)
    assert "spectral nan" in str(error.value)
    assert not (tmp_path / "checkpoints" / "latest.safetensors").exists()
