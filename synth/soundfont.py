"""Render an NSynth-format dataset from a General MIDI SoundFont.

The toolkit needs training data that exists without a download, so this
module renders one note per (GM program, MIDI pitch, velocity) with
tinysoundfont and labels it the way NSynth does. By default it renders
`TimGM6mb.sf2`, the small General MIDI SoundFont that ships inside the
`pretty_midi` package. Any other SF2 file works through `sf2_path` / `--sf2`.

Each note follows the NSynth recording protocol: note-on at 0 s, note-off at
3 s, one more second of release, 16 kHz mono, 64,000 float32 samples in
[-1, 1]. The output folder mirrors the official downloads:

    OUT/nsynth-soundfont/examples.json
    OUT/nsynth-soundfont/audio/<note_str>.wav
    OUT/nsynth-soundfont.tfrecord

Both layouts contain the same notes with the same 16-bit sample values.

Labels
------
`instrument` is the GM program number (0-127). `instrument_str` is
`<family>_<source>_<NNN>`, where NNN counts the rendered programs of each
family and source in ascending program order, so the same program can get a
different NNN in a render with a different program list. `note` is a running
id over the written notes. `qualities` is ten zeros and `qualities_str` is
empty, because a SoundFont carries no NSynth note qualities ("bright",
"percussive", ...), so every quality is unknown rather than absent.
The GM program sets the family and source as `GM_PROGRAMS` lists.
"""

from __future__ import annotations

import argparse
import importlib.resources
import itertools
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile
from scipy.signal import resample_poly
from tqdm import tqdm

from condgen.errors import DataError, OutputExistsError, RecipeError
from condgen.ranges import parse_int_list
from condgen.synth.nsynth import FAMILIES, N_SAMPLES, QUALITIES, SAMPLE_RATE, SOURCES, write_jsonwav, write_nsynth_tfrecord

logger = logging.getLogger(__name__)

__all__ = [
    "GM_PROGRAMS",
    "PRESETS",
    "Preset",
    "GMProgram",
    "Instrument",
    "LoadedSoundFont",
    "default_soundfont_path",
    "load_soundfont",
    "render_note",
    "quantize_int16",
    "assign_instruments",
    "parse_int_list",
    "render_dataset",
    "add_arguments",
    "run",
]

NOTE_OFF_S = 3.0
RELEASE_S = 1.0

# tinysoundfont reads the SoundFont's samples with linear interpolation and
# no band limiting, so rendering straight at 16 kHz folds every partial above
# 8 kHz back into the band. Rendering at 48 kHz and decimating by 3 with an
# anti-aliasing FIR filter avoids most of it: on five TimGM6mb notes, the RMS
# difference from a 96 kHz render was 2 to 12 times smaller than with a
# direct 16 kHz render.
RENDER_RATE = 48000
_DECIMATION = RENDER_RATE // SAMPLE_RATE

# Fixed output gain in dB for every note, so that velocity still changes the
# loudness. Measured with tinysoundfont 0.3.7 on TimGM6mb: at 0 dB the loudest
# note at velocity 127 (programs 0-111, pitches 12-120 every 6) peaks at 1.12,
# so -3 dB keeps that SoundFont below 0.8. Louder SoundFonts may clip.
DEFAULT_GAIN_DB = -3.0

# A note whose peak stays below this (-80 dBFS, about 3 LSB of 16-bit audio)
# rendered nothing, typically because the pitch lies outside every key range
# of the preset.
SILENCE_PEAK = 1e-4

JSONWAV_NAME = "nsynth-soundfont"
TFRECORD_NAME = "nsynth-soundfont.tfrecord"

MIDI_BANK_MELODIC = 0


class GMProgram(NamedTuple):
    """One General MIDI program and its NSynth family and source.

    `family` and `source` are None for a program that fits no NSynth family,
    and `rejection` then gives the reason.
    """

    name: str
    family: str | None
    source: str | None
    rejection: str | None = None


def _program(name: str, family: str, source: str) -> GMProgram:
    return GMProgram(name, family, source)


def _rejected(name: str, reason: str) -> GMProgram:
    return GMProgram(name, None, None, reason)


