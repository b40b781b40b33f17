"""Multi-scale spectral distance between audio signals, the training loss of DDSP models.

For each FFT size the distance adds the mean absolute difference of linear
STFT magnitudes and that of log magnitudes, and it sums over the sizes. The
default sizes and the 75 % overlap are those of Engel et al., "DDSP:
Differentiable Digital Signal Processing" (ICLR 2020).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["SpectralLossConfig", "magnitude_spectrogram", "multiscale_spectral_distance", "MultiScaleSpectralLoss"]

REDUCTIONS = ("mean", "none")


@dataclass(frozen=True)
class SpectralLossConfig:
    """Settings of the multi-scale spectral distance.

    fft_sizes: FFT (and Hann window) lengths in samples, one STFT per size.
    overlap: fraction of a window shared by consecutive frames, in [0, 1);
        the hop is `int(n_fft * (1 - overlap))` samples.
    linear_weight: weight of the L1 distance between linear magnitudes.
    log_weight: weight of the L1 distance between `log(magnitude + eps)`.
    eps: floor added to magnitudes before the logarithm, so that silence gives
        `log(eps)` instead of minus infinity.
    reduction: "mean" for a scalar averaged over the batch, "none" for one
        distance per item, `[B]`.
    """

    fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64)
    overlap: float = 0.75
    linear_weight: float = 1.0
    log_weight: float = 1.0
    eps: float = 1e-7
    reduction: str = "mean"

    def __post_init__(self) -> None:
        # Accept lists, as read back from JSON or a recipe, but store a tuple.
        object.__setattr__(self, "fft_sizes", tuple(int(size) for size in self.fft_sizes))
        if not self.fft_sizes or any(size < 2 for size in self.fft_sizes):
            raise ValueError(f"fft_sizes must be a non-empty list of sizes of at least 2 samples, got {self.fft_sizes}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        for size in self.fft_sizes:
            if _hop_length(size, self.overlap) < 1:
                raise ValueError(
                    f"overlap {self.overlap} leaves a hop of less than one sample for fft size {size}; "
                    "lower the overlap or remove that size"
                )
        if self.linear_weight < 0 or self.log_weight < 0:
            raise ValueError(
                f"weights must be non-negative, got linear_weight={self.linear_weight}, log_weight={self.log_weight}"
            )
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {self.reduction!r}; expected one of {REDUCTIONS}")


def magnitude_spectrogram(audio: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Compute STFT magnitudes `[B, n_fft // 2 + 1, n_frames]` of audio `[B, n_samples]`.

    Frames start at sample 0 and every `hop_length` samples after it, and the
    signal is zero-padded at its end so that every sample lies in a frame:
    `n_frames = ceil(n_samples / hop_length)`. The window is a periodic Hann
    window of `n_fft` samples, and there is no normalisation.
    """
    n_samples = audio.shape[-1]
    n_frames = math.ceil(n_samples / hop_length)
    padded_length = (n_frames - 1) * hop_length + n_fft
    padded = nn.functional.pad(audio, (0, padded_length - n_samples))
    window = torch.hann_window(n_fft, periodic=True, device=audio.device, dtype=audio.dtype)
    spectrum = torch.stft(
        padded,
        n_fft=n_fft,
        hop_length=hop_length,
        window=window,
        center=False,
        return_complex=True,
    )
    return spectrum.abs()


def multiscale_spectral_distance(
    pred: torch.Tensor,
    target: torch.Tensor,
    fft_sizes: tuple[int, ...] = SpectralLossConfig.fft_sizes,
    overlap: float = SpectralLossConfig.overlap,
    linear_weight: float = SpectralLossConfig.linear_weight,
    log_weight: float = SpectralLossConfig.log_weight,
    eps: float = SpectralLossConfig.eps,
    reduction: str = SpectralLossConfig.reduction,
) -> torch.Tensor:
    """Compute the multi-scale spectral distance between `pred` and `target`, both `[B, n_samples]`.

    For each size in `fft_sizes`, with magnitudes from `magnitude_spectrogram`:
    `linear_weight * mean|S_pred - S_target| + log_weight * mean|log(S_pred + eps) - log(S_target + eps)|`,
    each mean taken over frequency bins and frames, and the sum over sizes.
    Returns a scalar (the batch mean) for `reduction="mean"`, or `[B]` for
    `reduction="none"`. The other arguments are described in `SpectralLossConfig`.

    Silent signals give finite values and finite gradients. The gradient with
    respect to an exactly silent prediction is zero, because a magnitude has
    no preferred direction at the origin.
    """
    config = SpectralLossConfig(fft_sizes, overlap, linear_weight, log_weight, eps, reduction)
    if pred.dim() != 2 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape [B, n_samples]; got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )

    batch_size = pred.shape[0]
    both = torch.cat([pred, target], dim=0)
    distance = pred.new_zeros(batch_size)
    for n_fft in config.fft_sizes:
        magnitudes = magnitude_spectrogram(both, n_fft, _hop_length(n_fft, config.overlap))
        pred_mag, target_mag = magnitudes[:batch_size], magnitudes[batch_size:]
        if config.linear_weight > 0:
            linear = (pred_mag - target_mag).abs().mean(dim=(1, 2))
            distance = distance + config.linear_weight * linear
        if config.log_weight > 0:
            log_difference = torch.log(pred_mag + config.eps) - torch.log(target_mag + config.eps)
            distance = distance + config.log_weight * log_difference.abs().mean(dim=(1, 2))

    if config.reduction == "mean":
        return distance.mean()
    return distance


class MultiScaleSpectralLoss(nn.Module):
    """`multiscale_spectral_distance` as a module: forward(pred, target) with `[B, n_samples]` audio.

    Build it from a `SpectralLossConfig`, from keyword options that override
    the config's fields, or both:
    `MultiScaleSpectralLoss(fft_sizes=(1024, 256), reduction="none")`.
    """

    def __init__(self, config: SpectralLossConfig | None = None, **options: object) -> None:
        super().__init__()
        self.config = dataclasses.replace(config or SpectralLossConfig(), **options)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return multiscale_spectral_distance(pred, target, **dataclasses.asdict(self.config))

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in dataclasses.asdict(self.config).items())


def _hop_length(n_fft: int, overlap: float) -> int:
    return int(n_fft * (1.0 - overlap))
