"""Griffin-Lim against inverse STFT from instantaneous frequency, on the same real notes.

For every note, both inversions start from the note's own STFT (n_fft 1024,
hop 256, the spectrogram head's defaults): Griffin-Lim gets the magnitude
alone, the IF path gets the magnitude and the instantaneous frequency and
runs a plain inverse STFT. This is the ceiling of each representation: what
the spectrogram head would produce if it predicted its output exactly. It
prints, per inversion, the mean multi-scale spectral distance to the real
note (the distance the heads are compared with), the spectral convergence at
the STFT settings, the waveform SNR and the seconds per note.

Usage:
    python bench/inversion_compare.py --data-root data/nsynth --threads 2 [--max-notes 64]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from condgen.synth.losses import multiscale_spectral_distance
from condgen.synth.nsynth import NSynthNotes
from condgen.synth.spectral import griffin_lim, instantaneous_frequency, istft, phase_from_instantaneous_frequency, stft

N_FFT = 1024
HOP = 256


def spectral_convergence(audio: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """`||S - |STFT(audio)|||_F / ||S||_F` per note `[B]`."""
    estimate = stft(audio, N_FFT, HOP).abs()
    return torch.linalg.norm((magnitude - estimate).flatten(1), dim=1) / torch.linalg.norm(magnitude.flatten(1), dim=1).clamp_min(1e-12)


def snr_db(audio: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Waveform signal-to-noise ratio in dB per note `[B]`."""
    noise = (audio - reference).pow(2).sum(1)
    return 10 * torch.log10(reference.pow(2).sum(1).clamp_min(1e-20) / noise.clamp_min(1e-20))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True, help="folder with nsynth-mini/ and named-wavs/")
    parser.add_argument("--paths", nargs="*", default=["nsynth-mini", "named-wavs"], help="entries of --data-root to read")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--iters", type=int, default=32, help="Griffin-Lim iterations (default 32)")
    parser.add_argument("--max-notes", type=int, default=0, help="use only the first N notes (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    notes = NSynthNotes([args.data_root / path for path in args.paths])
    count = len(notes) if not args.max_notes else min(args.max_notes, len(notes))
    audio = torch.stack([notes[i]["audio"] for i in range(count)]).double()
    n_samples = audio.shape[1]
    spectrum = stft(audio, N_FFT, HOP)
    magnitude = spectrum.abs()
    print(f"{count} real notes, n_fft {N_FFT}, hop {HOP}, {args.threads} threads, Griffin-Lim {args.iters} iterations, momentum 0.99")

    started = time.perf_counter()
    from_griffin_lim = griffin_lim(magnitude, N_FFT, HOP, n_samples, n_iter=args.iters, momentum=0.99, seed=0)
    griffin_lim_seconds = (time.perf_counter() - started) / count

    started = time.perf_counter()
    phase = phase_from_instantaneous_frequency(instantaneous_frequency(torch.angle(spectrum)))
    from_if = istft(magnitude, phase, N_FFT, HOP, n_samples)
    if_seconds = (time.perf_counter() - started) / count

    print("| inversion | mean MSS distance | mean spectral convergence | median SNR (dB) | seconds per note |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, result, seconds in (("Griffin-Lim from magnitude", from_griffin_lim, griffin_lim_seconds), ("inverse STFT from magnitude and IF", from_if, if_seconds)):
        distance = multiscale_spectral_distance(result.float(), audio.float(), reduction="none").mean()
        convergence = spectral_convergence(result, magnitude).mean()
        snr = snr_db(result, audio).median()
        print(f"| {name} | {distance:.3f} | {convergence:.4f} | {snr:.1f} | {seconds:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