_NO_FAMILY_FX = "a synth sound effect, which fits no NSynth family"
_NO_FAMILY_DRUM = "an unpitched drum or cymbal, which fits no NSynth family"
_NO_FAMILY_SFX = "a sound effect, which fits no NSynth family"

# General MIDI Level 1 programs (0-based) -> NSynth family and source.
# The GM group sets the family, with these exceptions:
#   21-23  accordion, harmonica, bandoneon: free-reed instruments -> reed
#   47     timpani: a drum struck with mallets -> mallet
#   52-54  choir and voice programs -> vocal, and 91 "Pad 4 (choir)" as well
#   55     orchestra hit: rejected
#   88-95  synth pads: NSynth has no pad family -> keyboard, synthetic
#   96-103 synth effects: rejected
#   104-111 ethnic: plucked ones -> guitar, kalimba -> mallet, bagpipe and
#          shanai -> reed, fiddle -> string
#   112-119 percussive: tinkle bell and steel drums -> mallet, the rest rejected
#   120-127 sound effects: rejected
# Source: electric or electro-mechanical instruments with pickups are
# electronic, synthesizer programs are synthetic, everything else is acoustic.
# Drum kits live in bank 128, which this module never uses.
GM_PROGRAMS: tuple[GMProgram, ...] = (
    # Piano
    _program("Acoustic Grand Piano", "keyboard", "acoustic"),
    _program("Bright Acoustic Piano", "keyboard", "acoustic"),
    _program("Electric Grand Piano", "keyboard", "electronic"),
    _program("Honky-tonk Piano", "keyboard", "acoustic"),
    _program("Electric Piano 1", "keyboard", "electronic"),
    _program("Electric Piano 2", "keyboard", "electronic"),
    _program("Harpsichord", "keyboard", "acoustic"),
    _program("Clavinet", "keyboard", "electronic"),
    # Chromatic percussion
    _program("Celesta", "mallet", "acoustic"),
    _program("Glockenspiel", "mallet", "acoustic"),
    _program("Music Box", "mallet", "acoustic"),
    _program("Vibraphone", "mallet", "acoustic"),
    _program("Marimba", "mallet", "acoustic"),
    _program("Xylophone", "mallet", "acoustic"),
    _program("Tubular Bells", "mallet", "acoustic"),
    _program("Dulcimer", "mallet", "acoustic"),
    # Organ
    _program("Drawbar Organ", "organ", "electronic"),
    _program("Percussive Organ", "organ", "electronic"),
    _program("Rock Organ", "organ", "electronic"),
    _program("Church Organ", "organ", "acoustic"),
    _program("Reed Organ", "organ", "acoustic"),
    _program("Accordion", "reed", "acoustic"),
    _program("Harmonica", "reed", "acoustic"),
    _program("Tango Accordion", "reed", "acoustic"),
    # Guitar
    _program("Acoustic Guitar (nylon)", "guitar", "acoustic"),
    _program("Acoustic Guitar (steel)", "guitar", "acoustic"),
    _program("Electric Guitar (jazz)", "guitar", "electronic"),
    _program("Electric Guitar (clean)", "guitar", "electronic"),
    _program("Electric Guitar (muted)", "guitar", "electronic"),
    _program("Overdriven Guitar", "guitar", "electronic"),
    _program("Distortion Guitar", "guitar", "electronic"),
    _program("Guitar Harmonics", "guitar", "electronic"),
    # Bass
    _program("Acoustic Bass", "bass", "acoustic"),
    _program("Electric Bass (finger)", "bass", "electronic"),
    _program("Electric Bass (pick)", "bass", "electronic"),
    _program("Fretless Bass", "bass", "electronic"),
    _program("Slap Bass 1", "bass", "electronic"),
    _program("Slap Bass 2", "bass", "electronic"),
    _program("Synth Bass 1", "bass", "synthetic"),
    _program("Synth Bass 2", "bass", "synthetic"),
    # Strings
    _program("Violin", "string", "acoustic"),
    _program("Viola", "string", "acoustic"),
    _program("Cello", "string", "acoustic"),
    _program("Contrabass", "string", "acoustic"),
    _program("Tremolo Strings", "string", "acoustic"),
    _program("Pizzicato Strings", "string", "acoustic"),
    _program("Orchestral Harp", "string", "acoustic"),
    _program("Timpani", "mallet", "acoustic"),
    # Ensemble
    _program("String Ensemble 1", "string", "acoustic"),
    _program("String Ensemble 2", "string", "acoustic"),
    _program("Synth Strings 1", "string", "synthetic"),
    _program("Synth Strings 2", "string", "synthetic"),
    _program("Choir Aahs", "vocal", "acoustic"),
    _program("Voice Oohs", "vocal", "acoustic"),
    _program("Synth Voice", "vocal", "synthetic"),
    _rejected("Orchestra Hit", "a chord of the whole orchestra, which fits no single NSynth family"),
    # Brass
    _program("Trumpet", "brass", "acoustic"),
    _program("Trombone", "brass", "acoustic"),
    _program("Tuba", "brass", "acoustic"),
    _program("Muted Trumpet", "brass", "acoustic"),
    _program("French Horn", "brass", "acoustic"),
    _program("Brass Section", "brass", "acoustic"),
    _program("Synth Brass 1", "brass", "synthetic"),
    _program("Synth Brass 2", "brass", "synthetic"),
    # Reed
    _program("Soprano Sax", "reed", "acoustic"),
    _program("Alto Sax", "reed", "acoustic"),
    _program("Tenor Sax", "reed", "acoustic"),
    _program("Baritone Sax", "reed", "acoustic"),
    _program("Oboe", "reed", "acoustic"),
    _program("English Horn", "reed", "acoustic"),
    _program("Bassoon", "reed", "acoustic"),
    _program("Clarinet", "reed", "acoustic"),
    # Pipe
    _program("Piccolo", "flute", "acoustic"),
    _program("Flute", "flute", "acoustic"),
    _program("Recorder", "flute", "acoustic"),
    _program("Pan Flute", "flute", "acoustic"),
    _program("Blown Bottle", "flute", "acoustic"),
    _program("Shakuhachi", "flute", "acoustic"),
    _program("Whistle", "flute", "acoustic"),
    _program("Ocarina", "flute", "acoustic"),
    # Synth lead
    _program("Lead 1 (square)", "synth_lead", "synthetic"),
    _program("Lead 2 (sawtooth)", "synth_lead", "synthetic"),
    _program("Lead 3 (calliope)", "synth_lead", "synthetic"),
    _program("Lead 4 (chiff)", "synth_lead", "synthetic"),
    _program("Lead 5 (charang)", "synth_lead", "synthetic"),
    _program("Lead 6 (voice)", "synth_lead", "synthetic"),
    _program("Lead 7 (fifths)", "synth_lead", "synthetic"),
    _program("Lead 8 (bass + lead)", "synth_lead", "synthetic"),
    # Synth pad
    _program("Pad 1 (new age)", "keyboard", "synthetic"),
    _program("Pad 2 (warm)", "keyboard", "synthetic"),
    _program("Pad 3 (polysynth)", "keyboard", "synthetic"),
    _program("Pad 4 (choir)", "vocal", "synthetic"),
    _program("Pad 5 (bowed)", "keyboard", "synthetic"),
    _program("Pad 6 (metallic)", "keyboard", "synthetic"),
    _program("Pad 7 (halo)", "keyboard", "synthetic"),
    _program("Pad 8 (sweep)", "keyboard", "synthetic"),
    # Synth effects
    _rejected("FX 1 (rain)", _NO_FAMILY_FX),
    _rejected("FX 2 (soundtrack)", _NO_FAMILY_FX),
    _rejected("FX 3 (crystal)", _NO_FAMILY_FX),
    _rejected("FX 4 (atmosphere)", _NO_FAMILY_FX),
    _rejected("FX 5 (brightness)", _NO_FAMILY_FX),
    _rejected("FX 6 (goblins)", _NO_FAMILY_FX),
    _rejected("FX 7 (echoes)", _NO_FAMILY_FX),
    _rejected("FX 8 (sci-fi)", _NO_FAMILY_FX),
    # Ethnic
    _program("Sitar", "guitar", "acoustic"),
    _program("Banjo", "guitar", "acoustic"),
    _program("Shamisen", "guitar", "acoustic"),
    _program("Koto", "guitar", "acoustic"),
    _program("Kalimba", "mallet", "acoustic"),
    _program("Bagpipe", "reed", "acoustic"),
    _program("Fiddle", "string", "acoustic"),
    _program("Shanai", "reed", "acoustic"),
    # Percussive
    _program("Tinkle Bell", "mallet", "acoustic"),
    _rejected("Agogo", _NO_FAMILY_DRUM),
    _program("Steel Drums", "mallet", "acoustic"),
    _rejected("Woodblock", _NO_FAMILY_DRUM),
    _rejected("Taiko Drum", _NO_FAMILY_DRUM),
    _rejected("Melodic Tom", _NO_FAMILY_DRUM),
    _rejected("Synth Drum", _NO_FAMILY_DRUM),
    _rejected("Reverse Cymbal", _NO_FAMILY_DRUM),
    # Sound effects
    _rejected("Guitar Fret Noise", _NO_FAMILY_SFX),
    _rejected("Breath Noise", _NO_FAMILY_SFX),
    _rejected("Seashore", _NO_FAMILY_SFX),
    _rejected("Bird Tweet", _NO_FAMILY_SFX),
    _rejected("Telephone Ring", _NO_FAMILY_SFX),
    _rejected("Helicopter", _NO_FAMILY_SFX),
    _rejected("Applause", _NO_FAMILY_SFX),
    _rejected("Gunshot", _NO_FAMILY_SFX),
)
assert len(GM_PROGRAMS) == 128


