"""Generate notes from a trained audio checkpoint: a Python API and `condgen generate`.

    from condgen.synth.generate import NoteGenerator
    generator = NoteGenerator("runs/demo_ddsp/checkpoints/latest.safetensors")
    audio = generator.generate("keyboard_acoustic_000", pitch=60, velocity=100)  # numpy [64000]
    IPython.display.Audio(audio, rate=generator.sample_rate)

Only the checkpoint is needed: it stores the recipe, the vocabularies and the
sample rate. Every audio head works the same way, because the model's
`render` turns its output into audio (a spectrogram head runs Griffin-Lim
there). Rendering options such as `griffin_lim_iters` apply only to heads
whose `render_options()` lists them, and are rejected for the others.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile
import torch
from tqdm import tqdm

from condgen.checkpoint import check_writable, write_bytes_atomic
from condgen.errors import LabelError, OutputExistsError
from condgen.model import LoadedModel, load_model
from condgen.ranges import parse_int_list

log = logging.getLogger(__name__)

_INSTRUMENT_NAME = re.compile(r"^(?P<family>[a-z]+(?:_lead)?)_(?P<source>acoustic|electronic|synthetic)_\d+$")

# Rendering options: NoteGenerator keyword -> (command-line flag, keyword of the model's `render`).
RENDER_OPTIONS = {
    "griffin_lim_iters": ("--griffin-lim-iters", "n_iter"),
    "griffin_lim_momentum": ("--griffin-lim-momentum", "momentum"),
    "griffin_lim_seed": ("--griffin-lim-seed", "seed"),
}


@dataclass(frozen=True)
class Note:
    """One note to generate. `blend_with` and `mix` blend two instruments' embeddings."""

    instrument: str
    pitch: int
    velocity: int
    blend_with: str | None = None
    mix: float = 0.0

    def file_name(self) -> str:
        """NSynth-style file name, e.g. `guitar_acoustic_001-060-100.wav`."""
        instrument = self.instrument if self.blend_with is None else f"{self.instrument}+{self.blend_with}@{self.mix:.2f}"
        return f"{instrument}-{self.pitch:03d}-{self.velocity:03d}.wav"


def note_labels(instrument: str, pitch: int, velocity: int) -> dict[str, object]:
    """Derive every NSynth label that an instrument name, a pitch and a velocity determine."""
    labels: dict[str, object] = {"instrument_str": instrument, "pitch": pitch, "velocity": velocity}
    match = _INSTRUMENT_NAME.match(instrument)
    if match:
        labels["instrument_family_str"] = match["family"]
        labels["instrument_source_str"] = match["source"]
    return labels


def check_render_values(values: dict[str, object]) -> None:
    """Raise `LabelError` naming the flag of the first rendering option that is out of range.

    `values` maps `RENDER_OPTIONS` keywords to values: iterations must be at
    least 1, the momentum within [0, 1), and the seed within [0, 2**63).
    """
    for name, value in values.items():
        flag = RENDER_OPTIONS[name][0]
        if name == "griffin_lim_momentum":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise LabelError(f"{flag} {value} is outside [0, 1); 0 gives plain Griffin-Lim, and values near 1 (0.99) converge faster")
        elif isinstance(value, bool) or not isinstance(value, int):
            raise LabelError(f"{flag} {value!r} is not an integer")
        elif name == "griffin_lim_iters" and value < 1:
            raise LabelError(f"{flag} {value} must be at least 1")
        elif name == "griffin_lim_seed" and not 0 <= value < 2**63:
            raise LabelError(f"{flag} {value} is outside [0, 2**63)")


