"""NSynth readers on the real notes and on broken files, and the writers' round trip."""

import json
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from condgen.errors import DataError, OutputExistsError
from condgen.synth.nsynth import (
    FAMILIES,
    N_SAMPLES,
    QUALITIES,
    SAMPLE_RATE,
    SOURCES,
    NSynthFilter,
    NSynthNotes,
    collate_notes,
    parse_note_str,
    write_jsonwav,
    write_nsynth_tfrecord,
)
from condgen.tfrecord import encode_example, write_tfrecord

N_MINI_NOTES = 84
N_NAMED_NOTES = 95


@pytest.fixture(scope="module")
def tfrecord_notes(nsynth_dir):
    return NSynthNotes(nsynth_dir / "nsynth-mini.tfrecord")


@pytest.fixture(scope="module")
def jsonwav_notes(nsynth_dir):
    return NSynthNotes(nsynth_dir / "nsynth-mini")


@pytest.fixture(scope="module")
def examples_json(nsynth_dir):
    with open(nsynth_dir / "nsynth-mini" / "examples.json") as file:
        return json.load(file)


def read_pcm16(path):
    samples, sample_rate = sf.read(path, dtype="int16")
    assert sample_rate == SAMPLE_RATE
    return samples.astype(np.float32) / 32768


def sine(n_samples=N_SAMPLES, frequency_hz=440.0, sample_rate=SAMPLE_RATE, amplitude=0.5):
    t = np.arange(n_samples) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)


def official_note(note_str="guitar_acoustic_010-060-100", audio=None, note_id=7, qualities=None):
    """A note dict with every field of the official schema, labels taken from `note_str`."""
    labels = parse_note_str(note_str)
    qualities = qualities or [0] * 10
    return {
        "note": note_id,
        "note_str": note_str,
        "instrument": 3,
        "instrument_str": labels["instrument_str"],
        "pitch": labels["pitch"],
        "velocity": labels["velocity"],
        "sample_rate": SAMPLE_RATE,
        "audio": sine() if audio is None else audio,
        "qualities": qualities,
        "qualities_str": [name for name, flag in zip(QUALITIES, qualities) if flag],
        "instrument_family": FAMILIES.index(labels["instrument_family_str"]),
        "instrument_family_str": labels["instrument_family_str"],
        "instrument_source": SOURCES.index(labels["instrument_source_str"]),
        "instrument_source_str": labels["instrument_source_str"],
    }


def tfrecord_features(note):
    """Features of a note in the official TFRecord schema, written without the writer under test."""
    features = dict(note)
    features["audio"] = np.asarray(note["audio"], dtype=np.float32)
    features["qualities"] = np.asarray(note["qualities"], dtype=np.int64)
    return features


# ---------------------------------------------------------------------------
# Real notes
# ---------------------------------------------------------------------------


def test_constants_follow_official_ids(examples_json):
    for row in examples_json.values():
        assert FAMILIES[row["instrument_family"]] == row["instrument_family_str"]
        assert SOURCES[row["instrument_source"]] == row["instrument_source_str"]
        assert [name for name, flag in zip(QUALITIES, row["qualities"]) if flag] == row["qualities_str"]


def test_tfrecord_labels_match_examples_json(tfrecord_notes, examples_json):
    assert len(tfrecord_notes) == N_MINI_NOTES
    for labels in tfrecord_notes.metadata:
        row = examples_json[labels["note_str"]]
        for key, value in labels.items():
            assert value == row[key], (labels["note_str"], key)


def test_tfrecord_and_jsonwav_identical(tfrecord_notes, jsonwav_notes):
    assert len(jsonwav_notes) == N_MINI_NOTES
    position = {labels["note_str"]: index for index, labels in enumerate(jsonwav_notes.metadata)}
    assert set(position) == {labels["note_str"] for labels in tfrecord_notes.metadata}

    for index in range(len(tfrecord_notes)):
        from_tfrecord = tfrecord_notes[index]
        from_jsonwav = jsonwav_notes[position[from_tfrecord["note_str"]]]
        assert from_tfrecord.keys() == from_jsonwav.keys()
        for key in from_tfrecord:
            if key == "audio":
                assert torch.equal(from_tfrecord["audio"], from_jsonwav["audio"]), from_tfrecord["note_str"]
            else:
                assert from_tfrecord[key] == from_jsonwav[key], (from_tfrecord["note_str"], key)