@dataclass(frozen=True)
class Preset:
    """A named grid of GM programs, MIDI pitches and velocities."""

    programs: tuple[int, ...]
    pitches: tuple[int, ...]
    velocities: tuple[int, ...]
    description: str

    @property
    def n_notes(self) -> int:
        return len(self.programs) * len(self.pitches) * len(self.velocities)


# Programs chosen because TimGM6mb renders them audibly and in tune at every
# pitch of their grid: the spectral peak near the expected f0 lies within 25
# cents of it (checked with tinysoundfont 0.3.7 for every pitch 24-96).
# The grid leaves out the drawbar organs (16-18), whose 16-foot stop sounds
# an octave below the key, and alto sax (65), which has no sample for pitch 64.
# It also leaves out the sawtooth lead (81) and synth voice (54), whose top
# samples are 80-95 cents flat above pitch 90. The demo covers six families
# with clearly different envelopes: plucked guitar, bowed violin, trumpet,
# flute, sawtooth lead and a polysynth pad, which becomes keyboard_synthetic_000.
PRESETS: dict[str, Preset] = {
    "demo": Preset(
        programs=(24, 40, 56, 73, 81, 90),
        pitches=tuple(range(36, 85, 4)),
        velocities=(75, 127),
        description="6 programs x pitches 36-84 every 4 x velocities 75, 127 (156 notes)",
    ),
    "grid": Preset(
        programs=(0, 4, 11, 20, 24, 27, 33, 38, 40, 53, 56, 66, 71, 73, 80, 90),
        pitches=tuple(range(24, 97)),
        velocities=(25, 50, 75, 100, 127),
        description="16 programs covering all 11 NSynth families x pitches 24-96 x velocities 25, 50, 75, 100, 127 (5840 notes)",
    ),
}