class NoteGenerator:
    """Generate notes from (instrument, pitch, velocity) with a trained audio model.

    `griffin_lim_iters`, `griffin_lim_momentum` and `griffin_lim_seed`
    override the checkpoint's rendering defaults. They apply only to a head
    that renders with Griffin-Lim, and raise `LabelError` naming the option,
    the checkpoint's head and the reason for any other head.
    """

    def __init__(
        self,
        checkpoint: str | Path | LoadedModel,
        device: str | torch.device = "cpu",
        *,
        griffin_lim_iters: int | None = None,
        griffin_lim_momentum: float | None = None,
        griffin_lim_seed: int | None = None,
    ):
        requested = {
            "griffin_lim_iters": griffin_lim_iters,
            "griffin_lim_momentum": griffin_lim_momentum,
            "griffin_lim_seed": griffin_lim_seed,
        }
        requested = {name: value for name, value in requested.items() if value is not None}
        check_render_values(requested)
        self.loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint, device=device, expect_domain="nsynth")
        self.model = self.loaded.model
        self.device = next(self.model.parameters()).device
        head_meta = self.loaded.meta.get("head_meta", {})
        self.sample_rate: int = head_meta.get("sample_rate", 16000)
        self.n_samples: int = head_meta.get("n_samples", 64000)
        self.render_options = self._accepted_render_options(requested)

    def _accepted_render_options(self, requested: dict[str, object]) -> dict[str, object]:
        """Map the requested options to `render` keywords, or raise `LabelError` if the model's head does not use one."""
        accepted = self.model.render_options()
        rejected = [RENDER_OPTIONS[name][0] for name in requested if RENDER_OPTIONS[name][1] not in accepted]
        if rejected:
            flags = ", ".join(rejected)
            verb = "does" if len(rejected) == 1 else "do"
            raise LabelError(
                f"{flags} {verb} not apply to {self.loaded.path}: its head {self.loaded.recipe.head!r} "
                f"{self.model.describe_rendering()}; leave out {flags}"
            )
        return {RENDER_OPTIONS[name][1]: value for name, value in requested.items()}

    @property
    def vocabularies(self):
        return self.model.conditioner.vocabularies

    @property
    def instruments(self) -> list[str]:
        vocabulary = self.vocabularies.get("instrument_str")
        return list(vocabulary.values) if vocabulary is not None else []

    def _encode(self, notes: Sequence[Note]) -> dict[str, torch.Tensor]:
        conditioner = self.model.conditioner
        rows = [note_labels(note.instrument, note.pitch, note.velocity) for note in notes]
        for name in conditioner.label_names:
            if any(name not in row for row in rows):
                raise LabelError(f"the model is conditioned on {name!r}, which cannot be derived from the instrument name {notes[0].instrument!r}")
        values = {name: [row[name] for row in rows] for name in conditioner.label_names}
        inputs = conditioner.encode_values(values, device=self.device)
        blended = [i for i, note in enumerate(notes) if note.blend_with is not None]
        if blended:
            if "instrument_str" not in conditioner.tables:
                raise LabelError("blending needs a model conditioned on instrument_str")
            weights = torch.nn.functional.one_hot(inputs["instrument_str"], len(self.vocabularies["instrument_str"])).float()
            for i in blended:
                weights[i] = conditioner.mix("instrument_str", notes[i].instrument, notes[i].blend_with, notes[i].mix)[0]
            inputs["instrument_str"] = weights.to(self.device)
        return inputs

    @torch.no_grad()
    def generate_batch(self, notes: Sequence[Note], seed: int | None = 0) -> torch.Tensor:
        """Generate audio `[len(notes), n_samples]` (float32, CPU) for a list of `Note`s, through the model's `render`."""
        if not notes:
            raise LabelError("no notes to generate; pass at least one Note(instrument, pitch, velocity)")
        inputs = self._encode(notes)
        generator_state = torch.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed)
        try:
            audio = self.model.render(self.model(inputs), **self.render_options)
        finally:
            if seed is not None:
                torch.set_rng_state(generator_state)
        return audio.float().cpu()

    def generate(self, instrument: str, pitch: int, velocity: int, blend_with: str | None = None, mix: float = 0.0, seed: int | None = 0) -> np.ndarray:
        """Generate one note as a float32 numpy array `[n_samples]`, ready for `IPython.display.Audio(audio, rate=sample_rate)`."""
        note = Note(instrument, int(pitch), int(velocity), blend_with, mix)
        return self.generate_batch([note], seed=seed)[0].numpy()


def wav_bytes(audio: np.ndarray | torch.Tensor, sample_rate: int) -> bytes:
    """Encode mono audio as 16-bit PCM WAV bytes, clipping to full scale so nothing wraps around."""
    samples = np.asarray(audio, dtype=np.float64).reshape(-1)
    samples = np.nan_to_num(samples, nan=0.0)
    pcm = np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm, sample_rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def write_wav(path: str | Path, audio: np.ndarray | torch.Tensor, sample_rate: int, force: bool = False) -> None:
    """Write a 16-bit PCM WAV atomically; refuse to overwrite without `force`."""
    check_writable(Path(path), force)
    write_bytes_atomic(Path(path), wav_bytes(audio, sample_rate))


