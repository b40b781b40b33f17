"""Tests of the SoundFont renderer: single notes, labels, the dataset writer and its CLI.

Most notes come from TimGM6mb, the SoundFont the toolkit renders by default.
Exact checks use a one-preset SoundFont written by `write_sine_sf2`, whose
only sample is a looped sine, so the expected pitch and level are known.
"""

from __future__ import annotations

import argparse
import json
import logging
import struct
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
import torch

from condgen.errors import DataError, OutputExistsError, RecipeError
from condgen.synth import soundfont
from condgen.synth.nsynth import FAMILIES, SOURCES, NSynthNotes
from condgen.synth.soundfont import (
    DEFAULT_GAIN_DB,
    GM_PROGRAMS,
    PRESETS,
    add_arguments,
    assign_instruments,
    load_soundfont,
    parse_int_list,
    quantize_int16,
    render_dataset,
    render_note,
    run,
)
from condgen.tfrecord import decode_example, iter_records

SAMPLE_RATE = 16000
N_SAMPLES = 64000
NOTE_OFF_SAMPLE = 48000

FLUTE = 73
VIOLIN = 40
WARM_PAD = 89
PIANO = 0


# ---------------------------------------------------------------------------
# A minimal SF2 file: one preset, one instrument, one looped sine sample


def _riff_chunk(tag: bytes, payload: bytes) -> bytes:
    if len(payload) % 2:
        payload += b"\0"
    return tag + struct.pack("<I", len(payload)) + payload


def _riff_list(kind: bytes, chunks: list[bytes]) -> bytes:
    return _riff_chunk(b"LIST", kind + b"".join(chunks))


def _sf2_name(text: str) -> bytes:
    return text.encode("ascii").ljust(20, b"\0")