# ---------------------------------------------------------------------------
# Loading and rendering one note


def default_soundfont_path() -> Path:
    """Return the path of `TimGM6mb.sf2` inside the installed `pretty_midi` package."""
    try:
        resource = importlib.resources.files("pretty_midi") / "TimGM6mb.sf2"
    except ModuleNotFoundError as error:
        raise DataError("the default SoundFont ships with pretty_midi, which is not installed; install it (pip install pretty_midi) or pass --sf2 PATH") from error
    path = Path(str(resource))
    if not path.is_file():
        raise DataError(f"the default SoundFont {path} is missing from the pretty_midi package; reinstall pretty_midi or pass --sf2 PATH")
    return path


@dataclass
class LoadedSoundFont:
    """A parsed SoundFont file.

    `font` is a tinysoundfont `SoundFont`. Rendering never plays on it directly
    but on a clone, so that it keeps no voices between notes.
    """

    path: Path
    font: object

    def preset_name(self, program: int) -> str | None:
        """Return the SoundFont's own name for a GM program in bank 0, or None if it has none."""
        if self.font.get_preset_index(MIDI_BANK_MELODIC, program) < 0:
            return None
        return self.font.get_preset_name(MIDI_BANK_MELODIC, program)


def _tinysoundfont_module():
    # NOTE: the public `tinysoundfont.Synth` class always renders interleaved
    # stereo, so this module uses the binding underneath it, which offers mono
    # output and cloning. Checked against tinysoundfont 0.3.7.
    try:
        from tinysoundfont import _tinysoundfont
    except ImportError as error:
        raise DataError(
            "tinysoundfont is not installed; install it without its playback dependency: pip install --no-deps tinysoundfont"
        ) from error
    return _tinysoundfont