def test_tfrecord_audio_equals_wav_pcm(tfrecord_notes, nsynth_dir):
    for index in range(0, len(tfrecord_notes), 7):
        item = tfrecord_notes[index]
        expected = read_pcm16(nsynth_dir / "nsynth-mini" / "audio" / f"{item['note_str']}.wav")
        assert item["audio"].dtype == torch.float32
        assert item["audio"].shape == (N_SAMPLES,)
        np.testing.assert_array_equal(item["audio"].numpy(), expected)


def test_named_wavs_labels_and_audio(nsynth_dir):
    folder = nsynth_dir / "named-wavs"
    notes = NSynthNotes(folder)

    assert len(notes) == N_NAMED_NOTES
    for index, labels in enumerate(notes.metadata):
        instrument_str, pitch, velocity = labels["note_str"].split("-")
        *family_parts, source, number = instrument_str.split("_")
        assert labels["instrument_str"] == instrument_str
        assert labels["pitch"] == int(pitch)
        assert labels["velocity"] == int(velocity)
        assert labels["instrument_family_str"] == "_".join(family_parts)
        assert labels["instrument_source_str"] == source
        assert labels["instrument_family"] == FAMILIES.index("_".join(family_parts))
        assert labels["instrument_source"] == SOURCES.index(source)
        assert labels["note"] is None
        assert labels["instrument"] is None
        assert labels["qualities"] is None
    assert "synth_lead" in {labels["instrument_family_str"] for labels in notes.metadata}

    for index in range(0, len(notes), 9):
        item = notes[index]
        expected = read_pcm16(folder / f"{item['note_str']}.wav")
        np.testing.assert_array_equal(item["audio"].numpy(), expected)


def test_examples_json_path_accepted(nsynth_dir):
    notes = NSynthNotes(nsynth_dir / "nsynth-mini" / "examples.json")

    assert len(notes) == N_MINI_NOTES


def test_several_paths_concatenate(nsynth_dir):
    notes = NSynthNotes([nsynth_dir / "nsynth-mini.tfrecord", nsynth_dir / "named-wavs"])

    assert len(notes) == N_MINI_NOTES + N_NAMED_NOTES
    assert notes.metadata[N_MINI_NOTES]["note"] is None
    assert notes.metadata[0]["note"] is not None


def test_dataloader_two_workers(nsynth_dir, tfrecord_notes):
    notes = NSynthNotes(nsynth_dir / "nsynth-mini.tfrecord")
    notes[0]  # opens a handle in this process before the workers start
    loader = DataLoader(notes, batch_size=8, shuffle=True, num_workers=2, collate_fn=collate_notes)

    seen = {}
    for batch in loader:
        assert batch["audio"].shape[1:] == (N_SAMPLES,)
        assert batch["pitch"].dtype == torch.int64
        for note_str, audio in zip(batch["note_str"], batch["audio"]):
            seen[note_str] = audio

    assert len(seen) == N_MINI_NOTES
    for index in range(0, N_MINI_NOTES, 11):
        item = tfrecord_notes[index]
        assert torch.equal(seen[item["note_str"]], item["audio"])


def test_dataset_pickles(tfrecord_notes):
    tfrecord_notes[3]
    copy = pickle.loads(pickle.dumps(tfrecord_notes))

    assert copy.metadata == tfrecord_notes.metadata
    assert torch.equal(copy[3]["audio"], tfrecord_notes[3]["audio"])


def test_collate_keeps_unknown_labels(nsynth_dir):
    notes = NSynthNotes(nsynth_dir / "named-wavs")
    batch = collate_notes([notes[0], notes[1]])

    assert batch["audio"].shape == (2, N_SAMPLES)
    assert batch["note"] == [None, None]
    assert batch["pitch"].tolist() == [notes.metadata[0]["pitch"], notes.metadata[1]["pitch"]]


