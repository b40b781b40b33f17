"""NSynth notes: one dataset over the three layouts that NSynth notes come in, and writers.

NSynth (Engel et al., 2017) notes are 4 s of 16 kHz mono audio, labelled by
instrument, MIDI pitch and MIDI velocity. `NSynthNotes` reads

1. the official TFRecord files (one `tf.train.Example` per note),
2. the official json/wav folders (`examples.json` and `audio/<note_str>.wav`),
3. folders of WAV files named `<family>_<source>_<NNN>-<pitch>-<velocity>.wav`
   without metadata, where the labels come from the file name,

and returns the same item for each. Audio is never resampled, mixed down,
padded or trimmed: a note that is not 16 kHz, mono and 64,000 samples long
raises `DataError`.

`write_jsonwav` and `write_nsynth_tfrecord` write notes in the two official
layouts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from condgen.errors import DataError, OutputExistsError
from condgen.tfrecord import decode_example, is_gzip_file, iter_records, read_record_at, write_tfrecord
from condgen.checkpoint import replace_folder

logger = logging.getLogger(__name__)

__all__ = [
    "SAMPLE_RATE",
    "N_SAMPLES",
    "FAMILIES",
    "SOURCES",
    "QUALITIES",
    "NSynthFilter",
    "NSynthNotes",
    "collate_notes",
    "parse_note_str",
    "write_jsonwav",
    "write_nsynth_tfrecord",
]

SAMPLE_RATE = 16000
N_SAMPLES = 64000
PCM16_SCALE = 32768  # int16 sample k is the float k / 32768, as in the official TFRecords

# Official id order: FAMILIES[instrument_family] == instrument_family_str.
FAMILIES = (
    "bass",
    "brass",
    "flute",
    "guitar",
    "keyboard",
    "mallet",
    "organ",
    "reed",
    "string",
    "synth_lead",
    "vocal",
)
SOURCES = ("acoustic", "electronic", "synthetic")
# Official order of the 10 entries of `qualities`.
QUALITIES = (
    "bright",
    "dark",
    "distortion",
    "fast_decay",
    "long_release",
    "multiphonic",
    "nonlinear_env",
    "percussive",
    "reverb",
    "tempo-synced",
)

# Fields of one item besides `audio`, in the order items list them. Unknown values are None.
LABEL_FIELDS = (
    "note",
    "note_str",
    "instrument",
    "instrument_str",
    "pitch",
    "velocity",
    "instrument_family",
    "instrument_family_str",
    "instrument_source",
    "instrument_source_str",
    "qualities",
)
# Fields without which a TFRecord record or an examples.json entry is rejected.
REQUIRED_FIELDS = ("note_str", "instrument_str", "pitch", "velocity")
# Every field of the official schema, which the writers require.
OFFICIAL_FIELDS = (
    "note",
    "note_str",
    "instrument",
    "instrument_str",
    "pitch",
    "velocity",
    "sample_rate",
    "audio",
    "qualities",
    "qualities_str",
    "instrument_family",
    "instrument_family_str",
    "instrument_source",
    "instrument_source_str",
)

# 8-, 16-, 24- and 32-bit integer WAVs are always within [-1, 1) after
# soundfile's conversion to float32. Float WAVs are accepted too, but a float
# note whose peak exceeds 1 raises DataError when it is read.
ACCEPTED_WAV_SUBTYPES = ("PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")

NOTE_NAME_PATTERN = "<family>_<source>_<NNN>-<pitch:03d>-<velocity:03d>.wav"
_NOTE_STR = re.compile(
    r"^(?P<instrument_str>(?P<family>[a-z]+(?:_[a-z]+)*)_(?P<source>[a-z]+)_(?P<number>\d{3}))"
    r"-(?P<pitch>\d{3})-(?P<velocity>\d{3})$"
)
_INSTRUMENT_STR = re.compile(r"^(?P<family>[a-z]+(?:_[a-z]+)*)_(?P<source>[a-z]+)_(?P<number>\d+)$")


# ---------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------


def parse_note_str(note_str: str, where: str | None = None) -> dict[str, Any]:
    """Parse an NSynth note name such as "synth_lead_synthetic_007-060-100".

    Returns `instrument_str`, `pitch`, `velocity`, `instrument_family_str`
    and `instrument_source_str`. Raises `DataError` when the name does not
    match `<family>_<source>_<NNN>-<pitch:03d>-<velocity:03d>` or names an
    unknown family or source. `where` (such as the file) starts the message.
    """
    where = where or f"note name {note_str!r}"
    match = _NOTE_STR.match(note_str)
    if match is None:
        raise DataError(
            f"{where}: not an NSynth note name; expected {NOTE_NAME_PATTERN} with lower-case "
            "names and 3-digit numbers, such as synth_lead_synthetic_007-060-100.wav. "
            "Rename the file or move it out of the folder"
        )
    _check_family_and_source(match["family"], match["source"], where)
    return {
        "instrument_str": match["instrument_str"],
        "pitch": int(match["pitch"]),
        "velocity": int(match["velocity"]),
        "instrument_family_str": match["family"],
        "instrument_source_str": match["source"],
    }


def _check_family_and_source(family: str, source: str, where: str) -> None:
    if family not in FAMILIES:
        raise DataError(f"{where}: unknown instrument family {family!r}; valid families: {', '.join(FAMILIES)}")
    if source not in SOURCES:
        raise DataError(f"{where}: unknown instrument source {source!r}; valid sources: {', '.join(SOURCES)}")


def _get_str(row: Mapping[str, Any], key: str, where: str) -> str:
    value = row[key]
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}: field {key!r} is {value!r}, expected a non-empty string")
    return value


def _get_int(row: Mapping[str, Any], key: str, where: str, low: int = 0, high: int | None = None) -> int:
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{where}: field {key!r} is {value!r}, expected an integer")
    value = int(value)
    if value < low or (high is not None and value > high):
        expected = f"{low} to {high}" if high is not None else f"at least {low}"
        raise DataError(f"{where}: field {key!r} is {value}, expected {expected}")
    return value


def _get_qualities(row: Mapping[str, Any], where: str) -> list[int]:
    value = row["qualities"]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != len(QUALITIES):
        found = f"{len(value)} values" if isinstance(value, (list, tuple)) else repr(value)
        raise DataError(f"{where}: field 'qualities' has {found}, expected {len(QUALITIES)} values of 0 or 1")
    if any(isinstance(flag, bool) or flag not in (0, 1) for flag in value):
        raise DataError(f"{where}: field 'qualities' is {list(value)}, expected {len(QUALITIES)} values of 0 or 1")
    return [int(flag) for flag in value]


def _labels_from_row(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check one note's fields and return them as `LABEL_FIELDS` (None where absent).

    `row` contains Python values, as in examples.json. The family and source
    names come from `instrument_str` when the row lacks them, and their ids
    from the names when the row lacks those.
    """
    missing = [key for key in REQUIRED_FIELDS if key not in row]
    if missing:
        raise DataError(
            f"{where}: missing field {', '.join(repr(key) for key in missing)}; "
            f"an NSynth note needs at least {', '.join(REQUIRED_FIELDS)}"
        )
    if "sample_rate" in row:
        sample_rate = _get_int(row, "sample_rate", where)
        if sample_rate != SAMPLE_RATE:
            raise DataError(
                f"{where}: sample rate {sample_rate} Hz, expected {SAMPLE_RATE} Hz; "
                f"resample the notes to {SAMPLE_RATE} Hz first"
            )

    instrument_str = _get_str(row, "instrument_str", where)
    if "instrument_family_str" in row and "instrument_source_str" in row:
        family = _get_str(row, "instrument_family_str", where)
        source = _get_str(row, "instrument_source_str", where)
    else:
        match = _INSTRUMENT_STR.match(instrument_str)
        if match is None:
            raise DataError(
                f"{where}: no instrument_family_str/instrument_source_str fields, and instrument_str "
                f"{instrument_str!r} does not have the form <family>_<source>_<NNN> to take them from"
            )
        family = row["instrument_family_str"] if "instrument_family_str" in row else match["family"]
        source = row["instrument_source_str"] if "instrument_source_str" in row else match["source"]
    _check_family_and_source(family, source, where)

    labels: dict[str, Any] = {
        "note": _get_int(row, "note", where) if "note" in row else None,
        "note_str": _get_str(row, "note_str", where),
        "instrument": _get_int(row, "instrument", where) if "instrument" in row else None,
        "instrument_str": instrument_str,
        "pitch": _get_int(row, "pitch", where, 0, 127),
        "velocity": _get_int(row, "velocity", where, 0, 127),
        "instrument_family": FAMILIES.index(family),
        "instrument_family_str": family,
        "instrument_source": SOURCES.index(source),
        "instrument_source_str": source,
        "qualities": _get_qualities(row, where) if "qualities" in row else None,
    }
    for id_key, names in (("instrument_family", FAMILIES), ("instrument_source", SOURCES)):
        if id_key in row:
            found = _get_int(row, id_key, where)
            if found != labels[id_key]:
                raise DataError(
                    f"{where}: field {id_key!r} is {found}, but {id_key}_str {labels[id_key + '_str']!r} "
                    f"has id {labels[id_key]} (ids follow the order {', '.join(names)})"
                )
    return labels


