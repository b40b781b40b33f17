"""Multi-scale spectral distance of generated notes to the real training notes, with two baselines.

For every training note of a checkpoint's recipe this script generates the note
from its (instrument, pitch, velocity), writes it as a 16-bit WAV exactly as
`condgen generate` does, reads the WAV back and measures its multi-scale
spectral distance to the real note. It prints the mean distance next to:

- an untrained model: the same recipe and vocabularies with freshly
  initialised weights (seed 0);
- the pitch-class mean: the sample-wise mean of the other training notes of
  the same pitch class (MIDI pitch mod 12), leaving the note itself out; a
  note alone in its pitch class gets the mean of all other notes.

Usage:
    python bench/nsynth_results.py runs/nsynth_ddsp/checkpoints/latest.safetensors \
        --data-root data/nsynth --out docs/results --plot-notes 4
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from tqdm import tqdm

from condgen.model import build_model, load_model
from condgen.registry import get_domain
from condgen.synth.generate import Note, NoteGenerator, write_wav
from condgen.synth.losses import multiscale_spectral_distance

log = logging.getLogger("bench.nsynth_results")


def distances(generated: torch.Tensor, real: torch.Tensor) -> np.ndarray:
    """Per-note multi-scale spectral distance `[B]` between `[B, n_samples]` batches."""
    return multiscale_spectral_distance(generated, real, reduction="none").numpy()


def pitch_class_means(audio: torch.Tensor, pitches: list[int]) -> torch.Tensor:
    """Leave-one-out mean note of the same pitch class, `[N, n_samples]`."""
    classes = torch.tensor([p % 12 for p in pitches])
    total = audio.sum(0)
    means = torch.empty_like(audio)
    for i in range(audio.shape[0]):
        same = (classes == classes[i]).nonzero().flatten()
        others = same[same != i]
        if len(others):
            means[i] = audio[others].mean(0)
        else:
            means[i] = (total - audio[i]) / (audio.shape[0] - 1)
    return means


def plot_spectrograms(path: Path, pairs: list[tuple[str, np.ndarray, np.ndarray]], sample_rate: int) -> None:
    """Save log-magnitude spectrograms, real beside generated, one row per note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(pairs), 2, figsize=(10, 2.6 * len(pairs)), squeeze=False)
    for row, (title, real, generated) in enumerate(pairs):
        for column, (name, audio) in enumerate((("real", real), ("generated", generated))):
            spectrum = np.abs(np.fft.rfft(np.lib.stride_tricks.sliding_window_view(np.pad(audio, (512, 512)), 1024)[::128] * np.hanning(1024), axis=-1))
            image = 20 * np.log10(spectrum.T + 1e-5)
            axis = axes[row, column]
            axis.imshow(image, origin="lower", aspect="auto", vmin=image.max() - 90, vmax=image.max(), extent=(0, len(audio) / sample_rate, 0, sample_rate / 2000), cmap="magma")
            axis.set_title(f"{title} ({name})", fontsize=9)
            axis.set_ylabel("kHz")
        axes[row, 1].set_yticklabels([])
    axes[-1, 0].set_xlabel("seconds")
    axes[-1, 1].set_xlabel("seconds")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-root", help="override data.root of the stored recipe")
    parser.add_argument("--out", type=Path, default=Path("bench_out/nsynth_results"), help="folder for WAVs, the per-note CSV and the plot")
    parser.add_argument("--plot-notes", type=int, default=4, help="notes shown in the spectrogram plot")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    loaded = load_model(args.checkpoint, expect_domain="nsynth")
    recipe = loaded.recipe
    if args.data_root:
        recipe.data.root = args.data_root
    dataset, _ = get_domain(recipe.domain).build_datasets(recipe.data, recipe.seed)
    items = [dataset[i] for i in range(len(dataset))]
    real = torch.stack([item["audio"] for item in items])
    notes = [Note(item["instrument_str"], item["pitch"], item["velocity"]) for item in items]
    log.info("%d training notes from %s", len(notes), recipe.data.resolved_paths())

    generator = NoteGenerator(loaded)
    wav_dir = args.out / "wav"
    started = time.monotonic()
    for start in tqdm(range(0, len(notes), 16), desc="generate", unit="batch"):
        batch = notes[start : start + 16]
        audio = generator.generate_batch(batch, seed=start)
        for note, samples in zip(batch, audio):
            write_wav(wav_dir / note.file_name(), samples.numpy(), generator.sample_rate, force=True)
    generation_seconds = time.monotonic() - started
    generated = torch.stack([torch.from_numpy(soundfile.read(wav_dir / note.file_name(), dtype="float32")[0]) for note in notes])

    torch.manual_seed(0)
    untrained = NoteGenerator(type(loaded)(model=build_model(recipe, loaded.conditioner.vocabularies).eval(), recipe=recipe, meta=loaded.meta, path=loaded.path))
    untrained_audio = torch.cat([untrained.generate_batch(notes[s : s + 16], seed=s) for s in range(0, len(notes), 16)])
    baseline_mean = pitch_class_means(real, [note.pitch for note in notes])

    results = {
        "trained model": distances(generated, real),
        "untrained model": distances(untrained_audio, real),
        "pitch-class mean note": distances(baseline_mean, real),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "per_note.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["note", *results])
        for i, note in enumerate(notes):
            writer.writerow([note.file_name()[:-4], *(f"{values[i]:.4f}" for values in results.values())])

    print(f"checkpoint: {args.checkpoint} (step {loaded.meta['step']})")
    print(f"notes: {len(notes)}; generation of all notes: {generation_seconds:.1f} s with {args.threads} thread(s)")
    print(f"{'system':<24} {'mean MSS distance':>18} {'median':>8} {'ratio to trained':>17}")
    trained_mean = results["trained model"].mean()
    for name, values in results.items():
        print(f"{name:<24} {values.mean():>18.3f} {np.median(values):>8.3f} {values.mean() / trained_mean:>17.2f}")

    order = np.argsort(results["trained model"])
    chosen = [order[int(q * (len(order) - 1))] for q in np.linspace(0, 1, args.plot_notes)] if args.plot_notes > 1 else [order[0]]
    pairs = [(f"{notes[i].file_name()[:-4]}, distance {results['trained model'][i]:.2f}", real[i].numpy(), generated[i].numpy()) for i in chosen]
    plot_spectrograms(args.out / "spectrograms.png", pairs, generator.sample_rate)
    print(f"spectrogram plot: {args.out / 'spectrograms.png'}; per-note distances: {args.out / 'per_note.csv'}")


if __name__ == "__main__":
    main()