# ---------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filter_kwargs, keep",
    [
        ({"sources": ["acoustic"]}, lambda row: row["instrument_source_str"] == "acoustic"),
        ({"families": ["bass", "keyboard"]}, lambda row: row["instrument_family_str"] in ("bass", "keyboard")),
        ({"pitch_min": 50}, lambda row: row["pitch"] >= 50),
        ({"pitch_max": 48}, lambda row: row["pitch"] <= 48),
        ({"pitch_min": 48, "pitch_max": 60}, lambda row: 48 <= row["pitch"] <= 60),
        ({"velocities": [127]}, lambda row: row["velocity"] == 127),
        ({"velocities": 100}, lambda row: row["velocity"] == 100),
        ({"instruments": "bass_synthetic_033"}, lambda row: row["instrument_str"] == "bass_synthetic_033"),
        (
            {"sources": "synthetic", "families": ["bass"], "velocities": [100, 127]},
            lambda row: row["instrument_source_str"] == "synthetic"
            and row["instrument_family_str"] == "bass"
            and row["velocity"] in (100, 127),
        ),
    ],
)
def test_filter_selects(nsynth_dir, examples_json, filter_kwargs, keep):
    expected = sorted(name for name, row in examples_json.items() if keep(row))
    assert 0 < len(expected) < N_MINI_NOTES

    notes = NSynthNotes(nsynth_dir / "nsynth-mini.tfrecord", filters=NSynthFilter(**filter_kwargs))

    assert sorted(labels["note_str"] for labels in notes.metadata) == expected
    assert notes[0]["note_str"] == notes.metadata[0]["note_str"]


def test_filter_on_named_wavs(nsynth_dir):
    notes = NSynthNotes(nsynth_dir / "named-wavs", filters=NSynthFilter(families=["synth_lead"]))

    assert len(notes) > 0
    assert {labels["instrument_family_str"] for labels in notes.metadata} == {"synth_lead"}


def test_filter_unknown_family():
    with pytest.raises(DataError, match=r"'drums'.*valid families: bass, brass.*synth_lead, vocal"):
        NSynthFilter(families=["drums"])


def test_filter_unknown_source():
    with pytest.raises(DataError, match=r"'analog'.*valid sources: acoustic, electronic, synthetic"):
        NSynthFilter(sources=["analog"])


def test_filter_inverted_pitch_range():
    with pytest.raises(DataError, match="pitch_min 70 is above pitch_max 60"):
        NSynthFilter(pitch_min=70, pitch_max=60)


def test_filter_leaving_nothing(nsynth_dir):
    with pytest.raises(DataError, match=r"nsynth-mini.tfrecord.*pass the filter.*pitch_min=127"):
        NSynthNotes(nsynth_dir / "nsynth-mini.tfrecord", filters=NSynthFilter(pitch_min=127))


# ---------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------


def write_named_wav(folder, audio, sample_rate=SAMPLE_RATE, name="guitar_acoustic_010-060-100.wav", subtype="PCM_16"):
    folder.mkdir(exist_ok=True)
    path = folder / name
    sf.write(str(path), audio, sample_rate, subtype=subtype)
    return path


def test_wav_wrong_sample_rate(tmp_path):
    write_named_wav(tmp_path / "notes", sine(176400, sample_rate=44100), sample_rate=44100)

    with pytest.raises(DataError, match=r"guitar_acoustic_010-060-100.wav: sample rate 44100 Hz, expected 16000 Hz"):
        NSynthNotes(tmp_path / "notes")


def test_wav_stereo(tmp_path):
    write_named_wav(tmp_path / "notes", np.stack([sine(), sine()], axis=1))

    with pytest.raises(DataError, match=r"guitar_acoustic_010-060-100.wav: 2 channels, expected 1"):
        NSynthNotes(tmp_path / "notes")


def test_wav_wrong_length(tmp_path):
    write_named_wav(tmp_path / "notes", sine(48000))

    with pytest.raises(DataError, match=r"guitar_acoustic_010-060-100.wav: 48000 samples, expected 64000"):
        NSynthNotes(tmp_path / "notes")


@pytest.mark.parametrize(
    "name",
    ["guitar.wav", "guitar_acoustic_010-60-100.wav", "drums_acoustic_010-060-100.wav", "guitar_analog_010-060-100.wav"],
)
def test_wav_bad_name(tmp_path, name):
    write_named_wav(tmp_path / "notes", sine(), name=name)

    with pytest.raises(DataError, match=rf"{name}.*(<family>_<source>_<NNN>-<pitch:03d>-<velocity:03d>.wav|valid)"):
        NSynthNotes(tmp_path / "notes")


def test_text_file_named_wav(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "guitar_acoustic_010-060-100.wav").write_text("not audio")

    with pytest.raises(DataError, match=r"guitar_acoustic_010-060-100.wav: cannot read the file as audio"):
        NSynthNotes(folder)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"absent: not found"):
        NSynthNotes(tmp_path / "absent")