def load_soundfont(path: str | Path | None = None) -> LoadedSoundFont:
    """Parse an SF2 file, by default `default_soundfont_path()`.

    Raises DataError naming the path when the file is missing or tinysoundfont
    cannot parse it.
    """
    path = default_soundfont_path() if path is None else Path(path)
    if not path.is_file():
        raise DataError(f"SoundFont {path} not found; pass the path of an existing .sf2 file with --sf2")
    tsf = _tinysoundfont_module()
    try:
        font = tsf.SoundFont(str(path))
    except RuntimeError as error:
        raise DataError(f"SoundFont {path} could not be read ({error}); check that it is a valid SF2 file") from error
    font.set_output(tsf.OutputMode.Mono, RENDER_RATE, 0.0)
    return LoadedSoundFont(path=path, font=font)


def _check_range(value: int, low: int, high: int, label: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise RecipeError(f"{label} {value!r} is not an integer; use a whole number in {low}..{high}")
    if not low <= value <= high:
        raise RecipeError(f"{label} {value} is outside the valid range {low}..{high}")


def _validate_note(program: int, pitch: int, velocity: int) -> None:
    _check_range(program, 0, 127, "GM program")
    _check_range(pitch, 0, 127, "MIDI pitch")
    _check_range(velocity, 1, 127, "MIDI velocity")


def _preset_index(soundfont: LoadedSoundFont, program: int) -> int:
    index = soundfont.font.get_preset_index(MIDI_BANK_MELODIC, program)
    if index < 0:
        raise DataError(f"SoundFont {soundfont.path} has no preset for GM program {program} ({GM_PROGRAMS[program].name}) in bank 0; choose other programs with --programs")
    return index


def _render_unclipped(soundfont: LoadedSoundFont, program: int, pitch: int, velocity: int, gain_db: float) -> np.ndarray:
    """Render one note as float32 `[N_SAMPLES]` at 16 kHz, before clipping."""
    _validate_note(program, pitch, velocity)
    preset_index = _preset_index(soundfont, program)
    tsf = _tinysoundfont_module()

    # A clone has no voices, so no release tail of an earlier note can leak in.
    # `SoundFont.reset()` is not enough: it fades the old voices out over a few
    # milliseconds instead of silencing them.
    synth = tsf.SoundFont(soundfont.font)
    synth.set_output(tsf.OutputMode.Mono, RENDER_RATE, float(gain_db))

    held = np.zeros(round(NOTE_OFF_S * RENDER_RATE), dtype=np.float32)
    release = np.zeros(round(RELEASE_S * RENDER_RATE), dtype=np.float32)
    synth.note_on(preset_index, pitch, velocity / 127.0)
    synth.render(memoryview(held).cast("B"), False)
    synth.note_off(preset_index, pitch)
    synth.render(memoryview(release).cast("B"), False)

    audio_render_rate = np.concatenate([held, release]).astype(np.float64)
    audio = resample_poly(audio_render_rate, up=1, down=_DECIMATION)
    assert audio.shape == (N_SAMPLES,), audio.shape
    return audio.astype(np.float32)


def render_note(soundfont: LoadedSoundFont, program: int, pitch: int, velocity: int, gain_db: float = DEFAULT_GAIN_DB) -> np.ndarray:
    """Render one NSynth-style note: float32 `[64000]` at 16 kHz, clipped to [-1, 1].

    The key is held from 0 s to 3 s and released for 1 s. `velocity` (1-127)
    scales the SoundFont's gain, and `gain_db` applies to every note alike.
    The result depends only on the arguments, because every call renders on
    a fresh synthesizer. Raises RecipeError for an out-of-range value and
    DataError when the SoundFont lacks the program.
    """
    audio = _render_unclipped(soundfont, program, pitch, velocity, gain_db)
    return np.clip(audio, -1.0, 1.0)


def quantize_int16(audio: np.ndarray) -> np.ndarray:
    """Round float audio in [-1, 1] to the float32 values that 16-bit PCM can store.

    A sample becomes `clip(round(x * 32768), -32768, 32767) / 32768`, the value
    that a WAV reader returns after dividing int16 by 32768, so +1.0 becomes
    32767 / 32768. The writers in `condgen.synth.nsynth` multiply by 32768
    again and recover the same int16 exactly.
    """
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767)
    return (pcm / 32768.0).astype(np.float32)