def write_sine_sf2(path: Path, program: int = 0, amplitude: float = 0.5) -> Path:
    """Write an SF2 whose bank-0 `program` plays a sine of peak `amplitude` at the key's pitch.

    The sample runs at 44 kHz with root key 69, so one cycle is exactly 100
    samples, and it loops over whole cycles. Every envelope stage keeps the
    SF2 default (about 1 ms), so the note stops within milliseconds of note-off.
    """
    sample_rate = 44000
    period = 100
    n_frames = 20 * period
    sine = np.round(amplitude * 32767 * np.sin(2 * np.pi * np.arange(n_frames) / period)).astype("<i2")
    # The SF2 format requires 46 zero samples after each sample.
    sample_data = sine.tobytes() + bytes(2 * 46)

    preset_headers = struct.pack("<20sHHHIII", _sf2_name("Sine"), program, 0, 0, 0, 0, 0)
    preset_headers += struct.pack("<20sHHHIII", _sf2_name("EOP"), 0, 0, 1, 0, 0, 0)
    preset_bags = struct.pack("<HH", 0, 0) + struct.pack("<HH", 1, 0)
    preset_generators = struct.pack("<Hh", 41, 0) + struct.pack("<Hh", 0, 0)  # 41: instrument
    instruments = struct.pack("<20sH", _sf2_name("Sine"), 0) + struct.pack("<20sH", _sf2_name("EOI"), 1)
    instrument_bags = struct.pack("<HH", 0, 0) + struct.pack("<HH", 2, 0)
    # 54: sampleModes = 1 (loop continuously); 53: sampleID, which must come last.
    instrument_generators = struct.pack("<Hh", 54, 1) + struct.pack("<Hh", 53, 0) + struct.pack("<Hh", 0, 0)
    sample_headers = struct.pack("<20sIIIIIBbHH", _sf2_name("sine"), 0, n_frames, 2 * period, 18 * period, sample_rate, 69, 0, 0, 1)
    sample_headers += struct.pack("<20sIIIIIBbHH", _sf2_name("EOS"), 0, 0, 0, 0, 0, 0, 0, 0, 0)
    no_modulators = bytes(10)

    info = _riff_list(b"INFO", [_riff_chunk(b"ifil", struct.pack("<HH", 2, 1)), _riff_chunk(b"isng", b"EMU8000\0"), _riff_chunk(b"INAM", b"sine\0")])
    sample_list = _riff_list(b"sdta", [_riff_chunk(b"smpl", sample_data)])
    preset_list = _riff_list(
        b"pdta",
        [
            _riff_chunk(b"phdr", preset_headers),
            _riff_chunk(b"pbag", preset_bags),
            _riff_chunk(b"pmod", no_modulators),
            _riff_chunk(b"pgen", preset_generators),
            _riff_chunk(b"inst", instruments),
            _riff_chunk(b"ibag", instrument_bags),
            _riff_chunk(b"imod", no_modulators),
            _riff_chunk(b"igen", instrument_generators),
            _riff_chunk(b"shdr", sample_headers),
        ],
    )
    body = b"sfbk" + info + sample_list + preset_list
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def _peak_frequency_hz(audio: np.ndarray) -> float:
    """Frequency of the largest FFT bin of a Hann-windowed, 8x zero-padded signal."""
    n_fft = 8 * len(audio)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), n=n_fft))
    return float(np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def _cents(f_hz: float, reference_hz: float) -> float:
    return float(1200 * np.log2(f_hz / reference_hz))


@pytest.fixture(scope="module")
def timgm() -> soundfont.LoadedSoundFont:
    return load_soundfont()


@pytest.fixture(scope="module")
def sine_font(tmp_path_factory) -> soundfont.LoadedSoundFont:
    return load_soundfont(write_sine_sf2(tmp_path_factory.mktemp("sf2") / "sine.sf2"))


# ---------------------------------------------------------------------------
# One note


def test_render_note_nsynth_layout(timgm):
    audio = render_note(timgm, FLUTE, 60, 100)

    assert audio.dtype == np.float32
    assert audio.shape == (N_SAMPLES,)
    assert np.abs(audio).max() <= 1.0
    assert np.abs(audio).max() > 0.05


def test_render_note_sine_pitch_exact(sine_font):
    for pitch in (45, 69, 93):
        audio = render_note(sine_font, 0, pitch, 127)
        expected_hz = librosa.midi_to_hz(pitch)
        measured_hz = _peak_frequency_hz(audio[8000:40000])
        assert abs(_cents(measured_hz, expected_hz)) < 5, (pitch, measured_hz, expected_hz)


def test_render_note_sine_level_and_timing(sine_font):
    amplitude = 0.5
    audio = render_note(sine_font, 0, 69, 127)
    expected_held_rms = amplitude * 10 ** (DEFAULT_GAIN_DB / 20) / np.sqrt(2)

    # A fixed gain and no normalisation: the sample's level, scaled by DEFAULT_GAIN_DB.
    assert _rms(audio[16000:NOTE_OFF_SAMPLE]) == pytest.approx(expected_held_rms, rel=0.02)
    # Note-on at 0 s: sound within the first 25 ms.
    assert _rms(audio[16:400]) > 0.5 * expected_held_rms
    # Note-off at 3.0 s: still held just before it, silent 10 ms after it.
    assert _rms(audio[NOTE_OFF_SAMPLE - 200 : NOTE_OFF_SAMPLE - 10]) > 0.9 * expected_held_rms
    assert np.abs(audio[NOTE_OFF_SAMPLE + 160 :]).max() < 1e-3


def test_render_note_flute_pitch_pyin(timgm):
    for pitch in (60, 72):
        audio = render_note(timgm, FLUTE, pitch, 100)
        f0_hz, voiced, _ = librosa.pyin(audio[4000:36000], fmin=100, fmax=2000, sr=SAMPLE_RATE, frame_length=2048)
        assert voiced.mean() > 0.8
        median_f0_hz = float(np.median(f0_hz[voiced]))
        assert abs(_cents(median_f0_hz, librosa.midi_to_hz(pitch))) < 50, (pitch, median_f0_hz)


def test_render_note_release_quieter(timgm):
    audio = render_note(timgm, VIOLIN, 60, 100)
    held_rms = _rms(audio[16000:NOTE_OFF_SAMPLE])
    release_tail_rms = _rms(audio[-int(0.8 * SAMPLE_RATE) :])

    assert held_rms > 0.01
    assert release_tail_rms < 0.1 * held_rms


def test_render_note_velocity_loudness(timgm):
    loud = render_note(timgm, FLUTE, 60, 127)
    soft = render_note(timgm, FLUTE, 60, 25)

    # At least 6 dB apart; per-note normalisation would make them equal.
    assert _rms(loud) > 2 * _rms(soft)


def test_render_note_no_leak_between_notes(timgm):
    render_note(timgm, WARM_PAD, 48, 127)
    after_pad = render_note(timgm, VIOLIN, 60, 100)
    fresh = render_note(load_soundfont(timgm.path), VIOLIN, 60, 100)

    np.testing.assert_array_equal(after_pad, fresh)


def test_render_note_rejects_bad_values(timgm):
    cases = [
        ({"program": 128, "pitch": 60, "velocity": 100}, "128", "0..127"),
        ({"program": 0, "pitch": -1, "velocity": 100}, "-1", "0..127"),
        ({"program": 0, "pitch": 60, "velocity": 0}, "0", "1..127"),
        ({"program": 0, "pitch": 60, "velocity": 128}, "128", "1..127"),
    ]
    for kwargs, value, valid_range in cases:
        with pytest.raises(RecipeError) as error:
            render_note(timgm, **kwargs)
        assert value in str(error.value)
        assert valid_range in str(error.value)


def test_quantize_int16_survives_pcm16(tmp_path):
    rng = np.random.default_rng(0)
    audio = rng.uniform(-1.2, 1.2, N_SAMPLES).astype(np.float32)
    quantized = quantize_int16(np.clip(audio, -1, 1))

    assert quantized.dtype == np.float32
    below_full_scale = np.abs(audio) < 1 - 1 / 65536
    rounding_error = np.abs(quantized - audio)[below_full_scale]
    assert rounding_error.max() <= 1 / 65536 + 1e-9
    # int16 cannot hold +32768, so +1.0 becomes 32767 / 32768.
    assert quantized.max() == np.float32(32767 / 32768)
    assert quantized.min() == -1.0
    wav_path = tmp_path / "note.wav"
    soundfile.write(wav_path, np.round(quantized * 32768).clip(-32768, 32767).astype(np.int16), SAMPLE_RATE, subtype="PCM_16")
    pcm, _ = soundfile.read(wav_path, dtype="int16")
    np.testing.assert_array_equal(pcm.astype(np.float32) / 32768, quantized)


# ---------------------------------------------------------------------------
# SoundFont files


def test_load_soundfont_missing_file(tmp_path):
    missing = tmp_path / "missing.sf2"
    with pytest.raises(DataError, match="missing.sf2"):
        load_soundfont(missing)


def test_load_soundfont_unreadable_file(tmp_path):
    broken = tmp_path / "broken.sf2"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00sfbknot a soundfont")
    with pytest.raises(DataError, match="broken.sf2"):
        load_soundfont(broken)


def test_render_note_program_missing_from_soundfont(sine_font):
    with pytest.raises(DataError) as error:
        render_note(sine_font, 24, 60, 100)
    assert "24" in str(error.value)
    assert str(sine_font.path) in str(error.value)


# ---------------------------------------------------------------------------
# Labels and grid values


def test_gm_table_covers_all_programs():
    assert len(GM_PROGRAMS) == 128
    for program, entry in enumerate(GM_PROGRAMS):
        if entry.family is None:
            assert entry.source is None, program
            assert entry.rejection, program
        else:
            assert entry.family in FAMILIES, program
            assert entry.source in SOURCES, program
    assert all(GM_PROGRAMS[program].family is None for program in range(120, 128))
    assert {entry.family for entry in GM_PROGRAMS if entry.family} == set(FAMILIES)


def test_assign_instruments_counts_per_family_source():
    instruments = assign_instruments([90, 0, 52, 4, 1, 0])
    by_program = {instrument.program: instrument for instrument in instruments}

    assert [instrument.program for instrument in instruments] == [0, 1, 4, 52, 90]
    assert by_program[0].instrument_str == "keyboard_acoustic_000"
    assert by_program[1].instrument_str == "keyboard_acoustic_001"
    assert by_program[4].instrument_str == "keyboard_electronic_000"
    assert by_program[52].instrument_str == "vocal_acoustic_000"
    assert by_program[90].instrument_str == "keyboard_synthetic_000"
    assert by_program[4].family_id == 4
    assert by_program[4].source_id == 1
    assert by_program[52].family_id == 10
    assert by_program[90].source_id == 2


def test_assign_instruments_rejects_sound_effects():
    with pytest.raises(RecipeError) as error:
        assign_instruments([24, 121, 127])
    message = str(error.value)
    assert "121 (Breath Noise)" in message
    assert "127 (Gunshot)" in message
    assert "sound effect" in message
    assert "24 (" not in message


def test_demo_preset_has_keyboard_synthetic():
    names = [instrument.instrument_str for instrument in assign_instruments(PRESETS["demo"].programs)]
    assert "keyboard_synthetic_000" in names
    assert len({name.rsplit("_", 1)[0].rsplit("_", 1)[0] for name in names}) == 6


def test_parse_int_list_syntax():
    assert parse_int_list("36:84:4", "--pitches") == list(range(36, 85, 4))
    assert parse_int_list("60:62", "--pitches") == [60, 61, 62]
    assert parse_int_list("36, 48,60", "--pitches") == [36, 48, 60]
    assert parse_int_list("100", "--velocities") == [100]
    assert parse_int_list("24:26,60", "--programs") == [24, 25, 26, 60]


def test_parse_int_list_rejects_bad_syntax():
    for text in ("a", "36:84:4:1", "84:36", "36:84:0", ""):
        with pytest.raises(RecipeError, match="--pitches"):
            parse_int_list(text, "--pitches")


# ---------------------------------------------------------------------------
# Datasets


def _items_by_name(path: Path) -> dict[str, dict]:
    notes = NSynthNotes(path)
    return {item["note_str"]: item for item in (notes[index] for index in range(len(notes)))}


def test_render_dataset_layouts_identical(timgm, tmp_path):
    out_dir = render_dataset(tmp_path / "out", programs=[90, FLUTE], pitches=[60, 72], velocities=[25, 127], show_progress=False)
    jsonwav_dir = out_dir / "nsynth-soundfont"
    tfrecord_path = out_dir / "nsynth-soundfont.tfrecord"

    from_jsonwav = _items_by_name(jsonwav_dir)
    from_tfrecord = _items_by_name(tfrecord_path)
    assert len(list((jsonwav_dir / "audio").glob("*.wav"))) == 8
    assert sorted(from_jsonwav) == sorted(from_tfrecord)
    assert "flute_acoustic_000-072-025" in from_jsonwav
    assert "keyboard_synthetic_000-060-127" in from_jsonwav
    assert sorted(item["note"] for item in from_jsonwav.values()) == list(range(8))

    for name, item in from_jsonwav.items():
        other = from_tfrecord[name]
        assert torch.equal(item["audio"], other["audio"]), name
        for key in ("note", "instrument", "instrument_str", "pitch", "velocity", "instrument_family", "instrument_family_str", "instrument_source", "instrument_source_str", "qualities"):
            assert item[key] == other[key], (name, key)

    flute = from_jsonwav["flute_acoustic_000-072-025"]
    assert flute["instrument"] == FLUTE
    assert flute["pitch"] == 72
    assert flute["velocity"] == 25
    assert flute["instrument_family"] == FAMILIES.index("flute")
    assert flute["instrument_source_str"] == "acoustic"
    assert flute["qualities"] == [0] * 10
    expected_audio = quantize_int16(render_note(timgm, FLUTE, 72, 25))
    np.testing.assert_array_equal(flute["audio"].numpy(), expected_audio)

    examples = json.loads((jsonwav_dir / "examples.json").read_text())
    assert examples["flute_acoustic_000-072-025"]["qualities_str"] == []
    assert examples["flute_acoustic_000-072-025"]["sample_rate"] == SAMPLE_RATE
    _, record = next(iter(iter_records(tfrecord_path)))
    features = decode_example(record)
    assert list(features["sample_rate"]) == [SAMPLE_RATE]
    assert list(features["qualities_str"]) == []


def test_render_dataset_refuses_existing_output(tmp_path):
    grid = {"programs": [FLUTE], "pitches": [60], "velocities": [100], "show_progress": False}
    render_dataset(tmp_path, **grid)

    with pytest.raises(OutputExistsError) as error:
        render_dataset(tmp_path, **grid)
    assert "nsynth-soundfont" in str(error.value)
    assert "--force" in str(error.value)

    render_dataset(tmp_path, velocities=[50], programs=[FLUTE], pitches=[60], force=True, show_progress=False)
    assert list(json.loads((tmp_path / "nsynth-soundfont" / "examples.json").read_text())) == ["flute_acoustic_000-060-050"]


def test_render_dataset_skips_silent_note(tmp_path, caplog):
    # TimGM6mb's piano has no sample that reaches pitch 120.
    with caplog.at_level(logging.WARNING, logger="condgen.synth.soundfont"):
        render_dataset(tmp_path, programs=[PIANO], pitches=[60, 120], velocities=[100], show_progress=False)

    examples = json.loads((tmp_path / "nsynth-soundfont" / "examples.json").read_text())
    assert list(examples) == ["keyboard_acoustic_000-060-100"]
    assert "keyboard_acoustic_000-120-100" in caplog.text


def test_render_dataset_all_silent_writes_nothing(tmp_path):
    with pytest.raises(DataError, match="silent"):
        render_dataset(tmp_path / "out", programs=[PIANO], pitches=[120], velocities=[100], show_progress=False)
    assert not (tmp_path / "out").exists()


def test_render_dataset_rejects_bad_values_before_writing(tmp_path):
    cases = [
        ({"programs": [200]}, "200", "0..127"),
        ({"pitches": [60, 128]}, "128", "0..127"),
        ({"velocities": [0]}, "0", "1..127"),
        ({"programs": [24, 122]}, "122", "Seashore"),
    ]
    for kwargs, value, hint in cases:
        with pytest.raises(RecipeError) as error:
            render_dataset(tmp_path / "out", show_progress=False, **kwargs)
        assert value in str(error.value)
        assert hint in str(error.value)
    with pytest.raises(RecipeError, match="preset"):
        render_dataset(tmp_path / "out", preset="huge", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_render_dataset_missing_soundfont(tmp_path):
    with pytest.raises(DataError, match="nowhere.sf2"):
        render_dataset(tmp_path / "out", sf2_path=tmp_path / "nowhere.sf2", show_progress=False)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# Command line


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_renders_custom_soundfont(sine_font, tmp_path):
    args = _parse([str(tmp_path / "out"), "--sf2", str(sine_font.path), "--programs", "0", "--pitches", "57:69:12", "--velocities", "100", "--no-progress"])
    assert run(args) == 0

    items = _items_by_name(tmp_path / "out" / "nsynth-soundfont.tfrecord")
    assert sorted(items) == ["keyboard_acoustic_000-057-100", "keyboard_acoustic_000-069-100"]
    measured_hz = _peak_frequency_hz(items["keyboard_acoustic_000-057-100"]["audio"].numpy()[8000:40000])
    assert abs(_cents(measured_hz, 220.0)) < 5


def test_cli_rejects_out_of_range_pitch(tmp_path):
    args = _parse([str(tmp_path / "out"), "--pitches", "36:200:12", "--no-progress"])
    with pytest.raises(RecipeError) as error:
        run(args)
    assert "132" in str(error.value)
    assert "0..127" in str(error.value)


@pytest.mark.parametrize("gain", [float("nan"), float("inf"), 100.0])
def test_invalid_gain_rejected(tmp_path, gain):
    from condgen.errors import RecipeError
    from condgen.synth.soundfont import render_dataset

    with pytest.raises(RecipeError, match="--gain-db"):
        render_dataset(tmp_path / "out", programs=[0], pitches=[60], velocities=[100], gain_db=gain)
    assert not (tmp_path / "out").exists()
