"""Training steps per second of each head's recipe model, and one streamed epoch through the DDSP recipe.

    python bench/train_speed.py --threads 2 --batch-size 16
    python bench/train_speed.py --threads 2 --stream bench_out/nsynth-synthetic.tfrecord

The first form builds each recipe's model with made-up vocabularies and times
full optimisation steps (forward, loss, backward, clipping, AdamW) on random
targets held in memory, so the figure is the model's compute alone. The
second form trains the DDSP recipe with `data.streaming = true` for one epoch
of the given NSynth TFRecord, through the real trainer and DataLoader, and
reports the wall time.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from condgen.conditioning import build_vocabularies
from condgen.model import build_model
from condgen.recipe import load_recipe

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["nsynth_ddsp", "nsynth_waveform", "nsynth_spectrogram", "chairs_64"]


def fake_metadata(domain: str, n_items: int = 64) -> list[dict]:
    if domain == "nsynth":
        return [
            {"instrument_str": f"guitar_acoustic_{i % 8:03d}", "pitch": 40 + i % 40, "velocity": (25, 50, 75, 100, 127)[i % 5]}
            for i in range(n_items)
        ]
    return [{"chair": f"chair_{i % 16:02d}", "azimuth_deg": 15.0 * (i % 24), "elevation_deg": 20.0 + 10 * (i % 2)} for i in range(n_items)]


def time_steps(recipe_name: str, batch_size: int, n_steps: int) -> tuple[float, float]:
    """Return (median seconds per step, parameters in millions) for a recipe's model."""
    recipe = load_recipe(REPO_ROOT / "recipes" / f"{recipe_name}.toml")
    metadata = fake_metadata(recipe.domain)
    model = build_model(recipe, build_vocabularies(recipe.conditioning.labels, metadata))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = metadata[:batch_size]
    labels = {name: [item[name] for item in batch] for name in model.conditioner.label_names}
    inputs = model.conditioner.encode_values(labels)
    generator = torch.Generator().manual_seed(0)
    if recipe.domain == "nsynth":
        target = (torch.rand(batch_size, 64000, generator=generator) - 0.5) * 0.5
    else:
        size = recipe.data.image_size
        target = torch.rand(batch_size, 3, size, size, generator=generator)

    durations = []
    for step in range(n_steps + 1):
        started = time.perf_counter()
        terms = model.loss_terms(model(inputs), target)
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        optimizer.step()
        if step:  # the first step warms up allocators and kernels
            durations.append(time.perf_counter() - started)
    n_parameters = sum(p.numel() for p in model.parameters()) / 1e6
    return statistics.median(durations), n_parameters


def stream_epoch(tfrecord: Path, batch_size: int, num_workers: int) -> None:
    from condgen.trainer import Trainer

    with tempfile.TemporaryDirectory() as run_dir:
        probe = load_recipe(REPO_ROOT / "recipes" / "nsynth_ddsp.toml", [f"data.root={tfrecord.parent}", f'data.path=["{tfrecord.name}"]', "data.streaming=true", f"run_dir={run_dir}"])
        trainer = Trainer(probe, show_progress=False)
        steps = trainer.n_items // batch_size
        recipe = load_recipe(
            REPO_ROOT / "recipes" / "nsynth_ddsp.toml",
            [
                f"data.root={tfrecord.parent}",
                f'data.path=["{tfrecord.name}"]',
                "data.streaming=true",
                f"run_dir={run_dir}",
                f"train.steps={steps}",
                f"train.batch_size={batch_size}",
                f"train.num_workers={num_workers}",
                "train.max_minutes=0",
                f"train.checkpoint_every={steps}",
                f"train.sample_every={steps + 1}",
                f"train.log_every={max(1, steps // 8)}",
            ],
        )
        started = time.perf_counter()
        Trainer(recipe, force=True, show_progress=True).fit()
        elapsed = time.perf_counter() - started
    print(f"one epoch of {tfrecord.name}: {trainer.n_items} notes, {steps} steps at batch {batch_size}, {num_workers} workers: {elapsed:.1f} s ({steps / elapsed:.2f} steps/s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=16, help="items per step (default 16)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per recipe after one warm-up step (default 5)")
    parser.add_argument("--recipes", nargs="*", default=RECIPES, help=f"recipe names (default: {' '.join(RECIPES)})")
    parser.add_argument("--stream", type=Path, help="an NSynth TFRecord: train the DDSP recipe for one epoch of it, streamed")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers for --stream (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}")
    if args.stream is not None:
        stream_epoch(args.stream, args.batch_size, args.workers)
        return 0
    print("| recipe | parameters (M) | seconds per step | steps per second |")
    print("| --- | ---: | ---: | ---: |")
    for name in args.recipes:
        seconds, n_parameters = time_steps(name, args.batch_size, args.steps)
        print(f"| {name} | {n_parameters:.2f} | {seconds:.3f} | {1 / seconds:.2f} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