def parse_int_values(text: str, what: str, low: int, high: int) -> list[int]:
    """Parse `60`, `48,60,72` or an inclusive range `48:72:12`, and check each value against `[low, high]`."""
    values = parse_int_list(text, what)
    for value in values:
        if not low <= value <= high:
            raise LabelError(f"{what} {value} is outside the valid range {low}-{high}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint file, e.g. runs/nsynth_ddsp/checkpoints/latest.safetensors")
    parser.add_argument("--instrument", required=True, help="instrument name from the training data, e.g. guitar_acoustic_001")
    parser.add_argument("--pitch", required=True, help="MIDI pitch: 60, a list 48,60,72 or an inclusive range 48:72:12")
    parser.add_argument("--velocity", required=True, help="MIDI velocity: 100, a list 50,100 or a range 25:127:25")
    parser.add_argument("--blend-with", metavar="INSTRUMENT", help="second instrument whose embedding is blended with --instrument")
    parser.add_argument("--mix", type=float, default=None, help="share of --blend-with in the blend, from 0 to 1 (default 0.5)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="a .wav file for a single note, else a folder that receives one file per note")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise generator (default 0)")
    parser.add_argument("--griffin-lim-iters", type=int, metavar="N", help="Griffin-Lim iterations for a spectrogram checkpoint (default: its model.griffin_lim_iters)")
    parser.add_argument("--griffin-lim-momentum", type=float, metavar="X", help="Griffin-Lim momentum in [0, 1) for a spectrogram checkpoint; 0 is plain Griffin-Lim (default: its model.griffin_lim_momentum)")
    parser.add_argument("--griffin-lim-seed", type=int, metavar="N", help="seed of the random initial phase of Griffin-Lim (default: the checkpoint's model.griffin_lim_seed)")
    parser.add_argument("--batch-size", type=int, default=16, help="notes generated per forward pass (default 16)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--force", action="store_true", help="overwrite existing WAV files")


def run(args: argparse.Namespace) -> int:
    if args.blend_with is None and args.mix is not None:
        raise LabelError(f"--mix {args.mix} needs --blend-with INSTRUMENT; without it the note is --instrument alone")
    if args.mix is None:
        args.mix = 0.5
    if not 0.0 <= args.mix <= 1.0 or math.isnan(args.mix):
        raise LabelError(f"--mix {args.mix} is outside [0, 1]; 0 gives --instrument alone and 1 gives --blend-with alone")
    if args.batch_size < 1:
        raise LabelError(f"--batch-size {args.batch_size} must be at least 1")
    pitches = parse_int_values(args.pitch, "pitch", 0, 127)
    velocities = parse_int_values(args.velocity, "velocity", 1, 127)
    notes = [Note(args.instrument, p, v, args.blend_with, args.mix if args.blend_with else 0.0) for p in pitches for v in velocities]

    if args.output.suffix and args.output.suffix.lower() != ".wav":
        raise LabelError(f"-o {args.output} has the suffix {args.output.suffix!r}; give a .wav file, or a folder without a suffix for several notes")
    single_file = len(notes) == 1 and args.output.suffix.lower() == ".wav"
    if single_file:
        targets = [args.output]
    else:
        if args.output.suffix.lower() == ".wav":
            raise LabelError(f"-o {args.output} is a .wav file but {len(notes)} notes were asked for; pass a folder instead")
        targets = [args.output / note.file_name() for note in notes]
    from condgen.trainer import pick_device

    render_values = {name: getattr(args, name) for name in RENDER_OPTIONS if getattr(args, name) is not None}
    generator = NoteGenerator(args.checkpoint, device=pick_device(args.device, option="--device"), **render_values)
    # Validate every label before generating anything, so bad input leaves no partial output.
    generator._encode(notes)
    existing = [str(path) for path in targets if path.exists()]
    if existing and not args.force:
        raise OutputExistsError(f"{len(existing)} output file(s) exist already, e.g. {existing[0]}; pass --force to overwrite them")
    # Every note goes to a hidden file first. The files are renamed into place
    # only when all notes are written, so a failure (a full disk, say) leaves
    # no partial set and existing files as they were.
    staged: list[tuple[Path, Path]] = []
    try:
        for start in tqdm(range(0, len(notes), args.batch_size), desc="generate", unit="batch", disable=len(notes) <= args.batch_size):
            batch = notes[start : start + args.batch_size]
            audio = generator.generate_batch(batch, seed=args.seed + start)
            silent = int((audio.abs().amax(dim=1) == 0).sum())
            if silent:
                log.warning("%d of %d notes in this batch are exact silence; the checkpoint may be trained too little to make sound", silent, len(batch))
            for target, samples in zip(targets[start : start + args.batch_size], audio):
                hidden = target.with_name(f".{target.name}.{os.getpid()}.part")
                write_wav(hidden, samples.numpy(), generator.sample_rate, force=True)
                staged.append((hidden, target))
        for hidden, target in staged:
            os.replace(hidden, target)
    except BaseException:
        for hidden, _ in staged:
            hidden.unlink(missing_ok=True)
        raise
    log.info("wrote %d WAV file(s) at %d Hz to %s", len(notes), generator.sample_rate, args.output)
    return 0
