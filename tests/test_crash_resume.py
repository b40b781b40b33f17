"""Crash safety of `condgen train` in real processes: SIGINT, SIGTERM and kill -9, each followed by --resume.

Each case trains a tiny DDSP model with two DataLoader workers on sine notes
written in the json/wav layout, stops it partway, resumes it, and compares the
final weights bit for bit with an uninterrupted run of the same recipe.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from condgen.checkpoint import load_checkpoint
from condgen.synth.nsynth import write_jsonwav
from test_nsynth_readers import official_note, sine
from test_train_generate import TINY

REPO_ROOT = Path(__file__).resolve().parents[1]
STEPS = 80
CHECKPOINT_EVERY = 5
INSTRUMENTS = ["guitar_acoustic_010", "keyboard_electronic_001", "organ_electronic_007", "flute_synthetic_000"]
PITCHES = [48, 55, 60, 67, 72, 76, 79, 84]


@pytest.fixture(scope="module")
def sine_notes(tmp_path_factory) -> Path:
    """32 notes (4 instruments x 8 pitches) of sines at the MIDI pitch, in the json/wav layout."""
    folder = tmp_path_factory.mktemp("sines") / "nsynth-sines"
    notes = []
    for i, (instrument, pitch) in enumerate((instrument, pitch) for instrument in INSTRUMENTS for pitch in PITCHES):
        frequency_hz = 440.0 * 2 ** ((pitch - 69) / 12)
        notes.append(official_note(f"{instrument}-{pitch:03d}-100", audio=sine(frequency_hz=frequency_hz, amplitude=0.3), note_id=i))
    write_jsonwav(folder, notes)
    return folder


def train_command(data: Path, run_dir: Path, *extra: str) -> list[str]:
    overrides = [option for option in TINY if not option.startswith(("train.num_workers", "train.checkpoint_every", "train.keep_last", "train.batch_size"))]
    return [
        sys.executable,
        "-m",
        "condgen.cli",
        "train",
        str(REPO_ROOT / "recipes" / "nsynth_ddsp.toml"),
        f"data.root={data.parent}",
        f'data.path=["{data.name}"]',
        f"run_dir={run_dir}",
        f"train.steps={STEPS}",
        "train.batch_size=4",
        "train.num_workers=2",
        f"train.checkpoint_every={CHECKPOINT_EVERY}",
        "train.keep_last=2",
        "train.threads=1",
        *overrides,
        "--no-progress",
        *extra,
    ]


def run_train(data: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(data, run_dir, *extra), capture_output=True, text=True, timeout=300)


def start_and_signal(data: Path, run_dir: Path, signal_number: int, after_step: int) -> tuple[int, str]:
    """Start training in its own process group; once `after_step`'s checkpoint exists, send `signal_number` to the group."""
    log_path = run_dir.parent / f"{run_dir.name}.stderr"
    with open(log_path, "w") as stderr:
        process = subprocess.Popen(train_command(data, run_dir), stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        trigger = run_dir / "checkpoints" / f"step_{after_step:08d}.safetensors"
        deadline = time.monotonic() + 240
        while not trigger.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, f"training ended before step {after_step}:\n{log_path.read_text()}"
        # The whole group, as a terminal's Ctrl-C would: DataLoader workers get it too.
        os.killpg(process.pid, signal_number)
        returncode = process.wait(timeout=120)
    return returncode, log_path.read_text()


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "latest.safetensors")
    assert checkpoint.meta["step"] == STEPS
    return checkpoint.model_state


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resuming"


