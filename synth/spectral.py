"""STFT representations of audio and their inversion: log magnitude, mel, instantaneous frequency, Griffin-Lim.

Pure functions on batch-first torch tensors. Audio is `[B, n_samples]` with
samples in [-1, 1]. Spectrograms are `[B, n_bins, n_frames]` with
`n_bins = n_fft // 2 + 1` linear-frequency bins (or `n_mels` mel bands) and
`n_frames = 1 + n_samples // hop_length` frames, the layout of
`torch.stft(center=True)`. Every STFT here uses that convention: a periodic
Hann window of `n_fft` samples, frame `t` centred on sample `t * hop_length`,
the signal reflect-padded by `n_fft // 2` at both ends, and no normalisation.
Magnitudes are linear (a full-scale sine peaks near `n_fft / 4`), phases are
in radians, and logarithms are natural.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch
import torch.nn.functional as F
import torchaudio

__all__ = [
    "stft",
    "istft",
    "n_stft_frames",
    "log_magnitude",
    "magnitude_from_log",
    "mel_filterbank",
    "mel_pseudo_inverse",
    "linear_to_mel",
    "mel_to_linear",
    "instantaneous_frequency",
    "phase_from_instantaneous_frequency",
    "griffin_lim",
]

# Floor that Griffin-Lim adds to magnitudes before dividing by them, the value
# that torchaudio 2.11 and librosa 0.11 use.
_GRIFFIN_LIM_EPS = 1e-16


def n_stft_frames(n_samples: int, hop_length: int) -> int:
    """Return the number of frames that `torch.stft(center=True)` gives for `n_samples` samples."""
    return 1 + n_samples // hop_length


def _hann_window(n_fft: int, like: torch.Tensor) -> torch.Tensor:
    dtype = like.real.dtype if like.is_complex() else like.dtype
    return torch.hann_window(n_fft, periodic=True, dtype=dtype, device=like.device)


def stft(audio: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Compute the complex STFT `[B, n_fft // 2 + 1, n_frames]` of audio `[B, n_samples]`."""
    return torch.stft(
        audio,
        n_fft=n_fft,
        hop_length=hop_length,
        window=_hann_window(n_fft, audio),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )


def istft(magnitude: torch.Tensor, phase: torch.Tensor, n_fft: int, hop_length: int, length: int) -> torch.Tensor:
    """Invert an STFT given as magnitude and phase `[B, n_bins, n_frames]` to audio `[B, length]`.

    This is the plain inverse STFT (windowed overlap-add, `torch.istft`), the
    exact inverse of `stft` when the phase is consistent with the magnitude.
    """
    spectrum = torch.polar(magnitude, phase)
    return torch.istft(spectrum, n_fft=n_fft, hop_length=hop_length, window=_hann_window(n_fft, magnitude), center=True, length=length)


def log_magnitude(magnitude: torch.Tensor, eps: float) -> torch.Tensor:
    """Compute `log(magnitude + eps)`, so that silence maps to `log(eps)` instead of minus infinity."""
    return torch.log(magnitude + eps)