# ---------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------


def _as_tuple(value: Any) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, (str, int, np.integer)):
        return (value,)
    return tuple(value)


@dataclass
class NSynthFilter:
    """Selection of notes by label; a field left as None does not filter.

    `sources`, `families` and `instruments` are names (`instrument_str` for
    instruments), `velocities` MIDI velocities, and `pitch_min`/`pitch_max` an
    inclusive MIDI pitch range. A single name or number is taken as a
    one-element collection. Raises `DataError` for unknown family or source
    names and for `pitch_min > pitch_max`.
    """

    sources: Sequence[str] | None = None
    families: Sequence[str] | None = None
    pitch_min: int | None = None
    pitch_max: int | None = None
    velocities: Sequence[int] | None = None
    instruments: Sequence[str] | None = None

    def __post_init__(self) -> None:
        self.sources = _as_tuple(self.sources)
        self.families = _as_tuple(self.families)
        self.velocities = _as_tuple(self.velocities)
        self.instruments = _as_tuple(self.instruments)
        unknown_sources = [name for name in self.sources or () if name not in SOURCES]
        if unknown_sources:
            raise DataError(
                f"unknown instrument source {', '.join(map(repr, unknown_sources))} in the note filter; "
                f"valid sources: {', '.join(SOURCES)}"
            )
        unknown_families = [name for name in self.families or () if name not in FAMILIES]
        if unknown_families:
            raise DataError(
                f"unknown instrument family {', '.join(map(repr, unknown_families))} in the note filter; "
                f"valid families: {', '.join(FAMILIES)}"
            )
        if self.pitch_min is not None and self.pitch_max is not None and self.pitch_min > self.pitch_max:
            raise DataError(
                f"note filter: pitch_min {self.pitch_min} is above pitch_max {self.pitch_max}; "
                "the pitch range is inclusive, so give pitch_min <= pitch_max"
            )

    def matches(self, labels: Mapping[str, Any]) -> bool:
        """Return whether a note's labels pass every field of the filter."""
        if self.sources is not None and labels["instrument_source_str"] not in self.sources:
            return False
        if self.families is not None and labels["instrument_family_str"] not in self.families:
            return False
        if self.pitch_min is not None and labels["pitch"] < self.pitch_min:
            return False
        if self.pitch_max is not None and labels["pitch"] > self.pitch_max:
            return False
        if self.velocities is not None and labels["velocity"] not in self.velocities:
            return False
        if self.instruments is not None and labels["instrument_str"] not in self.instruments:
            return False
        return True