@pytest.fixture(scope="module")
def straight_run(sine_notes, tmp_path_factory) -> dict[str, torch.Tensor]:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    result = run_train(sine_notes, run_dir)
    assert result.returncode == 0, result.stderr
    return final_weights(run_dir)


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signal_saves_and_resumes_exactly(sine_notes, straight_run, tmp_path, signal_number):
    run_dir = tmp_path / "run"
    returncode, stderr = start_and_signal(sine_notes, run_dir, signal_number, after_step=CHECKPOINT_EVERY)
    name = signal.Signals(signal_number).name

    assert returncode == 128 + signal_number, stderr
    assert "Traceback" not in stderr
    assert f"stopped by {name}" in stderr
    assert "--resume" in stderr
    stopped = load_checkpoint(run_dir / "checkpoints" / "latest.safetensors")
    assert CHECKPOINT_EVERY <= stopped.meta["step"] < STEPS
    assert f"to continue from step {stopped.meta['step']} run" in stderr

    # The printed command is pasted back as it is, with its shell quoting.
    printed = stderr.split(" run: ", 1)[1].splitlines()[0]
    words = shlex.split(printed)
    assert words[:2] == ["condgen", "train"]
    assert words[-1] == "--resume"
    result = subprocess.run([sys.executable, "-m", "condgen.cli", *words[1:]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_weights(straight_run, final_weights(run_dir))


def test_resume_takes_following_override(sine_notes, tmp_path):
    run_dir = tmp_path / "run"
    base = train_command(sine_notes, run_dir)[:-1]  # without --no-progress
    first = [*base, f"train.steps={CHECKPOINT_EVERY}", "train.num_workers=0", "--no-progress"]
    assert subprocess.run(first, capture_output=True, text=True, timeout=300).returncode == 0

    # `--resume KEY=VALUE` is an override after --resume, not a checkpoint path.
    again = [*base, "train.num_workers=0", "--no-progress", "--resume", f"train.steps={2 * CHECKPOINT_EVERY}"]
    result = subprocess.run(again, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(run_dir / "checkpoints" / "latest.safetensors").meta["step"] == 2 * CHECKPOINT_EVERY


def test_kill_9_leaves_loadable_checkpoint(sine_notes, straight_run, tmp_path):
    run_dir = tmp_path / "run"
    returncode, stderr = start_and_signal(sine_notes, run_dir, signal.SIGKILL, after_step=2 * CHECKPOINT_EVERY)
    assert returncode == -signal.SIGKILL

    # The kill may land between writing step_N and updating latest, so latest
    # is at least the checkpoint before the trigger.
    latest = load_checkpoint(run_dir / "checkpoints" / "latest.safetensors")
    assert latest.meta["step"] % CHECKPOINT_EVERY == 0
    assert latest.meta["step"] >= CHECKPOINT_EVERY
    for path in (run_dir / "checkpoints").glob("step_*.safetensors"):
        load_checkpoint(path)

    result = run_train(sine_notes, run_dir, "--resume")
    assert result.returncode == 0, result.stderr
    assert_same_weights(straight_run, final_weights(run_dir))
    leftovers = [path.name for path in (run_dir / "checkpoints").iterdir() if not path.name.startswith(".")]
    assert all(name.endswith(".safetensors") for name in leftovers), leftovers


def test_sine_notes_match_their_pitch(sine_notes):
    """The fixture's notes are what the tests assume: each WAV's peak frequency is its MIDI pitch."""
    import soundfile

    path = sine_notes / "audio" / "organ_electronic_007-067-100.wav"
    audio, sample_rate = soundfile.read(path)
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argmax(spectrum) * sample_rate / len(audio)
    assert abs(peak_hz - 440.0 * 2 ** (-2 / 12)) < 0.5


def test_overrides_after_options_accepted(sine_notes, tmp_path):
    run_dir = tmp_path / "run"
    command = [*train_command(sine_notes, run_dir)[:-1], "--no-progress", "train.steps=2", "train.num_workers=0", "train.checkpoint_every=2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(run_dir / "checkpoints" / "latest.safetensors").meta["step"] == 2


def test_unknown_option_still_rejected(sine_notes, tmp_path):
    command = [*train_command(sine_notes, tmp_path / "run"), "--fast"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "unrecognized arguments: --fast" in result.stderr