# ---------------------------------------------------------------------------
# Labels


@dataclass(frozen=True)
class Instrument:
    """The NSynth labels of one GM program in a rendered dataset."""

    program: int
    instrument_str: str
    family: str
    source: str

    @property
    def family_id(self) -> int:
        return FAMILIES.index(self.family)

    @property
    def source_id(self) -> int:
        return SOURCES.index(self.source)


def _reject_programs_without_family(programs: Iterable[int]) -> None:
    rejected = [program for program in programs if GM_PROGRAMS[program].family is None]
    if rejected:
        reasons = "; ".join(f"{program} ({GM_PROGRAMS[program].name}) is {GM_PROGRAMS[program].rejection}" for program in rejected)
        raise RecipeError(f"GM programs without an NSynth family: {reasons}. Remove them from --programs")


def assign_instruments(programs: Iterable[int]) -> list[Instrument]:
    """Label each GM program as an NSynth instrument `<family>_<source>_<NNN>`.

    Programs are sorted and deduplicated, and NNN counts up from 000 within each
    family and source in program order. Raises RecipeError for a program outside
    0..127 or one that fits no NSynth family, naming each with its reason.
    """
    unique_programs = sorted(set(programs))
    for program in unique_programs:
        _check_range(program, 0, 127, "GM program")
    _reject_programs_without_family(unique_programs)

    counters: dict[tuple[str, str], int] = {}
    instruments = []
    for program in unique_programs:
        entry = GM_PROGRAMS[program]
        key = (entry.family, entry.source)
        number = counters.get(key, 0)
        counters[key] = number + 1
        instruments.append(Instrument(program, f"{entry.family}_{entry.source}_{number:03d}", entry.family, entry.source))
    return instruments


def _note_labels(note_id: int, instrument: Instrument, pitch: int, velocity: int) -> dict:
    return {
        "note": note_id,
        "note_str": f"{instrument.instrument_str}-{pitch:03d}-{velocity:03d}",
        "instrument": instrument.program,
        "instrument_str": instrument.instrument_str,
        "pitch": pitch,
        "velocity": velocity,
        "sample_rate": SAMPLE_RATE,
        "qualities": [0] * len(QUALITIES),
        "qualities_str": [],
        "instrument_family": instrument.family_id,
        "instrument_family_str": instrument.family,
        "instrument_source": instrument.source_id,
        "instrument_source_str": instrument.source,
    }


# ---------------------------------------------------------------------------
# Grid values from the command line


def _validated_grid(values: Iterable[int], low: int, high: int, label: str) -> list[int]:
    unique = sorted(set(values))
    if not unique:
        raise RecipeError(f"the list of {label}s is empty; give at least one value in {low}..{high}")
    for value in unique:
        _check_range(value, low, high, label)
    return unique


# ---------------------------------------------------------------------------
# The dataset


def _output_paths(out_dir: Path) -> tuple[Path, Path]:
    return out_dir / JSONWAV_NAME, out_dir / TFRECORD_NAME


@dataclass
class _RenderStats:
    """Counts that the note generator fills in while the writer consumes it."""

    written: int = 0
    silent: list[str] = field(default_factory=list)
    clipped: list[str] = field(default_factory=list)