def test_folder_without_notes(tmp_path):
    (tmp_path / "readme.txt").write_text("no notes here")

    with pytest.raises(DataError, match=rf"{tmp_path}: contains neither examples.json nor .wav files"):
        NSynthNotes(tmp_path)


def test_examples_json_entry_without_wav(tmp_path):
    note = official_note()
    write_jsonwav(tmp_path / "mini", [note])
    (tmp_path / "mini" / "audio" / f"{note['note_str']}.wav").unlink()

    with pytest.raises(DataError, match=r"audio/guitar_acoustic_010-060-100.wav: WAV file not found.*examples.json"):
        NSynthNotes(tmp_path / "mini")


def test_examples_json_invalid(tmp_path):
    folder = tmp_path / "mini"
    folder.mkdir()
    (folder / "examples.json").write_text('{"a": ')

    with pytest.raises(DataError, match=r"examples.json: invalid JSON at line 1"):
        NSynthNotes(folder)


def test_tfrecord_short_audio(tmp_path):
    features = tfrecord_features(official_note(audio=sine(48000)))
    path = tmp_path / "short.tfrecord"
    write_tfrecord(path, [tfrecord_features(official_note("bass_synthetic_001-040-100")), features])
    second_offset = 16 + len(encode_example(tfrecord_features(official_note("bass_synthetic_001-040-100"))))

    with pytest.raises(DataError, match=rf"short.tfrecord: record at byte {second_offset}: audio has 48000 samples, expected 64000"):
        NSynthNotes(path)


def test_tfrecord_without_pitch(tmp_path):
    features = tfrecord_features(official_note())
    del features["pitch"]
    path = tmp_path / "nopitch.tfrecord"
    write_tfrecord(path, [features])

    with pytest.raises(DataError, match=r"nopitch.tfrecord: record at byte 0: missing feature 'pitch'"):
        NSynthNotes(path)


def test_tfrecord_wrong_sample_rate(tmp_path):
    features = tfrecord_features(official_note())
    features["sample_rate"] = 44100
    path = tmp_path / "rate.tfrecord"
    write_tfrecord(path, [features])

    with pytest.raises(DataError, match=r"rate.tfrecord: record at byte 0: sample rate 44100 Hz, expected 16000 Hz"):
        NSynthNotes(path)


def test_tfrecord_family_id_mismatch(tmp_path):
    features = tfrecord_features(official_note())
    features["instrument_family"] = 0
    path = tmp_path / "family.tfrecord"
    write_tfrecord(path, [features])

    with pytest.raises(DataError, match=r"record at byte 0: field 'instrument_family' is 0.*'guitar' has id 3"):
        NSynthNotes(path)


def test_tfrecord_gzip_rejected(tmp_path):
    path = tmp_path / "notes.tfrecord"
    write_tfrecord(path, [tfrecord_features(official_note())], compress=True)

    with pytest.raises(DataError, match=r"notes.tfrecord: is gzip-compressed.*gunzip"):
        NSynthNotes(path)


def test_tfrecord_corrupt_record(tmp_path):
    path = tmp_path / "notes.tfrecord"
    write_tfrecord(path, [tfrecord_features(official_note())])
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0xFF
    path.write_bytes(bytes(raw))

    with pytest.raises(DataError, match=r"notes.tfrecord: record at byte 0: corrupt"):
        NSynthNotes(path)


# ---------------------------------------------------------------------------
# Other sample formats
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("subtype, tolerance", [("PCM_24", 2**-23), ("FLOAT", 0.0), ("PCM_U8", 2**-7)])
def test_wav_other_sample_formats(tmp_path, subtype, tolerance):
    audio = sine()
    write_named_wav(tmp_path / "notes", audio, subtype=subtype)

    item = NSynthNotes(tmp_path / "notes")[0]

    assert item["audio"].dtype == torch.float32
    np.testing.assert_allclose(item["audio"].numpy(), audio, rtol=0, atol=tolerance)


def test_float_wav_above_full_scale(tmp_path):
    write_named_wav(tmp_path / "notes", sine(amplitude=1.5), subtype="FLOAT")
    notes = NSynthNotes(tmp_path / "notes")

    with pytest.raises(DataError, match=r"guitar_acoustic_010-060-100.wav: audio peak is 1.5000, expected at most 1.0"):
        notes[0]


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


def real_notes_with_schema(nsynth_dir, examples_json, count=12):
    """The first real notes as full official-schema dicts, audio read straight from the WAVs."""
    notes = []
    for note_str in sorted(examples_json)[:count]:
        note = dict(examples_json[note_str])
        note["audio"] = read_pcm16(nsynth_dir / "nsynth-mini" / "audio" / f"{note_str}.wav")
        notes.append(note)
    return notes