def magnitude_from_log(log_magnitude_values: torch.Tensor, eps: float) -> torch.Tensor:
    """Invert `log_magnitude`: `max(exp(x) - eps, 0)`, so that values below `log(eps)` give silence."""
    return (torch.exp(log_magnitude_values) - eps).clamp_min(0.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Build the triangular HTK mel filterbank `[n_fft // 2 + 1, n_mels]` from 0 Hz to the Nyquist frequency.

    It is the matrix that `torchaudio.transforms.MelScale` applies with its
    default settings (`mel_scale="htk"`, `norm=None`), so filter peaks are 1.
    """
    return torchaudio.functional.melscale_fbanks(
        n_freqs=n_fft // 2 + 1,
        f_min=0.0,
        f_max=sample_rate / 2,
        n_mels=n_mels,
        sample_rate=sample_rate,
        norm=None,
        mel_scale="htk",
    )


def mel_pseudo_inverse(filterbank: torch.Tensor) -> torch.Tensor:
    """Compute the Moore-Penrose pseudo-inverse `[n_bins, n_mels]` of the mel projection `filterbank.T`.

    `pinv @ mel` is the minimum-norm least-squares solution that
    `torchaudio.transforms.InverseMelScale` solves with `torch.linalg.lstsq`,
    precomputed once so that inverting a batch is one matrix product. It also
    stays defined when some mel filters are empty and the filterbank loses rank.
    """
    return torch.linalg.pinv(filterbank.T.double()).to(filterbank.dtype)


def linear_to_mel(magnitude: torch.Tensor, filterbank: torch.Tensor) -> torch.Tensor:
    """Project linear-frequency magnitudes `[B, n_bins, n_frames]` onto mel bands `[B, n_mels, n_frames]`."""
    return torch.matmul(filterbank.T, magnitude)


def mel_to_linear(mel: torch.Tensor, pseudo_inverse: torch.Tensor) -> torch.Tensor:
    """Map mel magnitudes `[B, n_mels, n_frames]` back to linear bins `[B, n_bins, n_frames]`.

    The least-squares solution can dip below zero between filter centres, so
    the result is clamped at 0 to remain a magnitude.
    """
    return torch.matmul(pseudo_inverse, mel).clamp_min(0.0)


def instantaneous_frequency(phase: torch.Tensor) -> torch.Tensor:
    """Compute the instantaneous frequency `[B, n_bins, n_frames]` of STFT phases in radians, in [-1, 1).

    Following GANSynth (Engel et al., "GANSynth: Adversarial Neural Audio
    Synthesis", ICLR 2019), the phase of each bin is
    unwrapped along time and differenced between consecutive frames, then
    divided by pi. The difference of the unwrapped phase is the phase step
    wrapped into [-pi, pi), which is what is computed here. Frame 0 keeps its
    own phase, wrapped and divided by pi, so that
    `phase_from_instantaneous_frequency` recovers the phase (modulo 2 pi).
    A value v means that the bin's phase advanced by `v * pi` radians,
    modulo 2 pi, over one hop.
    """
    steps = torch.cat([phase[..., :1], torch.diff(phase, dim=-1)], dim=-1)
    return _wrap_to_unit_interval(steps)


def _wrap_to_unit_interval(angle: torch.Tensor) -> torch.Tensor:
    """Wrap angles in radians into [-pi, pi) and divide by pi, giving values in [-1, 1)."""
    value = torch.remainder(angle + math.pi, 2.0 * math.pi) / math.pi - 1.0
    # Rounding can give exactly 1 or a value just below -1: fold both into [-1, 1).
    value = torch.where(value >= 1.0, value - 2.0, value)
    return value.clamp_min(-1.0)


def phase_from_instantaneous_frequency(frequency: torch.Tensor) -> torch.Tensor:
    """Integrate instantaneous frequency `[B, n_bins, n_frames]` (as from `instantaneous_frequency`) to phases in radians."""
    return torch.cumsum(frequency * math.pi, dim=-1)


@torch.no_grad()
def griffin_lim(
    magnitude: torch.Tensor,
    n_fft: int,
    hop_length: int,
    length: int,
    n_iter: int = 32,
    momentum: float = 0.99,
    seed: int = 0,
) -> torch.Tensor:
    """Estimate audio `[B, length]` whose STFT magnitude approximates `magnitude` `[B, n_fft // 2 + 1, n_frames]`.

    `magnitude` must be linear (power 1), never log values. This is the fast
    Griffin-Lim algorithm (Perraudin et al., "A fast Griffin-Lim algorithm",
    2013): each iteration inverts
    the STFT with the current phase, takes the STFT of the result and keeps
    its phase, extrapolated by `momentum` (0 gives plain Griffin-Lim). The
    update and the STFT conventions are those of
    `torchaudio.functional.griffinlim` 2.11 with `power=1`, and
    `tests/test_spectral.py` checks that both agree from the same initial phase.

    This reimplements the loop instead of calling torchaudio for two reasons.
    torchaudio's random initial phase comes from the global RNG and is not
    uniform on the unit circle. And with 2 intra-op threads on 2 busy cores,
    its loop was slower per note than `librosa.griffinlim`
    (`bench/griffinlim_speed.py` compares all three). The initial phase here is uniform in [0, 2 pi) and drawn from
    a `torch.Generator` seeded with `seed`. One `[n_bins, n_frames]` draw is
    shared by every item of the batch, so a note's audio does not depend on
    the other notes in its batch. The result is not differentiable.
    """
    if magnitude.dim() != 3:
        raise ValueError(f"magnitude must have shape [B, n_fft // 2 + 1, n_frames], got {tuple(magnitude.shape)}")
    n_bins, n_frames = magnitude.shape[-2:]
    if n_bins != n_fft // 2 + 1:
        raise ValueError(f"magnitude has {n_bins} frequency bins but n_fft {n_fft} needs {n_fft // 2 + 1}")
    if n_frames != n_stft_frames(length, hop_length):
        raise ValueError(
            f"magnitude has {n_frames} frames but {length} samples at hop {hop_length} give {n_stft_frames(length, hop_length)}"
        )
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if magnitude.is_complex() or not magnitude.is_floating_point():
        raise ValueError(f"magnitude must be a real floating-point tensor, got {magnitude.dtype}")
    if length <= n_fft // 2:
        raise ValueError(f"length {length} must exceed n_fft // 2 = {n_fft // 2} for the reflect padding of the STFT")

    generator = torch.Generator().manual_seed(seed)
    initial_phase = 2.0 * math.pi * torch.rand(n_bins, n_frames, generator=generator, dtype=torch.float64)
    initial_phase = initial_phase.to(device=magnitude.device, dtype=magnitude.dtype)

    def run(chunk: torch.Tensor) -> torch.Tensor:
        return _griffin_lim_from_phase(chunk, initial_phase, n_fft, hop_length, length, n_iter, momentum)

    if magnitude.device.type != "cpu":
        # NOTE: this batched path is not covered by the tests, which run on CPU only.
        return run(magnitude)
    return _map_notes_single_threaded(run, magnitude)


def _map_notes_single_threaded(function: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    """Apply `function` to each note `[1, ...]` of `batch` in parallel threads that each run torch ops on one core.

    Griffin-Lim runs hundreds of small element-wise ops and FFTs per note. With
    torch's default intra-op threading every op waits at a barrier for all
    threads. When another process shares the cores, that wait lasts a
    scheduler time slice, so on 2 busy cores a note took 6 times longer with 2
    threads than with 1 (`bench/griffinlim_speed.py`). Notes are independent,
    so this spreads them over `torch.get_num_threads()` Python threads and sets
    intra-op threading to 1 for the duration of the call. One note at a time
    also keeps the working set small enough for the CPU caches: with 1 thread
    it made a batch of 16 about twice as fast per note as one 16-note pass.

    NOTE: `torch.set_num_threads` is process-wide, so torch ops that other
    threads run during the call also use one intra-op thread.
    """
    n_threads = torch.get_num_threads()
    notes = batch.split(1)
    torch.set_num_threads(1)
    try:
        if n_threads == 1 or len(notes) == 1:
            return torch.cat([function(note) for note in notes])
        with ThreadPoolExecutor(max_workers=min(n_threads, len(notes))) as pool:
            return torch.cat(list(pool.map(function, notes)))
    finally:
        torch.set_num_threads(n_threads)


class _GriffinLimWorkspace:
    """STFT and inverse STFT for Griffin-Lim, with windows, window envelope and buffers allocated once.

    Same conventions as `stft` and `torch.istft` (centred frames, reflect
    padding, periodic Hann window), but spectra use the `[B, n_frames, n_bins]`
    layout of `torch.fft.rfft`, contiguous along frequency. Every iteration
    writes into the same buffers, because allocating new megabyte-sized
    outputs for each op made the loop about 1.5 times slower in
    `bench/griffinlim_speed.py` with 1 thread. The overlap-add reshapes the frames into hop-sized blocks when the hop divides
    `n_fft`, and uses `F.fold` otherwise.
    """

    def __init__(self, batch_size: int, n_fft: int, hop_length: int, length: int, n_frames: int, like: torch.Tensor):
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.length = length
        self.n_frames = n_frames
        self.padding = n_fft // 2
        self.window = _hann_window(n_fft, like)
        self.overlap_length = (n_frames - 1) * hop_length + n_fft
        # The inverse keeps samples [n_fft // 2, n_fft // 2 + length) of the
        # overlap-added signal. Samples past its end are zeros, as in torch.istft.
        self.valid_length = min(length, self.overlap_length - self.padding)
        envelope = self._overlap_add(self.window.square().expand(1, n_frames, n_fft).contiguous(), out=None)[0]
        kept_envelope = envelope[self.padding : self.padding + self.valid_length]
        if kept_envelope.abs().min() < 1e-11:
            raise ValueError(f"hop_length {hop_length} is too large for n_fft {n_fft}: the windows do not overlap enough to invert the STFT")
        self.inverse_envelope = kept_envelope.reciprocal()

        dtype, device = self.window.dtype, self.window.device
        self.frames = torch.empty(batch_size, n_frames, n_fft, dtype=dtype, device=device)
        self.padded = torch.zeros(batch_size, length + 2 * self.padding, dtype=dtype, device=device)
        self.blocks = None
        if n_fft % hop_length == 0:
            self.blocks = torch.empty(batch_size, n_frames + n_fft // hop_length - 1, hop_length, dtype=dtype, device=device)

    def _overlap_add(self, frames: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """Sum frames `[B, n_frames, n_fft]` at their hop positions into `[B, overlap_length]`.

        `out` is a buffer `[B, n_frames + n_fft // hop_length - 1, hop_length]`
        to reuse when the hop divides `n_fft`, or None to allocate one.
        """
        batch_size = frames.shape[0]
        hop = self.hop_length
        if self.n_fft % hop == 0:
            ratio = self.n_fft // hop
            blocks = frames.view(batch_size, self.n_frames, ratio, hop)
            output = out if out is not None else frames.new_empty(batch_size, self.n_frames + ratio - 1, hop)
            output.zero_()
            for offset in range(ratio):
                output[:, offset : offset + self.n_frames] += blocks[:, :, offset]
            return output.view(batch_size, self.overlap_length)
        folded = F.fold(
            frames.transpose(1, 2),
            output_size=(1, self.overlap_length),
            kernel_size=(1, self.n_fft),
            stride=(1, hop),
        )
        return folded.reshape(batch_size, self.overlap_length)

    def inverse(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Invert a complex spectrum `[B, n_frames, n_bins]` and return the audio `[B, length]`.

        The audio is a view into the reflect-padded buffer that `forward` reads,
        so it is only valid until the next call.
        """
        torch.fft.irfft(spectrum, n=self.n_fft, dim=-1, out=self.frames)
        self.frames.mul_(self.window)
        signal = self._overlap_add(self.frames, out=self.blocks)
        pad, length = self.padding, self.length
        torch.mul(signal[:, pad : pad + self.valid_length], self.inverse_envelope, out=self.padded[:, pad : pad + self.valid_length])
        # Reflect padding as in torch.stft(pad_mode="reflect"): the sample k
        # places before the first one is a copy of the sample k places after it,
        # and likewise at the end. The zeros past `valid_length` never change.
        self.padded[:, :pad] = self.padded[:, pad + 1 : 2 * pad + 1].flip(-1)
        self.padded[:, pad + length :] = self.padded[:, length - 1 : pad + length - 1].flip(-1)
        return self.padded[:, pad : pad + length]

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        """Write the complex STFT `[B, n_frames, n_bins]` of the audio from the last `inverse` into `out`."""
        torch.mul(self.padded.unfold(-1, self.n_fft, self.hop_length), self.window, out=self.frames)
        return torch.fft.rfft(self.frames, dim=-1, out=out)


def _griffin_lim_from_phase(
    magnitude: torch.Tensor,
    initial_phase: torch.Tensor,
    n_fft: int,
    hop_length: int,
    length: int,
    n_iter: int,
    momentum: float,
) -> torch.Tensor:
    """Run fast Griffin-Lim from `initial_phase` `[n_bins, n_frames]` or `[B, n_bins, n_frames]`.

    `griffin_lim` validates the arguments and describes the algorithm.
    """
    batch_size, _, n_frames = magnitude.shape
    workspace = _GriffinLimWorkspace(batch_size, n_fft, hop_length, length, n_frames, magnitude)
    # Work in the rfft layout [B, n_frames, n_bins], contiguous along frequency.
    target = magnitude.transpose(1, 2).contiguous()
    phase = initial_phase.transpose(-1, -2).expand(batch_size, n_frames, -1)
    spectrum = torch.polar(target, phase.contiguous())
    rebuilt = torch.empty_like(spectrum)
    previous = torch.empty_like(spectrum)
    estimate = torch.empty_like(spectrum)
    squares = torch.empty_like(torch.view_as_real(spectrum))
    scale = torch.empty_like(target)
    # Extrapolation weight of the previous estimate, as in torchaudio and librosa.
    extrapolation = momentum / (1.0 + momentum)
    for iteration in range(n_iter):
        workspace.inverse(spectrum)
        workspace.forward(out=rebuilt)
        if iteration > 0 and extrapolation > 0:
            torch.sub(rebuilt, previous, alpha=extrapolation, out=estimate)
        else:
            estimate.copy_(rebuilt)
        # Keep the estimate's phase and impose the target magnitude in one real
        # scaling, instead of normalising to unit modulus and multiplying again.
        # The modulus is summed from squares because complex abs() and
        # vector_norm() over the pair axis were 3 to 4 times slower on CPU
        # (torch 2.14).
        torch.square(torch.view_as_real(estimate), out=squares)
        torch.add(squares[..., 0], squares[..., 1], out=scale)
        scale.sqrt_().add_(_GRIFFIN_LIM_EPS)
        torch.div(target, scale, out=scale)
        torch.mul(estimate, scale, out=spectrum)
        rebuilt, previous = previous, rebuilt
    return workspace.inverse(spectrum).clone()
