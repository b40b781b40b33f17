"""Synthesis speed of the DDSP head on the CPU, as a real-time factor.

The real-time factor is seconds of generated audio per second of compute, so
a value above 1 is faster than real time. The model is built from a recipe
with random weights: its speed does not depend on training.

Usage:
    python bench/ddsp_speed.py --recipe recipes/nsynth_ddsp.toml --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from condgen.conditioning import Vocabulary
from condgen.synth import dsp
from condgen.model import build_model
from condgen.recipe import load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/nsynth_ddsp.toml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="1,16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    recipe = load_recipe(args.recipe)
    vocabularies = {
        "instrument_str": Vocabulary("instrument_str", [f"keyboard_acoustic_{i:03d}" for i in range(100)]),
        "pitch": Vocabulary("pitch", range(21, 109)),
        "velocity": Vocabulary("velocity", [25, 50, 75, 100, 127]),
        "instrument_family_str": Vocabulary("instrument_family_str", ["keyboard"]),
        "instrument_source_str": Vocabulary("instrument_source_str", ["acoustic"]),
    }
    names = [spec.name for spec in recipe.conditioning.labels]
    torch.manual_seed(0)
    model = build_model(recipe, {name: vocabularies[name] for name in names}).eval()
    n_parameters = sum(p.numel() for p in model.parameters())
    seconds_per_note = model.extra_meta()["n_samples"] / model.extra_meta()["sample_rate"]

    print(f"recipe {args.recipe}: {n_parameters / 1e6:.2f} M parameters, torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} runs")
    print(f"{'batch':>5} {'seconds/batch':>14} {'real-time factor':>17}")
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        values = {name: [vocabularies[name].values[i % len(vocabularies[name])] for i in range(batch_size)] for name in names}
        inputs = model.conditioner.encode_values(values)
        with torch.no_grad():
            model(inputs)  # warm-up
            timings = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                model(inputs)
                timings.append(time.perf_counter() - started)
        median = statistics.median(timings)
        print(f"{batch_size:>5} {median:>14.4f} {batch_size * seconds_per_note / median:>17.1f}")
    compare_harmonic_synthesis(args.repeats)


def compare_harmonic_synthesis(repeats: int) -> None:
    """Time a training step's harmonic part: the sample-wise reference against the frame-wise form."""
    torch.manual_seed(0)
    f0_hz = torch.full((16, 250, 1), 220.0)
    amplitude = torch.rand(16, 250, 1, requires_grad=True)
    distribution = torch.rand(16, 250, 60, requires_grad=True)
    timings = {}
    for name, function in (("sample-wise", dsp.harmonic_synthesis), ("frame-wise", dsp.harmonic_synthesis_framewise)):
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            function(f0_hz, amplitude, distribution, 64000, 16000).square().sum().backward()
            runs.append(time.perf_counter() - started)
        timings[name] = statistics.median(runs)
    print("harmonic synthesis, forward + backward, batch 16, 60 harmonics, 4 s:")
    for name, seconds in timings.items():
        print(f"  {name:<12} {seconds:.3f} s")
    print(f"  speed-up of the frame-wise form: {timings['sample-wise'] / timings['frame-wise']:.1f}x")


if __name__ == "__main__":
    main()