def _render_notes(
    soundfont: LoadedSoundFont,
    instruments: Sequence[Instrument],
    pitches: Sequence[int],
    velocities: Sequence[int],
    gain_db: float,
    stats: _RenderStats,
    labels_out: list[dict],
    show_progress: bool,
) -> Iterator[dict]:
    """Yield one NSynth note dict per audible grid point, with 16-bit audio.

    Silent notes are skipped and counted in `stats`. The labels of every
    yielded note (without audio) are appended to `labels_out`.
    """
    grid = list(itertools.product(instruments, pitches, velocities))
    for instrument, pitch, velocity in tqdm(grid, desc="render", unit="note", disable=not show_progress):
        labels = _note_labels(stats.written, instrument, pitch, velocity)
        audio = _render_unclipped(soundfont, instrument.program, pitch, velocity, gain_db)
        peak = float(np.max(np.abs(audio)))
        if peak < SILENCE_PEAK:
            stats.silent.append(labels["note_str"])
            logger.warning("skipped %s: GM program %d renders silent at pitch %d (peak %.1e), probably outside the preset's key range", labels["note_str"], instrument.program, pitch, peak)
            continue
        if peak > 1.0:
            stats.clipped.append(labels["note_str"])
        labels_out.append(labels)
        stats.written += 1
        yield {**labels, "audio": quantize_int16(np.clip(audio, -1.0, 1.0))}


def _reread_jsonwav_notes(folder: Path, labels: Iterable[dict]) -> Iterator[dict]:
    """Yield the notes with their audio read back from the WAV files just written.

    Feeding the TFRecord writer from the WAVs makes both layouts hold the same
    sample values whatever rounding the WAV writer applies.
    """
    for note in labels:
        wav_path = folder / "audio" / f"{note['note_str']}.wav"
        pcm, sample_rate = soundfile.read(wav_path, dtype="int16")
        if sample_rate != SAMPLE_RATE or pcm.shape != (N_SAMPLES,):
            raise DataError(f"{wav_path} was written as {pcm.shape} samples at {sample_rate} Hz, expected ({N_SAMPLES},) at {SAMPLE_RATE} Hz")
        yield {**note, "audio": (pcm.astype(np.float32) / 32768.0)}