def test_writers_round_trip(tmp_path, nsynth_dir, examples_json):
    notes = real_notes_with_schema(nsynth_dir, examples_json)

    assert write_jsonwav(tmp_path / "mini", notes) == len(notes)
    assert write_nsynth_tfrecord(tmp_path / "mini.tfrecord", notes) == len(notes)

    written_json = json.loads((tmp_path / "mini" / "examples.json").read_text())
    assert written_json == {note["note_str"]: examples_json[note["note_str"]] for note in notes}
    for path in (tmp_path / "mini", tmp_path / "mini.tfrecord"):
        dataset = NSynthNotes(path)
        assert len(dataset) == len(notes)
        by_name = {note["note_str"]: note for note in notes}
        for index in range(len(dataset)):
            item = dataset[index]
            original = by_name[item["note_str"]]
            np.testing.assert_array_equal(item["audio"].numpy(), original["audio"])
            for key, value in item.items():
                if key != "audio":
                    assert value == original[key], (path.name, key)


def test_writers_clip_without_wrapping(tmp_path):
    audio = np.zeros(N_SAMPLES, dtype=np.float32)
    audio[:4] = [1.5, -1.5, 1.0, -1.0]
    audio[4] = 0.25
    note = official_note(audio=audio)

    write_jsonwav(tmp_path / "mini", [note])
    write_nsynth_tfrecord(tmp_path / "mini.tfrecord", [note])

    pcm, _ = sf.read(tmp_path / "mini" / "audio" / f"{note['note_str']}.wav", dtype="int16")
    assert pcm[:5].tolist() == [32767, -32768, 32767, -32768, 8192]
    from_tfrecord = NSynthNotes(tmp_path / "mini.tfrecord")[0]["audio"]
    from_jsonwav = NSynthNotes(tmp_path / "mini")[0]["audio"]
    assert torch.equal(from_tfrecord, from_jsonwav)
    assert from_tfrecord[:5].tolist() == [32767 / 32768, -1.0, 32767 / 32768, -1.0, 0.25]


def test_writers_refuse_existing_output(tmp_path):
    note = official_note()
    write_jsonwav(tmp_path / "mini", [note])
    write_nsynth_tfrecord(tmp_path / "mini.tfrecord", [note])

    replacement = official_note("bass_synthetic_001-040-100")
    with pytest.raises(OutputExistsError, match="mini"):
        write_jsonwav(tmp_path / "mini", [replacement])
    with pytest.raises(OutputExistsError, match="mini.tfrecord"):
        write_nsynth_tfrecord(tmp_path / "mini.tfrecord", [replacement])

    write_jsonwav(tmp_path / "mini", [replacement], force=True)
    write_nsynth_tfrecord(tmp_path / "mini.tfrecord", [replacement], force=True)
    assert [labels["note_str"] for labels in NSynthNotes(tmp_path / "mini").metadata] == [replacement["note_str"]]
    assert [labels["note_str"] for labels in NSynthNotes(tmp_path / "mini.tfrecord").metadata] == [replacement["note_str"]]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mini", "mini.tfrecord"]
    assert sorted(path.name for path in (tmp_path / "mini" / "audio").iterdir()) == [f"{replacement['note_str']}.wav"]


def test_writer_rejects_invalid_note_atomically(tmp_path):
    good = official_note()
    bad = official_note("bass_synthetic_001-040-100", audio=sine(48000))

    with pytest.raises(DataError, match=r"note bass_synthetic_001-040-100: audio has shape \(48000,\), expected \(64000,\)"):
        write_jsonwav(tmp_path / "mini", [good, bad])
    with pytest.raises(DataError, match="bass_synthetic_001-040-100"):
        write_nsynth_tfrecord(tmp_path / "mini.tfrecord", [good, bad])
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_missing_field(tmp_path):
    note = official_note()
    del note["qualities_str"]

    with pytest.raises(DataError, match="missing field qualities_str"):
        write_jsonwav(tmp_path / "mini", [note])


def test_writer_rejects_duplicate_note(tmp_path):
    note = official_note()

    with pytest.raises(DataError, match="guitar_acoustic_010-060-100: occurs twice"):
        write_nsynth_tfrecord(tmp_path / "mini.tfrecord", [note, note])