# ---------------------------------------------------------------------------
# Audio checks and WAV reading
# ---------------------------------------------------------------------------


def _check_audio_format(where: str, sample_rate: int, n_channels: int, n_samples: int, subtype: str | None) -> None:
    if sample_rate != SAMPLE_RATE:
        raise DataError(
            f"{where}: sample rate {sample_rate} Hz, expected {SAMPLE_RATE} Hz; resample the note to "
            f"{SAMPLE_RATE} Hz first (this reader does not resample)"
        )
    if n_channels != 1:
        raise DataError(f"{where}: {n_channels} channels, expected 1 (mono); mix the note down to mono first")
    if n_samples != N_SAMPLES:
        raise DataError(
            f"{where}: {n_samples} samples, expected {N_SAMPLES} ({N_SAMPLES // SAMPLE_RATE} s at "
            f"{SAMPLE_RATE} Hz); pad or trim the note to {N_SAMPLES} samples first"
        )
    if subtype is not None and subtype not in ACCEPTED_WAV_SUBTYPES:
        raise DataError(
            f"{where}: sample format {subtype}, expected one of {', '.join(ACCEPTED_WAV_SUBTYPES)}; "
            "convert the file to 16-bit PCM"
        )


def _check_audio_values(where: str, audio: np.ndarray) -> None:
    if not np.all(np.isfinite(audio)):
        raise DataError(f"{where}: audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 1.0:
        raise DataError(f"{where}: audio peak is {peak:.4f}, expected at most 1.0; normalise the note first")


def _open_wav(path: Path, context: str = "") -> sf.SoundFile:
    if not path.is_file():
        raise DataError(f"{path}: WAV file not found{context}")
    try:
        return sf.SoundFile(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as error:
        raise DataError(f"{path}: cannot read the file as audio ({error}); replace it with a 16-bit PCM WAV file") from None


def _check_wav_header(path: Path, context: str = "") -> None:
    """Raise DataError unless the WAV file exists, opens and is 16 kHz mono with 64,000 samples."""
    with _open_wav(path, context) as wav:
        _check_audio_format(str(path), wav.samplerate, wav.channels, wav.frames, wav.subtype)


def _read_wav(path: Path) -> np.ndarray:
    """Read a note WAV as float32 `[N_SAMPLES]`; 16-bit PCM is divided by 32768 exactly."""
    with _open_wav(path) as wav:
        _check_audio_format(str(path), wav.samplerate, wav.channels, wav.frames, wav.subtype)
        subtype = wav.subtype
        if subtype == "PCM_16":
            audio = wav.read(dtype="int16").astype(np.float32) / np.float32(PCM16_SCALE)
        else:
            audio = wav.read(dtype="float32")
    if len(audio) != N_SAMPLES:
        raise DataError(f"{path}: {len(audio)} samples could be read, expected {N_SAMPLES}")
    if subtype in ("FLOAT", "DOUBLE"):
        _check_audio_values(str(path), audio)
    return audio


def _audio_from_features(features: Mapping[str, Any], where: str) -> np.ndarray:
    if "audio" not in features:
        raise DataError(f"{where}: missing feature 'audio'")
    audio = features["audio"]
    if not isinstance(audio, np.ndarray) or audio.dtype != np.float32:
        raise DataError(f"{where}: feature 'audio' is not a float_list")
    if audio.shape != (N_SAMPLES,):
        raise DataError(
            f"{where}: audio has {audio.size} samples, expected {N_SAMPLES} "
            f"({N_SAMPLES // SAMPLE_RATE} s at {SAMPLE_RATE} Hz); pad or trim the note to {N_SAMPLES} "
            "samples and write the file again"
        )
    return audio


# ---------------------------------------------------------------------------
# Scanning the three layouts
# ---------------------------------------------------------------------------

# Location of a note's audio: ("tfrecord", file, record offset) or ("wav", file, -1).
_Location = tuple[str, str, int]


def _row_from_features(features: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Convert decoded TFRecord features to the Python values of an examples.json entry."""
    row: dict[str, Any] = {}
    for key, value in features.items():
        if key in ("audio", "qualities_str"):
            continue
        if key == "qualities":
            row[key] = value.tolist() if isinstance(value, np.ndarray) and value.dtype == np.int64 else value
            continue
        if isinstance(value, list):
            if len(value) != 1:
                raise DataError(f"{where}: feature {key!r} has {len(value)} values, expected 1")
            try:
                row[key] = value[0].decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{where}: feature {key!r} is not valid UTF-8") from None
        elif value.dtype == np.int64:
            if value.shape != (1,):
                raise DataError(f"{where}: feature {key!r} has {value.size} values, expected 1")
            row[key] = int(value[0])
        else:
            row[key] = value  # a float_list where the schema has none; the label checks report it
    return row


def _scan_tfrecord(path: Path) -> tuple[list[dict[str, Any]], list[_Location]]:
    if path.stat().st_size == 0:
        # An empty file is a valid TFRecord file without records, but as a
        # source of notes it is almost always an interrupted copy or write.
        raise DataError(f"{path}: the TFRecord file is empty (0 bytes); copy or write it again, or remove it from the paths")
    if is_gzip_file(path):
        raise DataError(
            f"{path}: is gzip-compressed, but notes are read by random access into the file; "
            f"decompress it first (gunzip -c {path.name} > {path.stem}-plain{path.suffix}) and pass the new file"
        )
    metadata: list[dict[str, Any]] = []
    locations: list[_Location] = []
    progress = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"scan {path.name}", disable=None, leave=False)
    with progress:
        for offset, data in iter_records(path):
            where = f"{path}: record at byte {offset}"
            features = decode_example(data, where)
            missing = [key for key in (*REQUIRED_FIELDS, "sample_rate") if key not in features]
            if missing:
                raise DataError(
                    f"{where}: missing feature {', '.join(repr(key) for key in missing)}; an NSynth record "
                    f"needs at least {', '.join(REQUIRED_FIELDS)}, sample_rate and audio, so write the file "
                    "again with these features"
                )
            labels = _labels_from_row(_row_from_features(features, where), where)
            _check_audio_values(where, _audio_from_features(features, where))
            metadata.append(labels)
            locations.append(("tfrecord", str(path), offset))
            progress.update(len(data) + 16)
    return metadata, locations


def _scan_jsonwav(folder: Path) -> tuple[list[dict[str, Any]], list[_Location]]:
    json_path = folder / "examples.json"
    try:
        with open(json_path, encoding="utf-8") as file:
            entries = json.load(file)
    except json.JSONDecodeError as error:
        raise DataError(f"{json_path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{json_path}: cannot read the file: {error}") from None
    if not isinstance(entries, dict):
        raise DataError(f"{json_path}: expected a JSON object that maps note_str to a note's fields")

    metadata: list[dict[str, Any]] = []
    locations: list[_Location] = []
    for key, row in entries.items():
        where = f"{json_path}: entry {key!r}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object of note fields, found {type(row).__name__}")
        labels = _labels_from_row({"note_str": key, **row}, where)
        if labels["note_str"] != key:
            raise DataError(f"{where}: note_str is {labels['note_str']!r}, but the entry is named {key!r}")
        metadata.append(labels)
        locations.append(("wav", str(folder / "audio" / f"{key}.wav"), -1))
    return metadata, locations


def _scan_named_wavs(wav_paths: list[Path]) -> tuple[list[dict[str, Any]], list[_Location]]:
    metadata: list[dict[str, Any]] = []
    locations: list[_Location] = []
    for wav_path in wav_paths:
        parsed = parse_note_str(wav_path.stem, where=str(wav_path))
        labels = _labels_from_row({"note_str": wav_path.stem, **parsed}, str(wav_path))
        metadata.append(labels)
        locations.append(("wav", str(wav_path), -1))
    return metadata, locations


def _is_tfrecord_name(name: str) -> bool:
    # Sharded files are named like notes.tfrecord-00000-of-00010.
    return name.endswith((".tfrecord", ".tfr")) or ".tfrecord-" in name


def _scan_path(path: Path) -> tuple[list[dict[str, Any]], list[_Location]]:
    """Detect the layout of one path and return its notes' labels and audio locations."""
    if not path.exists():
        raise DataError(
            f"{path}: not found; expected an NSynth TFRecord file, a folder with examples.json "
            "and audio/, or a folder of NSynth-named WAV files"
        )
    if path.is_file() and path.name == "examples.json":
        path = path.parent
    if path.is_file():
        if path.suffix == ".gz" and _is_tfrecord_name(path.stem):
            raise DataError(
                f"{path}: is gzip-compressed, but notes are read by random access into the file; "
                f"decompress it first (gunzip -k {path.name}) and pass {path.stem}"
            )
        if not _is_tfrecord_name(path.name):
            raise DataError(
                f"{path}: is not an NSynth TFRecord file (.tfrecord or .tfr); pass a TFRecord file, "
                "a folder with examples.json and audio/, or a folder of NSynth-named WAV files"
            )
        return _scan_tfrecord(path)
    if (path / "examples.json").is_file():
        return _scan_jsonwav(path)
    wav_paths = sorted(child for child in path.iterdir() if child.suffix.lower() == ".wav" and child.is_file())
    if not wav_paths:
        raise DataError(
            f"{path}: contains neither examples.json nor .wav files; pass a folder in the official "
            f"json/wav layout or a folder of WAV files named {NOTE_NAME_PATTERN}"
        )
    return _scan_named_wavs(wav_paths)


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------


class NSynthNotes(Dataset):
    """NSynth notes from TFRecord files, json/wav folders and folders of named WAVs.

    Each path is detected separately: a `.tfrecord`/`.tfr` file, a folder
    with `examples.json` (or that file itself), or a folder of WAV files named
    `<family>_<source>_<NNN>-<pitch:03d>-<velocity:03d>.wav`. Items follow the
    order of `paths`, then file order, after `filters` has been applied.

    An item is a dict with `audio` (torch.float32 `[N_SAMPLES]` in [-1, 1])
    and the `LABEL_FIELDS`. The strings are `note_str`, `instrument_str`,
    `instrument_family_str` and `instrument_source_str`. The ints are `pitch`,
    `velocity`, `instrument_family` and `instrument_source`. `note`,
    `instrument` (int) and `qualities` (list of 10 ints) are None for named
    WAVs. `metadata` contains the same dicts without `audio`, so vocabularies
    can be built without reading any audio.

    Building the dataset reads every TFRecord record, checking CRCs, labels
    and audio length, and the header of every selected WAV file. Audio is read
    in `__getitem__`. File handles are opened lazily in each process, so the
    dataset works with DataLoader workers. Raises `DataError` for a missing
    or malformed path, for audio that is not 16 kHz mono with 64,000 samples,
    and when no note is left.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], filters: NSynthFilter | None = None):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(path) for path in paths]
        if not self.paths:
            raise DataError("no NSynth paths given; pass a TFRecord file or a folder of notes")
        self.filters = filters

        metadata: list[dict[str, Any]] = []
        locations: list[_Location] = []
        for path in self.paths:
            path_metadata, path_locations = _scan_path(path)
            if not path_metadata:
                logger.warning("%s contains no notes", path)
            metadata.extend(path_metadata)
            locations.extend(path_locations)

        if filters is not None:
            kept = [index for index, labels in enumerate(metadata) if filters.matches(labels)]
            metadata = [metadata[index] for index in kept]
            locations = [locations[index] for index in kept]
        if not metadata:
            names = ", ".join(str(path) for path in self.paths)
            if filters is None:
                raise DataError(f"no notes found in {names}")
            raise DataError(f"no notes in {names} pass the filter {filters}; widen the filter")

        self._check_wav_headers(locations)
        self._warn_about_duplicates(metadata)
        self.metadata: list[dict[str, Any]] = metadata
        self._locations: list[_Location] = locations
        self._handles: dict[str, BinaryIO] = {}
        self._handles_pid = os.getpid()

    @staticmethod
    def _check_wav_headers(locations: list[_Location]) -> None:
        wav_paths = [Path(file) for kind, file, _ in locations if kind == "wav"]
        for wav_path in tqdm(wav_paths, desc="check WAV headers", unit="file", disable=None, leave=False):
            context = ""
            if wav_path.parent.name == "audio" and (wav_path.parent.parent / "examples.json").is_file():
                context = f", but {wav_path.parent.parent / 'examples.json'} lists the note {wav_path.stem!r}"
            _check_wav_header(wav_path, context)

    @staticmethod
    def _warn_about_duplicates(metadata: list[dict[str, Any]]) -> None:
        counts = Counter(labels["note_str"] for labels in metadata)
        duplicates = [name for name, count in counts.items() if count > 1]
        if duplicates:
            logger.warning(
                "%d note names occur more than once (first: %s); the same note may be listed in two paths",
                len(duplicates),
                duplicates[0],
            )

    def __len__(self) -> int:
        return len(self.metadata)

    def __getitem__(self, index: int) -> dict[str, Any]:
        kind, file, offset = self._locations[index]
        if kind == "tfrecord":
            where = f"{file}: record at byte {offset}"
            features = decode_example(read_record_at(self._handle(file), offset), where)
            audio = _audio_from_features(features, where)
        else:
            audio = _read_wav(Path(file))
        item = dict(self.metadata[index])
        item["qualities"] = None if item["qualities"] is None else list(item["qualities"])
        item["audio"] = torch.from_numpy(audio)
        return item

    def _handle(self, file: str) -> BinaryIO:
        # A handle inherited through fork shares its file position with the
        # parent, so every process opens its own.
        if self._handles_pid != os.getpid():
            self._handles = {}
            self._handles_pid = os.getpid()
        handle = self._handles.get(file)
        if handle is None:
            try:
                handle = open(file, "rb")
            except OSError as error:
                raise DataError(f"{file}: cannot open the TFRecord file: {error.strerror or error}") from None
            self._handles[file] = handle
        return handle

    def close(self) -> None:
        """Close the TFRecord files that this process opened."""
        if self._handles_pid == os.getpid():
            for handle in self._handles.values():
                handle.close()
        self._handles = {}

    def __del__(self) -> None:
        if getattr(self, "_handles", None):
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __repr__(self) -> str:
        names = ", ".join(str(path) for path in self.paths)
        return f"NSynthNotes({len(self)} notes from {names}, filters={self.filters})"


def collate_notes(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate NSynth items for a DataLoader, keeping unknown labels as None.

    `audio` becomes a float32 tensor `[B, N_SAMPLES]` and `pitch` and
    `velocity` int64 tensors `[B]`. Every other field becomes a list of
    length B, so None values of named WAVs pass through, unlike with
    torch's default_collate.
    """
    collated: dict[str, Any] = {key: [item[key] for item in batch] for key in batch[0]}
    collated["audio"] = torch.stack(collated["audio"])
    collated["pitch"] = torch.tensor(collated["pitch"], dtype=torch.int64)
    collated["velocity"] = torch.tensor(collated["velocity"], dtype=torch.int64)
    return collated


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


def _prepare_note(note: Mapping[str, Any], position: int) -> tuple[dict[str, Any], np.ndarray, bool]:
    """Check a note for writing; return its examples.json row, int16 audio and whether it was clipped."""
    name = note.get("note_str", f"#{position}")
    where = f"note {name}"
    missing = [key for key in OFFICIAL_FIELDS if key not in note]
    if missing:
        raise DataError(f"{where}: missing field {', '.join(missing)}; writers need every field of the official schema")
    labels = _labels_from_row(note, where)
    note_str = labels["note_str"]
    if "/" in note_str or os.sep in note_str or note_str.startswith("."):
        raise DataError(f"{where}: note_str {note_str!r} cannot be a file name; use a name like guitar_acoustic_010-060-100")

    qualities_str = list(note["qualities_str"])
    expected_qualities_str = [name for name, flag in zip(QUALITIES, labels["qualities"]) if flag]
    if qualities_str != expected_qualities_str:
        raise DataError(
            f"{where}: qualities_str is {qualities_str}, but qualities {labels['qualities']} "
            f"names {expected_qualities_str}"
        )

    audio = np.asarray(note["audio"])
    if audio.dtype.kind != "f":
        raise DataError(f"{where}: audio has dtype {audio.dtype}, expected float32 in [-1, 1]")
    if audio.shape != (N_SAMPLES,):
        raise DataError(f"{where}: audio has shape {audio.shape}, expected ({N_SAMPLES},)")
    if not np.all(np.isfinite(audio)):
        raise DataError(f"{where}: audio contains NaN or infinite samples")
    clipped = bool(np.any(np.abs(audio) > 1.0))
    # Clipping before the int16 cast makes a sample above full scale saturate at
    # 32767 (or -32768) instead of wrapping around.
    scaled = np.round(audio.astype(np.float64) * PCM16_SCALE)
    pcm16 = np.clip(scaled, -PCM16_SCALE, PCM16_SCALE - 1).astype(np.int16)

    row = {key: labels[key] for key in LABEL_FIELDS}
    row["qualities_str"] = qualities_str
    row["sample_rate"] = SAMPLE_RATE
    return row, pcm16, clipped


def _iter_prepared_notes(notes: Iterable[Mapping[str, Any]], description: str) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    seen: set[str] = set()
    n_clipped = 0
    for position, note in enumerate(tqdm(notes, desc=description, unit="note", disable=None, leave=False)):
        row, pcm16, clipped = _prepare_note(note, position)
        if row["note_str"] in seen:
            raise DataError(f"note {row['note_str']}: occurs twice; note_str must be unique within a dataset")
        seen.add(row["note_str"])
        n_clipped += clipped
        yield row, pcm16
    if n_clipped:
        logger.warning("%d notes had samples outside [-1, 1]; they were clipped before writing", n_clipped)


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: exists already; pass force=True to overwrite it")


def write_jsonwav(folder: str | os.PathLike, notes: Iterable[Mapping[str, Any]], force: bool = False) -> int:
    """Write notes in the official json/wav layout and return the number written.

    Each note is a dict with every field of the official schema (`OFFICIAL_FIELDS`),
    `audio` being float32 `[N_SAMPLES]`. The folder gets `examples.json`
    (entries sorted by note_str) and
    `audio/<note_str>.wav` as 16 kHz 16-bit PCM. Audio is clipped to [-1, 1]
    and rounded to the nearest multiple of 1/32768, so the json/wav reader
    returns the stored samples exactly.

    The folder is built under a hidden temporary name next to `folder` and
    renamed into place when complete. Raises `OutputExistsError` if `folder`
    exists and `force` is false, and `DataError` for an invalid note.
    """
    folder = Path(folder)
    _check_output(folder, force)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp_folder = folder.with_name(f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    (temp_folder / "audio").mkdir(parents=True)
    try:
        rows: dict[str, dict[str, Any]] = {}
        for row, pcm16 in _iter_prepared_notes(notes, f"write {folder.name}"):
            sf.write(str(temp_folder / "audio" / f"{row['note_str']}.wav"), pcm16, SAMPLE_RATE, subtype="PCM_16")
            rows[row["note_str"]] = row
        with open(temp_folder / "examples.json", "w", encoding="utf-8") as file:
            json.dump(rows, file, indent=2, sort_keys=True)
            file.write("\n")
        replace_folder(temp_folder, folder)
    except BaseException:
        shutil.rmtree(temp_folder, ignore_errors=True)
        raise
    logger.info("wrote %d notes to %s", len(rows), folder)
    return len(rows)


def write_nsynth_tfrecord(path: str | os.PathLike, notes: Iterable[Mapping[str, Any]], force: bool = False) -> int:
    """Write notes as an uncompressed TFRecord in the official schema and return the number written.

    Notes are dicts as for `write_jsonwav`. As in the official release, the
    float32 audio lies on the 16-bit grid: it is clipped to [-1, 1] and
    rounded to the nearest multiple of 1/32768, so both writers store the
    same samples. The file is written under a temporary name and renamed into
    place. Raises `OutputExistsError` if `path` exists and `force` is false,
    and `DataError` for an invalid note.
    """
    path = Path(path)
    _check_output(path, force)

    def examples() -> Iterator[dict[str, Any]]:
        for row, pcm16 in _iter_prepared_notes(notes, f"write {path.name}"):
            yield {
                "note": row["note"],
                "note_str": row["note_str"],
                "instrument": row["instrument"],
                "instrument_str": row["instrument_str"],
                "pitch": row["pitch"],
                "velocity": row["velocity"],
                "sample_rate": SAMPLE_RATE,
                "audio": pcm16.astype(np.float32) / np.float32(PCM16_SCALE),
                "qualities": np.asarray(row["qualities"], dtype=np.int64),
                "qualities_str": list(row["qualities_str"]),
                "instrument_family": row["instrument_family"],
                "instrument_family_str": row["instrument_family_str"],
                "instrument_source": row["instrument_source"],
                "instrument_source_str": row["instrument_source_str"],
            }

    n_notes = write_tfrecord(path, examples(), force=force)
    logger.info("wrote %d notes to %s", n_notes, path)
    return n_notes