def render_dataset(
    out_dir: str | Path,
    sf2_path: str | Path | None = None,
    programs: Iterable[int] | None = None,
    pitches: Iterable[int] | None = None,
    velocities: Iterable[int] | None = None,
    force: bool = False,
    preset: str = "demo",
    gain_db: float = DEFAULT_GAIN_DB,
    show_progress: bool = True,
) -> Path:
    """Render a grid of notes into `out_dir/nsynth-soundfont/` and `out_dir/nsynth-soundfont.tfrecord`.

    `programs`, `pitches` and `velocities` default to those of `preset` (a key of
    `PRESETS`); they are sorted and deduplicated. Notes are ordered by program,
    pitch and velocity. Returns `out_dir`.

    Raises RecipeError for an unknown preset, an out-of-range value or a program
    without an NSynth family, DataError for a missing or unreadable SoundFont or a
    program the SoundFont lacks, and OutputExistsError when an output exists and
    `force` is false. All checks run before anything is rendered.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if preset not in PRESETS:
        raise RecipeError(f"unknown SoundFont preset {preset!r}; choose one of {', '.join(PRESETS)}")
    grid = PRESETS[preset]
    if not math.isfinite(gain_db) or not -60.0 <= gain_db <= 20.0:
        raise RecipeError(f"--gain-db {gain_db} is invalid; give a finite gain between -60 and 20 dB (default {DEFAULT_GAIN_DB})")
    program_list = _validated_grid(grid.programs if programs is None else programs, 0, 127, "GM program")
    pitch_list = _validated_grid(grid.pitches if pitches is None else pitches, 0, 127, "MIDI pitch")
    velocity_list = _validated_grid(grid.velocities if velocities is None else velocities, 1, 127, "MIDI velocity")
    instruments = assign_instruments(program_list)

    jsonwav_dir, tfrecord_path = _output_paths(out_dir)
    if not force:
        for path in (jsonwav_dir, tfrecord_path):
            if path.exists():
                raise OutputExistsError(f"{path} exists already; pass --force (force=True) to overwrite it, or choose another output folder")

    soundfont = load_soundfont(sf2_path)
    for instrument in instruments:
        _preset_index(soundfont, instrument.program)
    for instrument in instruments:
        logger.info(
            "%s = GM program %d %s (SoundFont preset %r)",
            instrument.instrument_str,
            instrument.program,
            GM_PROGRAMS[instrument.program].name,
            soundfont.preset_name(instrument.program),
        )
    n_grid = len(instruments) * len(pitch_list) * len(velocity_list)
    logger.info("rendering %d notes from %s into %s", n_grid, soundfont.path, out_dir)

    stats = _RenderStats()
    labels: list[dict] = []
    notes = _render_notes(soundfont, instruments, pitch_list, velocity_list, gain_db, stats, labels, show_progress)
    # Take the first audible note before the writer opens any file, so that a
    # grid in which every note is silent writes nothing.
    first_note = next(notes, None)
    if first_note is None:
        raise DataError(f"every one of the {n_grid} notes rendered silent with SoundFont {soundfont.path}; choose pitches inside the presets' key ranges")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonwav(jsonwav_dir, itertools.chain([first_note], notes), force=force)
    write_nsynth_tfrecord(tfrecord_path, _reread_jsonwav_notes(jsonwav_dir, labels), force=force)

    if stats.silent:
        logger.warning("skipped %d silent notes of %d: %s", len(stats.silent), n_grid, _abbreviate(stats.silent))
    if stats.clipped:
        logger.warning("clipped %d of %d notes to [-1, 1]; lower --gain-db (now %.1f dB) to avoid it: %s", len(stats.clipped), stats.written, gain_db, _abbreviate(stats.clipped))
    seconds = time.perf_counter() - started
    logger.info(
        "wrote %d notes of %d instruments in %.1f s (%.0f notes/s): %s and %s",
        stats.written,
        len(instruments),
        seconds,
        stats.written / seconds,
        jsonwav_dir,
        tfrecord_path,
    )
    return out_dir


def _abbreviate(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names) - limit} more)"
    return shown


# ---------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `condgen data soundfont` to `parser`."""
    parser.add_argument("out", type=Path, metavar="OUT", help=f"output folder; receives {JSONWAV_NAME}/ (examples.json and audio/*.wav) and {TFRECORD_NAME}")
    parser.add_argument("--sf2", type=Path, default=None, metavar="PATH", help="SF2 SoundFont to render (default: TimGM6mb.sf2 from the pretty_midi package)")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="demo",
        help="grid of programs, pitches and velocities: " + "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items()),
    )
    parser.add_argument("--programs", default=None, metavar="LIST", help="GM programs 0-127 (0-based) to render instead of the preset's, e.g. 24,40,73 or 40:47")
    parser.add_argument("--pitches", default=None, metavar="LIST", help="MIDI pitches 0-127 instead of the preset's, e.g. 36:84:4 (inclusive end) or 48,60,72")
    parser.add_argument("--velocities", default=None, metavar="LIST", help="MIDI velocities 1-127 instead of the preset's, e.g. 25,50,75,100,127")
    parser.add_argument("--gain-db", type=float, default=DEFAULT_GAIN_DB, metavar="DB", help=f"output gain in dB applied to every note alike (default {DEFAULT_GAIN_DB})")
    parser.add_argument("--force", action="store_true", help="overwrite existing output")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Run `condgen data soundfont` with parsed arguments; return the exit status."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    programs = None if args.programs is None else parse_int_list(args.programs, "--programs")
    pitches = None if args.pitches is None else parse_int_list(args.pitches, "--pitches")
    velocities = None if args.velocities is None else parse_int_list(args.velocities, "--velocities")
    with logging_redirect_tqdm():
        render_dataset(
            args.out,
            sf2_path=args.sf2,
            programs=programs,
            pitches=pitches,
            velocities=velocities,
            force=args.force,
            preset=args.preset,
            gain_db=args.gain_db,
            show_progress=not args.no_progress,
        )
    return 0
