"""The README demo's three audio steps, end to end through the command line, at a reduced size."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from condgen.cli import main

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
    for path, midi in zip(files, (48, 60)):
        audio, rate = soundfile.read(path)
        assert rate == 16000
        assert audio.shape == (64000,)
        # f0 comes from the pitch label, so the strongest partial of the held
        # part is a harmonic of the MIDI pitch's frequency.
        spectrum = np.abs(np.fft.rfft(audio[:32000] * np.hanning(32000)))
        peak_hz = np.argmax(spectrum) * rate / 32000
        f0_hz = 440.0 * 2 ** ((midi - 69) / 12)
        harmonic = peak_hz / f0_hz
        assert round(harmonic) >= 1
        assert abs(harmonic - round(harmonic)) < 0.02
