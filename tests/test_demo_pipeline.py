"""The README demo's three audio steps, end to end through the command line, at a reduced size."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from condgen.cli import main
from condgen.synth.generate import Note, NoteGenerator

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_soundfont_train_generate(tmp_path):
    data = tmp_path / "soundfont"
    assert main(["data", "soundfont", str(data), "--programs", "24,73", "--pitches", "48:60:12", "--velocities", "127", "--no-progress"]) == 0
    run_dir = tmp_path / "run"
    overrides = [f"data.root={data}", f"run_dir={run_dir}", "train.steps=30", "train.num_workers=2", "train.batch_size=4"]
    assert main(["train", str(REPO_ROOT / "recipes" / "demo_ddsp.toml"), *overrides, "--no-progress"]) == 0
    output = tmp_path / "wav"
    checkpoint = run_dir / "checkpoints" / "latest.safetensors"
    assert main(["generate", str(checkpoint), "--instrument", "guitar_acoustic_000", "--pitch", "48,60", "--velocity", "127", "-o", str(output)]) == 0
    files = sorted(output.iterdir())
    assert [f.name for f in files] == ["guitar_acoustic_000-048-127.wav", "guitar_acoustic_000-060-127.wav"]
    notes = [Note("guitar_acoustic_000", pitch, 127) for pitch in (48, 60)]
    expected = NoteGenerator(checkpoint).generate_batch(notes, seed=0).numpy()
    for path, reference in zip(files, expected):
        audio, rate = soundfile.read(path, dtype="int16")
        assert rate == 16000
        assert audio.shape == (64000,)
        assert np.abs(reference).max() > 1e-3
        quantized = np.round(np.clip(reference, -1, 32767 / 32768) * 32768)
        assert np.abs(audio - quantized).max() <= 1
