"""Griffin-Lim speed on the CPU: condgen's `griffin_lim` against librosa and torchaudio, in seconds per note.

All three run the fast Griffin-Lim update with the same n_fft, hop, number of
iterations and momentum on the magnitude of a 4 s harmonic test note. The
ratio librosa/condgen above 1 means condgen is faster per note. torchaudio's
`functional.griffinlim` is timed as well, because condgen's loop follows its
update rule.

Usage:
    python bench/griffinlim_speed.py --threads 1
    python bench/griffinlim_speed.py --threads 2 --batch-sizes 1,16 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable

import librosa
import numpy as np
import torch
import torchaudio

from condgen.synth import spectral

SAMPLE_RATE = 16000


def harmonic_note(n_samples: int) -> torch.Tensor:
    """Return a decaying 220 Hz tone with 8 harmonics and a little noise, `[n_samples]`."""
    generator = torch.Generator().manual_seed(0)
    time_s = torch.arange(n_samples, dtype=torch.float64) / SAMPLE_RATE
    tone = sum(torch.sin(2 * math.pi * 220.0 * k * time_s) / k for k in range(1, 9))
    noise = 0.01 * torch.randn(n_samples, generator=generator, dtype=torch.float64)
    return (0.3 * tone * torch.exp(-time_s) + noise).float()


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up: allocations and FFT plans
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--batch-sizes", default="1,16", help="comma-separated numbers of notes per call (default 1,16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case after one warm-up; the median is reported (default 3)")
    parser.add_argument("--n-fft", type=int, default=1024)
    parser.add_argument("--hop", type=int, default=256)
    parser.add_argument("--n-iter", type=int, default=32)
    parser.add_argument("--momentum", type=float, default=0.99)
    parser.add_argument("--n-samples", type=int, default=64000)
    parser.add_argument("--skip-torchaudio", action="store_true", help="time only condgen and librosa")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    note = harmonic_note(args.n_samples)
    magnitude = spectral.stft(note[None], args.n_fft, args.hop).abs()
    window = torch.hann_window(args.n_fft)
    print(
        f"n_fft {args.n_fft}, hop {args.hop}, {args.n_iter} iterations, momentum {args.momentum}, {args.n_samples} samples; "
        f"torch {torch.__version__} with {args.threads} thread(s), torchaudio {torchaudio.__version__}, librosa {librosa.__version__}, "
        f"numpy {np.__version__}; median of {args.repeats} runs"
    )
    print(f"{'batch':>5} {'condgen s/note':>15} {'librosa s/note':>15} {'torchaudio s/note':>18} {'librosa/condgen':>16}")
    for batch_size in [int(value) for value in args.batch_sizes.split(",")]:
        batch = magnitude.expand(batch_size, -1, -1).contiguous()
        batch_numpy = batch.numpy()

        def run_condgen() -> torch.Tensor:
            return spectral.griffin_lim(batch, args.n_fft, args.hop, args.n_samples, args.n_iter, args.momentum, seed=0)

        def run_librosa() -> np.ndarray:
            return librosa.griffinlim(
                batch_numpy,
                n_iter=args.n_iter,
                hop_length=args.hop,
                n_fft=args.n_fft,
                momentum=args.momentum,
                length=args.n_samples,
                pad_mode="reflect",
                random_state=0,
            )

        def run_torchaudio() -> torch.Tensor:
            return torchaudio.functional.griffinlim(
                batch, window, args.n_fft, args.hop, args.n_fft, 1.0, args.n_iter, args.momentum, args.n_samples, True
            )

        condgen_seconds = median_seconds(run_condgen, args.repeats) / batch_size
        librosa_seconds = median_seconds(run_librosa, args.repeats) / batch_size
        torchaudio_text = "-"
        if not args.skip_torchaudio:
            torchaudio_text = f"{median_seconds(run_torchaudio, args.repeats) / batch_size:.4f}"
        print(f"{batch_size:>5} {condgen_seconds:>15.4f} {librosa_seconds:>15.4f} {torchaudio_text:>18} {librosa_seconds / condgen_seconds:>16.2f}")


if __name__ == "__main__":
    main()
