"""Compare the audio heads (ddsp, waveform, spectrogram) under one wall-clock training budget.

Stages, each re-runnable alone with `--stage`:

1. data: records where the real NSynth notes are ("nsynth": every note is a
   training note), and renders a SoundFont grid ("grid") with
   `condgen data soundfont`. The grid holds out some (instrument, pitch)
   pairs: each instrument loses about `--holdout-share` of its pitches, never
   its lowest or highest, and every held-out pitch stays in training for at
   least one other instrument. The model has then seen the instrument and the
   pitch, but not the pair. Training and held-out notes become two json/wav
   folders.
2. train: runs `condgen train recipes/nsynth_<head>.toml` once per head and
   dataset, one after another, each stopped by `train.max_minutes`. It
   records the wall time of the process and the step of the last checkpoint.
3. eval: per head and dataset, measures parameters, generation time per note
   (batch 1 and 16), the mean multi-scale spectral distance to the real notes,
   and pitch accuracy with pYIN. It prints Markdown tables, writes CSV and
   JSON, and plots log-magnitude spectrograms of three held-out notes (three
   training notes for "nsynth").

Everything is written under `--out`. Outputs that exist are kept unless
`--force` is given.

Usage (the full comparison, about 6 x 15 minutes of training plus evaluation):
    python bench/heads_compare.py --nsynth-root /data/nsynth --minutes 15 --threads 2 --docs

A quick check of the whole pipeline:
    python bench/heads_compare.py --nsynth-root /data/nsynth --minutes 0.2 \
        --programs 0,40 --pitches 48:56:2 --max-notes 4 --out bench_out/heads_tiny
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from condgen.checkpoint import check_writable, load_checkpoint, write_bytes_atomic
from condgen.errors import CondgenError, DataError, OutputExistsError
from condgen.synth.generate import Note, NoteGenerator
from condgen.synth.nsynth import QUALITIES, SAMPLE_RATE, NSynthNotes, write_jsonwav

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nsynth_results import distances  # noqa: E402  (a sibling script, not a package)

log = logging.getLogger("bench.heads_compare")

REPO_ROOT = Path(__file__).resolve().parents[1]
HEADS = ("ddsp", "waveform", "spectrogram")
DATASETS = ("nsynth", "grid")
# One program from each of 8 NSynth families: piano, vibraphone, nylon guitar, finger bass,
# violin, trumpet, tenor sax, flute.
DEFAULT_PROGRAMS = "0,11,24,33,40,56,66,73"
DEFAULT_PITCHES = "48:72:2"
GENERATION_BATCH = 16
# pYIN analyses the first 2 s only: the key is held until 3 s, and pYIN is slow.
PITCH_SECONDS = 2.0
PYIN_FMIN_HZ = 30.0
PYIN_FMAX_HZ = 4000.0
PITCH_TOLERANCE_CENTS = 50.0
PLOT_NOTES = 3


# ---------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("data", "train", "eval", "all"), default="all", help="stage to run (default all)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/heads"), help="output folder (default bench_out/heads)")
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS), help="heads to compare (default all). A head without recipes/nsynth_<head>.toml is skipped with a warning")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), help="datasets to use (default both)")
    parser.add_argument("--nsynth-root", type=Path, default=Path("data/nsynth"), help="folder that contains the real NSynth notes (default data/nsynth)")
    parser.add_argument("--nsynth-paths", nargs="+", default=["nsynth-mini", "named-wavs"], help="entries of --nsynth-root to train on, as data.path of recipes/nsynth_ddsp.toml")
    parser.add_argument("--programs", default=DEFAULT_PROGRAMS, help=f"GM programs of the grid, as for `condgen data soundfont` (default {DEFAULT_PROGRAMS})")
    parser.add_argument("--pitches", default=DEFAULT_PITCHES, help=f"MIDI pitches of the grid, inclusive range or list (default {DEFAULT_PITCHES})")
    parser.add_argument("--velocities", default="100", help="MIDI velocities of the grid (default 100)")
    parser.add_argument("--sf2", type=Path, help="SoundFont for the grid (default: the one `condgen data soundfont` uses)")
    parser.add_argument("--holdout-share", type=float, default=0.15, help="share of each instrument's pitches held out of the grid's training notes (default 0.15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out pair choice (default 0)")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per head and dataset in minutes, as train.max_minutes (default 15)")
    parser.add_argument("--steps", type=int, default=1_000_000, help="train.steps, set high so that --minutes stops training (default 1000000)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and generation (default 2)")
    parser.add_argument("--max-notes", type=int, default=0, help="evaluate at most this many notes per note set, evenly spaced (default 0: all)")
    parser.add_argument("--timing-runs", type=int, default=5, help="timed generation runs per batch size; the median is reported (default 5)")
    parser.add_argument("--docs", action="store_true", help="save the spectrogram plots as docs/img/heads_<dataset>.png instead of under --out")
    parser.add_argument("--force", action="store_true", help="replace outputs of earlier runs: data folders, training runs, result files and plots")
    args = parser.parse_args(argv)

    if not 0.0 < args.holdout_share < 1.0:
        parser.error(f"--holdout-share {args.holdout_share} must be within (0, 1), e.g. 0.15")
    if args.minutes <= 0:
        parser.error(f"--minutes {args.minutes} must be positive")
    for name in ("steps", "threads", "timing_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)} must be at least 1")
    if args.max_notes < 0:
        parser.error(f"--max-notes {args.max_notes} must be 0 (all notes) or more")
    return args


def condgen_command(*arguments: str) -> list[str]:
    """Return the command line that runs `condgen ARGUMENTS` with this interpreter."""
    return [sys.executable, "-m", "condgen.cli", *arguments]


def write_text(path: Path, text: str, force: bool) -> None:
    check_writable(path, force)
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path: Path, value: Any, force: bool) -> None:
    write_text(path, json.dumps(value, indent=2) + "\n", force)


def read_json(path: Path, missing_hint: str) -> Any:
    if not path.is_file():
        raise DataError(f"{path} not found; {missing_hint}")
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------
# Stage 1: data


def choose_heldout_pairs(pitches_by_instrument: dict[str, list[int]], share: float, seed: int) -> list[tuple[str, int]]:
    """Choose the (instrument, pitch) pairs to hold out of training.

    Each instrument loses `round(share * n_pitches)` of its pitches, at least
    one, chosen at random with `seed` among all but its lowest and highest
    pitch. Pitches held out least often so far come first, so instruments
    lose different pitches. A pitch is held out only while another instrument
    keeps it in training. An instrument with fewer than three pitches, or
    whose interior pitches are all needed elsewhere, loses fewer pitches.
    """
    rng = random.Random(seed)
    training_instruments = Counter(pitch for pitches in pitches_by_instrument.values() for pitch in set(pitches))
    times_held_out: Counter[int] = Counter()
    pairs: list[tuple[str, int]] = []
    for instrument in sorted(pitches_by_instrument):
        pitches = sorted(set(pitches_by_instrument[instrument]))
        n_requested = max(1, round(share * len(pitches)))
        candidates = pitches[1:-1]
        rng.shuffle(candidates)
        candidates.sort(key=lambda pitch: times_held_out[pitch])  # a stable sort, so ties keep the random order
        chosen: list[int] = []
        for pitch in candidates:
            if len(chosen) == n_requested:
                break
            if training_instruments[pitch] < 2:
                continue
            chosen.append(pitch)
            training_instruments[pitch] -= 1
            times_held_out[pitch] += 1
        if len(chosen) < n_requested:
            log.warning(
                "%s: held out %d of %d requested pitches, because its other pitches are its lowest, its highest, "
                "or in training for no other instrument",
                instrument,
                len(chosen),
                n_requested,
            )
        pairs.extend((instrument, pitch) for pitch in sorted(chosen))
    return pairs


def official_row(item: dict[str, Any]) -> dict[str, Any]:
    """Turn an `NSynthNotes` item of a json/wav folder into a note that `write_jsonwav` accepts."""
    row = dict(item)
    row["audio"] = item["audio"].numpy()
    row["sample_rate"] = SAMPLE_RATE
    row["qualities_str"] = [name for name, flag in zip(QUALITIES, item["qualities"]) if flag]
    return row


def prepare_nsynth(args: argparse.Namespace, record_path: Path) -> None:
    root = args.nsynth_root.resolve()
    notes = NSynthNotes([root / entry for entry in args.nsynth_paths])
    record = {"root": str(root), "train": list(args.nsynth_paths), "heldout": [], "n_train": len(notes), "n_heldout": 0}
    write_json(record_path, record, args.force)
    log.info("nsynth: %d training notes in %s", len(notes), ", ".join(args.nsynth_paths))


def prepare_grid(args: argparse.Namespace, record_path: Path) -> None:
    folder = (args.out / "data" / "grid").resolve()
    if folder.exists() and not args.force:
        raise OutputExistsError(f"{folder} exists already; pass --force to render the grid again")
    render_dir = folder / "render"
    command = condgen_command(
        "data", "soundfont", str(render_dir), "--programs", args.programs, "--pitches", args.pitches, "--velocities", args.velocities, "--force", "--no-progress"
    )
    if args.sf2 is not None:
        command += ["--sf2", str(args.sf2)]
    log.info("render the grid: %s", " ".join(command))
    subprocess.run(command, check=True)

    rendered = NSynthNotes(render_dir / "nsynth-soundfont")
    pitches_by_instrument: dict[str, list[int]] = {}
    for labels in rendered.metadata:
        pitches_by_instrument.setdefault(labels["instrument_str"], []).append(labels["pitch"])
    if len(pitches_by_instrument) < 2:
        raise DataError(f"the grid has {len(pitches_by_instrument)} instrument(s); held-out pairs need at least 2, so give at least 2 programs with --programs")
    heldout = set(choose_heldout_pairs(pitches_by_instrument, args.holdout_share, args.seed))
    if not heldout:
        raise DataError(f"no (instrument, pitch) pair of the grid can be held out; give at least 3 pitches per instrument with --pitches (now {args.pitches})")

    def is_heldout(index: int) -> bool:
        labels = rendered.metadata[index]
        return (labels["instrument_str"], labels["pitch"]) in heldout

    indices = range(len(rendered))
    n_train = write_jsonwav(folder / "train", (official_row(rendered[i]) for i in indices if not is_heldout(i)), force=args.force)
    n_heldout = write_jsonwav(folder / "heldout", (official_row(rendered[i]) for i in indices if is_heldout(i)), force=args.force)
    record = {
        "root": str(folder),
        "train": ["train"],
        "heldout": ["heldout"],
        "n_train": n_train,
        "n_heldout": n_heldout,
        "heldout_pairs": sorted([instrument, pitch] for instrument, pitch in heldout),
        "programs": args.programs,
        "pitches": args.pitches,
        "velocities": args.velocities,
        "holdout_share": args.holdout_share,
        "seed": args.seed,
    }
    write_json(record_path, record, args.force)
    log.info("grid: %d training notes, %d held-out notes (%d pairs)", n_train, n_heldout, len(heldout))


def stage_data(args: argparse.Namespace) -> None:
    records = {dataset: args.out / "data" / f"{dataset}.json" for dataset in args.datasets}
    for path in records.values():
        check_writable(path, args.force)
    for dataset, path in records.items():
        if dataset == "nsynth":
            prepare_nsynth(args, path)
        else:
            prepare_grid(args, path)


def load_dataset_record(out: Path, dataset: str) -> dict[str, Any]:
    return read_json(out / "data" / f"{dataset}.json", f"run `--stage data --datasets {dataset}` first")


# ---------------------------------------------------------------------------
# Stage 2: train


def available_heads(heads: list[str]) -> list[str]:
    """Return the heads whose recipe exists, warning about the others."""
    found = []
    for head in heads:
        recipe = REPO_ROOT / "recipes" / f"nsynth_{head}.toml"
        if recipe.is_file():
            found.append(head)
        else:
            log.warning("skipping head %s: %s not found", head, recipe)
    return found


def run_name(dataset: str, head: str) -> str:
    return f"{dataset}_{head}"


def train_one(args: argparse.Namespace, dataset: str, head: str, data_record: dict[str, Any]) -> dict[str, Any]:
    """Train one head on one dataset in a subprocess and return its record: command, exit code, wall time and step."""
    run_dir = (args.out / "runs" / run_name(dataset, head)).resolve()
    # train.sample_every = train.steps keeps TensorBoard audio (Griffin-Lim for
    # the spectrogram head) out of the budget, because training stops at
    # --minutes long before train.steps.
    # NOTE: the recipes' cosine schedule decays over train.steps, so with the
    # default --steps the learning rate stays at its peak after warm-up and is
    # never annealed within the budget.
    command = condgen_command(
        "train",
        str(REPO_ROOT / "recipes" / f"nsynth_{head}.toml"),
        f"data.root={data_record['root']}",
        f"data.path={json.dumps(data_record['train'])}",
        f"run_dir={run_dir}",
        f"train.max_minutes={args.minutes}",
        f"train.steps={args.steps}",
        f"train.sample_every={args.steps}",
        f"train.threads={args.threads}",
        "--force",
        "--no-progress",
    )

    log.info("train %s on %s for %g min: %s", head, dataset, args.minutes, " ".join(command))
    started = time.monotonic()
    completed = subprocess.run(command)
    wall_s = time.monotonic() - started

    checkpoint = run_dir / "checkpoints" / "latest.safetensors"
    step = load_checkpoint(checkpoint, with_train_state=False).meta["step"] if checkpoint.is_file() else None
    if completed.returncode != 0:
        log.error("training %s on %s failed with exit status %d; see %s", head, dataset, completed.returncode, run_dir / "train.log")
    return {
        "dataset": dataset,
        "head": head,
        "command": command,
        "exit_code": completed.returncode,
        "wall_s": round(wall_s, 1),
        "step": step,
        "minutes": args.minutes,
        "threads": args.threads,
        "checkpoint": str(checkpoint),
    }


def stage_train(args: argparse.Namespace, heads: list[str]) -> bool:
    """Train every head on every dataset and return whether all runs succeeded."""
    jobs = []
    for dataset in args.datasets:
        data_record = load_dataset_record(args.out, dataset)
        for head in heads:
            record_path = args.out / "train" / f"{run_name(dataset, head)}.json"
            latest = args.out / "runs" / run_name(dataset, head) / "checkpoints" / "latest.safetensors"
            if latest.exists() and not args.force:
                raise OutputExistsError(f"{latest} exists already; pass --force to train {head} on {dataset} again")
            check_writable(record_path, args.force)
            jobs.append((dataset, head, data_record, record_path))

    all_succeeded = True
    for dataset, head, data_record, record_path in jobs:
        record = train_one(args, dataset, head, data_record)
        write_json(record_path, record, args.force)
        all_succeeded = all_succeeded and record["exit_code"] == 0
        log.info("%s on %s: step %s in %.0f s", head, dataset, record["step"], record["wall_s"])
    return all_succeeded


# ---------------------------------------------------------------------------
# Stage 3: eval


@dataclass
class NoteSet:
    """Real notes and their labels: `audio` is `[N, n_samples]` float32."""

    name: str
    notes: list[Note]
    audio: torch.Tensor


def evenly_spaced(n_items: int, max_items: int) -> list[int]:
    """Return indices of at most `max_items` items spread over `n_items` (0: all)."""
    if max_items == 0 or n_items <= max_items:
        return list(range(n_items))
    return sorted({int(round(position)) for position in np.linspace(0, n_items - 1, max_items)})


def load_note_set(name: str, root: str, entries: list[str], max_notes: int) -> NoteSet:
    dataset = NSynthNotes([Path(root) / entry for entry in entries])
    items = [dataset[i] for i in evenly_spaced(len(dataset), max_notes)]
    notes = [Note(item["instrument_str"], item["pitch"], item["velocity"]) for item in items]
    return NoteSet(name, notes, torch.stack([item["audio"] for item in items]))


def generate_notes(generator: NoteGenerator, notes: list[Note]) -> torch.Tensor:
    """Generate `[len(notes), n_samples]` in batches, seeded by batch position as `condgen generate` does."""
    batches = []
    for start in tqdm(range(0, len(notes), GENERATION_BATCH), desc="generate", unit="batch", leave=False):
        batches.append(generator.generate_batch(notes[start : start + GENERATION_BATCH], seed=start))
    return torch.cat(batches)


def time_generation(generator: NoteGenerator, notes: list[Note], batch_size: int, runs: int) -> float:
    """Return the median seconds per note of `runs` calls of `generate_batch` on `batch_size` notes, after one warm-up call."""
    batch = [notes[i % len(notes)] for i in range(batch_size)]
    generator.generate_batch(batch)
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        generator.generate_batch(batch)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) / batch_size


def estimate_pitch_midi(audio: torch.Tensor, sample_rate: int) -> np.ndarray:
    """Estimate each note's pitch `[N]` in MIDI units with pYIN on its first `PITCH_SECONDS`.

    The estimate is the median f0 over the voiced frames, and NaN for a note
    with no voiced frame. pYIN runs on batches of notes at once.
    """
    import librosa

    head = audio[:, : int(PITCH_SECONDS * sample_rate)].double().numpy()
    head = np.nan_to_num(head)
    estimates = []
    for start in tqdm(range(0, len(head), GENERATION_BATCH), desc="pyin", unit="batch", leave=False):
        f0_hz, voiced, _ = librosa.pyin(head[start : start + GENERATION_BATCH], fmin=PYIN_FMIN_HZ, fmax=PYIN_FMAX_HZ, sr=sample_rate)
        voiced_f0_hz = np.where(voiced & np.isfinite(f0_hz), f0_hz, np.nan)
        all_unvoiced = np.all(np.isnan(voiced_f0_hz), axis=-1)
        median_hz = np.nanmedian(np.where(all_unvoiced[:, None], 1.0, voiced_f0_hz), axis=-1)
        estimates.append(np.where(all_unvoiced, np.nan, librosa.hz_to_midi(median_hz)))
    return np.concatenate(estimates)


def pitch_scores(estimated_midi: np.ndarray, target_midi: np.ndarray) -> dict[str, float | None]:
    """Score pitch estimates against targets.

    `accuracy` is the share of all notes within `PITCH_TOLERANCE_CENTS`, where
    an unvoiced note counts as wrong. `median_abs_cents` is taken over the
    voiced notes only, and `unvoiced_share` is the share with no voiced frame.
    """
    cents = 100.0 * (estimated_midi - target_midi)
    voiced = np.isfinite(cents)
    accuracy = float(np.mean(voiced & (np.abs(np.nan_to_num(cents, nan=np.inf)) <= PITCH_TOLERANCE_CENTS)))
    return {
        "pitch_accuracy": accuracy,
        "median_abs_cents": float(np.median(np.abs(cents[voiced]))) if voiced.any() else None,
        "unvoiced_share": float(np.mean(~voiced)),
    }


def spectral_distances(generated: torch.Tensor, real: torch.Tensor) -> np.ndarray:
    """Per-note multi-scale spectral distance `[N]`, computed in batches to bound memory."""
    step = GENERATION_BATCH
    return np.concatenate([distances(generated[i : i + step], real[i : i + step]) for i in range(0, len(real), step)])


def log_spectrogram_db(audio: np.ndarray, reference: float) -> np.ndarray:
    """Log-magnitude STFT `[n_bins, n_frames]` in dB relative to `reference` (Hann, 1024 samples, hop 128)."""
    import librosa

    magnitude = np.abs(librosa.stft(audio.astype(np.float32), n_fft=1024, hop_length=128))
    return librosa.amplitude_to_db(magnitude, ref=reference, amin=1e-5, top_db=None)


def plot_spectrogram_rows(path: Path, titles: list[str], columns: dict[str, np.ndarray], sample_rate: int, force: bool) -> None:
    """Save one row per note and one column per system (`columns` maps a system to audio `[n_rows, n_samples]`).

    Every row is scaled in dB relative to the peak of the row's first column,
    the real note, so the columns of a row share one colour scale.
    """
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(columns)
    figure, axes = plt.subplots(len(titles), len(names), figsize=(3.2 * len(names), 2.4 * len(titles)), squeeze=False)
    for row, title in enumerate(titles):
        real = columns[names[0]][row]
        reference = float(np.abs(librosa.stft(real.astype(np.float32), n_fft=1024, hop_length=128)).max()) or 1.0
        for column, name in enumerate(names):
            audio = columns[name][row]
            axis = axes[row, column]
            axis.imshow(
                log_spectrogram_db(audio, reference),
                origin="lower",
                aspect="auto",
                vmin=-80.0,
                vmax=0.0,
                extent=(0.0, len(audio) / sample_rate, 0.0, sample_rate / 2000),
                cmap="magma",
            )
            if row == 0:
                axis.set_title(name, fontsize=10)
            if column == 0:
                axis.set_ylabel(f"{title}\nkHz", fontsize=8)
            else:
                axis.set_yticklabels([])
            if row == len(titles) - 1:
                axis.set_xlabel("seconds")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    check_writable(path, force)
    write_bytes_atomic(path, buffer.getvalue())
    log.info("spectrogram plot: %s", path)


@dataclass
class EvalOutputs:
    cost_rows: list[dict[str, Any]]
    quality_rows: list[dict[str, Any]]
    per_note_rows: list[dict[str, Any]]


def evaluate_dataset(args: argparse.Namespace, dataset: str, heads: list[str], outputs: EvalOutputs, plot_path: Path) -> None:
    """Evaluate every trained head on one dataset, appending rows to `outputs` and saving the plot."""
    data_record = load_dataset_record(args.out, dataset)
    note_sets = [load_note_set("train", data_record["root"], data_record["train"], args.max_notes)]
    if data_record["heldout"]:
        note_sets.append(load_note_set("held-out", data_record["root"], data_record["heldout"], args.max_notes))
    timing_notes = note_sets[0].notes
    generated: dict[str, dict[str, torch.Tensor]] = {}

    for note_set in note_sets:
        estimated = estimate_pitch_midi(note_set.audio, SAMPLE_RATE)
        add_quality_rows(outputs, dataset, "real notes", note_set, estimated, None)

    for head in heads:
        checkpoint = args.out / "runs" / run_name(dataset, head) / "checkpoints" / "latest.safetensors"
        if not checkpoint.is_file():
            log.warning("skipping %s on %s: %s not found; run --stage train first", head, dataset, checkpoint)
            continue
        train_record_path = args.out / "train" / f"{run_name(dataset, head)}.json"
        train_record = json.loads(train_record_path.read_text()) if train_record_path.is_file() else {}
        generator = NoteGenerator(checkpoint)
        log.info("evaluate %s on %s (step %d)", head, dataset, generator.loaded.meta["step"])
        outputs.cost_rows.append(
            {
                "dataset": dataset,
                "head": head,
                "params_m": sum(p.numel() for p in generator.model.parameters()) / 1e6,
                "train_wall_s": train_record.get("wall_s"),
                "steps": generator.loaded.meta["step"],
                "gen_s_per_note_batch1": time_generation(generator, timing_notes, 1, args.timing_runs),
                "gen_s_per_note_batch16": time_generation(generator, timing_notes, 16, args.timing_runs),
            }
        )
        generated[head] = {}
        for note_set in note_sets:
            audio = generate_notes(generator, note_set.notes)
            generated[head][note_set.name] = audio
            mss = spectral_distances(audio, note_set.audio)
            add_quality_rows(outputs, dataset, head, note_set, estimate_pitch_midi(audio, SAMPLE_RATE), mss)

    plot_set = note_sets[-1]
    rows = evenly_spaced(len(plot_set.notes), PLOT_NOTES)
    columns = {"real": plot_set.audio[rows].numpy()}
    columns.update({head: audio[plot_set.name][rows].numpy() for head, audio in generated.items()})
    titles = [plot_set.notes[i].file_name()[:-4] + ("" if plot_set.name == "train" else " (held out)") for i in rows]
    plot_spectrogram_rows(plot_path, titles, columns, SAMPLE_RATE, args.force)


def add_quality_rows(outputs: EvalOutputs, dataset: str, system: str, note_set: NoteSet, estimated_midi: np.ndarray, mss: np.ndarray | None) -> None:
    target = np.array([note.pitch for note in note_set.notes], dtype=np.float64)
    row = {"dataset": dataset, "system": system, "note_set": note_set.name, "n_notes": len(note_set.notes)}
    row["mss_mean"] = float(mss.mean()) if mss is not None else None
    row.update(pitch_scores(estimated_midi, target))
    outputs.quality_rows.append(row)
    for i, note in enumerate(note_set.notes):
        outputs.per_note_rows.append(
            {
                "dataset": dataset,
                "system": system,
                "note_set": note_set.name,
                "note": note.file_name()[:-4],
                "pitch": note.pitch,
                "estimated_midi": None if np.isnan(estimated_midi[i]) else round(float(estimated_midi[i]), 3),
                "cents_error": None if np.isnan(estimated_midi[i]) else round(100.0 * float(estimated_midi[i] - target[i]), 1),
                "mss": None if mss is None else round(float(mss[i]), 4),
            }
        )


def format_value(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def markdown_tables(dataset: str, outputs: EvalOutputs) -> str:
    """Render the cost and quality tables of one dataset as Markdown."""
    lines = [f"### {dataset}", ""]
    lines += [
        "| head | parameters (M) | training wall time (s) | steps | generation s/note, batch 1 | generation s/note, batch 16 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in (row for row in outputs.cost_rows if row["dataset"] == dataset):
        lines.append(
            f"| {row['head']} | {format_value(row['params_m'], 2)} | {format_value(row['train_wall_s'], 0)} | {format_value(row['steps'], 0)} "
            f"| {format_value(row['gen_s_per_note_batch1'], 3)} | {format_value(row['gen_s_per_note_batch16'], 3)} |"
        )
    lines += [
        "",
        "| system | notes | n | mean MSS distance | pitch within 50 cents | median abs. error (cents) | no voiced frame |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in (row for row in outputs.quality_rows if row["dataset"] == dataset):
        lines.append(
            f"| {row['system']} | {row['note_set']} | {row['n_notes']} | {format_value(row['mss_mean'], 2)} | {format_value(row['pitch_accuracy'], 2)} "
            f"| {format_value(row['median_abs_cents'], 1)} | {format_value(row['unvoiced_share'], 2)} |"
        )
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def stage_eval(args: argparse.Namespace, heads: list[str]) -> None:
    import librosa

    eval_dir = args.out / "eval"
    plot_dir = REPO_ROOT / "docs" / "img" if args.docs else args.out / "plots"
    plot_paths = {dataset: plot_dir / f"heads_{dataset}.png" for dataset in args.datasets}
    result_paths = [eval_dir / name for name in ("results.md", "results.csv", "results.json", "per_note.csv")]
    for path in [*result_paths, *plot_paths.values()]:
        check_writable(path, args.force)

    torch.set_num_threads(args.threads)
    outputs = EvalOutputs([], [], [])
    for dataset in args.datasets:
        evaluate_dataset(args, dataset, heads, outputs, plot_paths[dataset])

    markdown = "\n".join(markdown_tables(dataset, outputs) for dataset in args.datasets)
    print(markdown)
    settings = {
        "minutes": args.minutes,
        "threads": args.threads,
        "max_notes": args.max_notes,
        "timing_runs": args.timing_runs,
        "pitch_seconds": PITCH_SECONDS,
        "pyin_hz": [PYIN_FMIN_HZ, PYIN_FMAX_HZ],
        "torch": torch.__version__,
        "librosa": librosa.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    cost_by_run = {(row["dataset"], row["head"]): row for row in outputs.cost_rows}
    flat_rows = [{**row, **{k: v for k, v in cost_by_run.get((row["dataset"], row["system"]), {}).items() if k not in ("dataset", "head")}} for row in outputs.quality_rows]
    write_text(result_paths[0], markdown, args.force)
    write_text(result_paths[1], csv_text(flat_rows), args.force)
    write_json(result_paths[2], {"settings": settings, "cost": outputs.cost_rows, "quality": outputs.quality_rows}, args.force)
    write_text(result_paths[3], csv_text(outputs.per_note_rows), args.force)
    log.info("results: %s", ", ".join(str(path) for path in result_paths))


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    heads = available_heads(args.heads)
    if not heads:
        log.error("none of the heads %s has a recipe in %s", ", ".join(args.heads), REPO_ROOT / "recipes")
        return 2
    try:
        if args.stage in ("data", "all"):
            stage_data(args)
        trained = True
        if args.stage in ("train", "all"):
            trained = stage_train(args, heads)
        if args.stage in ("eval", "all"):
            stage_eval(args, heads)
    except (CondgenError, subprocess.CalledProcessError) as error:
        log.error("%s", error)
        return 2
    return 0 if trained else 1


if __name__ == "__main__":
    sys.exit(main())
