"""The spectrogram head: a 2D CNN from the conditioning vector to a log-magnitude spectrogram, rendered to audio.

The decoder maps the fused label vector `[B, fused_dim]` through a linear
layer to a small grid of features and doubles its height and width in each
upsampling stage. It crops the result to the exact STFT shape of a 4 s note,
`[B, C, n_bins, n_frames]` with `n_frames = 1 + 64000 // hop_length`.
Channel 0 is the natural log of the STFT magnitude plus `log_eps`, over linear
frequency bins (`scale = "linear"`) or mel bands (`scale = "mel"`). With
`instantaneous_frequency = true`, channel 1 is the instantaneous frequency in
[-1, 1) of GANSynth (Engel et al., "GANSynth: Adversarial Neural Audio
Synthesis", ICLR 2019).

Training compares the output with the same representation of the real note,
by L1 distance. `render` turns the spectrogram into audio: Griffin-Lim from
the magnitude alone, or, with the instantaneous-frequency channel, a plain
inverse STFT of the magnitude and the integrated phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from condgen.conditioning import Conditioner
from condgen.errors import CondgenError, RecipeError
from condgen.model import GeneratorModel
from condgen.registry import HeadSpec
from condgen.synth import spectral
from condgen.synth.nsynth import N_SAMPLES, SAMPLE_RATE

SCALES = ("linear", "mel")

# Keyword options of `SpectrogramModel.render` in Griffin-Lim mode.
GRIFFIN_LIM_OPTIONS = frozenset({"n_iter", "momentum", "seed"})


@dataclass
class SpectrogramConfig:
    """The `[model]` table of a spectrogram recipe.

    `n_fft` and `hop_length` (samples) set the STFT. `scale` is "linear" for
    `n_fft // 2 + 1` frequency bins or "mel" for `n_mels` HTK mel bands.
    `channels` lists the feature channels of the starting grid and of each
    upsampling stage: every entry after the first adds a stage that doubles
    height and width. `log_eps` is added to magnitudes before the logarithm.
    `instantaneous_frequency` adds the phase channel (linear scale only).
    `griffin_lim_*` are the default rendering settings, which
    `condgen generate` can override.
    """

    n_fft: int = 1024
    hop_length: int = 256
    scale: str = "linear"
    n_mels: int = 128
    instantaneous_frequency: bool = False
    channels: list[int] = field(default_factory=lambda: [256, 192, 128, 64, 32, 16, 8])
    kernel_size: int = 3
    negative_slope: float = 0.2
    # 1e-3 lies above the magnitude of 16-bit quantisation noise in a bin
    # (about 3e-4 at n_fft 1024), so the loss does not chase that noise.
    log_eps: float = 1e-3
    log_magnitude_weight: float = 1.0
    if_weight: float = 1.0
    griffin_lim_iters: int = 32
    griffin_lim_momentum: float = 0.99
    griffin_lim_seed: int = 0

    def __post_init__(self) -> None:
        if self.n_fft < 16 or self.n_fft > N_SAMPLES:
            raise RecipeError(f"model.n_fft must be within [16, {N_SAMPLES}], got {self.n_fft}")
        if not 1 <= self.hop_length <= self.n_fft // 2:
            raise RecipeError(
                f"model.hop_length must be within [1, n_fft / 2 = {self.n_fft // 2}] so that the Hann windows overlap enough to invert the STFT, got {self.hop_length}"
            )
        if self.scale not in SCALES:
            raise RecipeError(f"model.scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if self.scale == "mel" and not 1 <= self.n_mels <= self.n_fft // 2 + 1:
            raise RecipeError(f"model.n_mels must be within [1, n_fft / 2 + 1 = {self.n_fft // 2 + 1}], got {self.n_mels}")
        if self.scale == "mel" and self.instantaneous_frequency:
            raise RecipeError(
                "model.instantaneous_frequency = true needs model.scale = \"linear\": the phase channel is defined per "
                "linear STFT bin. Set model.scale = \"linear\", or instantaneous_frequency = false to render mel spectrograms with Griffin-Lim"
            )
        if not self.channels or any(channels < 1 for channels in self.channels):
            raise RecipeError(f"model.channels must be a non-empty list of positive channel counts, got {self.channels}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise RecipeError(f"model.kernel_size must be a positive odd number, got {self.kernel_size}")
        if not self.log_eps > 0:
            raise RecipeError(f"model.log_eps must be positive, got {self.log_eps}")
        for name in ("log_magnitude_weight", "if_weight"):
            if getattr(self, name) < 0:
                raise RecipeError(f"model.{name} must not be negative, got {getattr(self, name)}")
        check_griffin_lim_settings(self.griffin_lim_iters, self.griffin_lim_momentum, self.griffin_lim_seed, prefix="model.griffin_lim_")

    @property
    def n_bins(self) -> int:
        """Height of the spectrogram: mel bands or linear STFT bins."""
        return self.n_mels if self.scale == "mel" else self.n_fft // 2 + 1

    @property
    def n_frames(self) -> int:
        """Width of the spectrogram: STFT frames of a 64,000-sample note."""
        return spectral.n_stft_frames(N_SAMPLES, self.hop_length)

    @property
    def n_channels(self) -> int:
        return 2 if self.instantaneous_frequency else 1


def check_griffin_lim_settings(n_iter: int, momentum: float, seed: int, prefix: str) -> None:
    """Raise `RecipeError` unless n_iter >= 1, 0 <= momentum < 1 and seed is in [0, 2**63); `prefix` starts each name."""
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise RecipeError(f"{prefix}iters must be an integer of at least 1, got {n_iter!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
        raise RecipeError(f"{prefix}momentum must be a number in [0, 1) (0 gives plain Griffin-Lim), got {momentum!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise RecipeError(f"{prefix}seed must be an integer in [0, 2**63), got {seed!r}")


class UpsamplingDecoder2d(nn.Module):
    """Map `[B, cond_dim]` to `[B, out_channels, height, width]` through a linear layer and upsampling conv stages.

    The linear layer fills a `[channels[0], ceil(height / 2**S), ceil(width / 2**S)]`
    grid, where S = len(channels) - 1 stages each double the grid by nearest
    neighbour upsampling followed by a convolution. A 1x1 convolution maps to
    `out_channels`, and the result is cropped to `[height, width]`. A 3x3
    output convolution made a training step about 20 % slower, because it
    runs at full resolution with a single output channel.
    """

    def __init__(self, cond_dim: int, out_channels: int, height: int, width: int, channels: list[int], kernel_size: int, negative_slope: float):
        super().__init__()
        n_stages = len(channels) - 1
        self.height, self.width = height, width
        self.grid_height = math.ceil(height / 2**n_stages)
        self.grid_width = math.ceil(width / 2**n_stages)
        self.grid_channels = channels[0]
        self.to_grid = nn.Linear(cond_dim, channels[0] * self.grid_height * self.grid_width)
        self.activation = nn.LeakyReLU(negative_slope)
        padding = kernel_size // 2
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(in_channels, stage_channels, kernel_size, padding=padding),
                nn.LeakyReLU(negative_slope),
            )
            for in_channels, stage_channels in zip(channels[:-1], channels[1:])
        )
        self.to_output = nn.Conv2d(channels[-1], out_channels, kernel_size=1)

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        grid = self.to_grid(conditioning).view(-1, self.grid_channels, self.grid_height, self.grid_width)
        features = self.activation(grid)
        for stage in self.stages:
            features = stage(features)
        return self.to_output(features)[:, :, : self.height, : self.width]


class SpectrogramModel(GeneratorModel):
    """Conditioning core plus a 2D CNN decoder that outputs a spectrogram `[B, C, n_bins, n_frames]`, rendered to audio `[B, 64000]`."""

    media = "audio"

    def __init__(self, config: SpectrogramConfig, conditioner: Conditioner):
        super().__init__(conditioner)
        self.config = config
        self.decoder = UpsamplingDecoder2d(
            conditioner.config.fused_dim,
            config.n_channels,
            config.n_bins,
            config.n_frames,
            config.channels,
            config.kernel_size,
            config.negative_slope,
        )
        # A decoder output of 0 is the floor log(log_eps), and 1 is the peak
        # magnitude of a full-scale sine (n_fft / 4 with a Hann window), so the
        # untrained model starts near silence.
        self.log_floor = math.log(config.log_eps)
        self.log_range = math.log(config.n_fft / 4) - self.log_floor
        if config.scale == "mel":
            filterbank = spectral.mel_filterbank(config.n_fft, config.n_mels, SAMPLE_RATE)
            self.register_buffer("mel_filterbank", filterbank, persistent=False)
            self.register_buffer("mel_inverse", spectral.mel_pseudo_inverse(filterbank), persistent=False)

    def decode(self, conditioning: torch.Tensor) -> torch.Tensor:
        raw = self.decoder(conditioning)
        log_magnitude = self.log_floor + self.log_range * raw[:, :1]
        if not self.config.instantaneous_frequency:
            return log_magnitude
        return torch.cat([log_magnitude, torch.tanh(raw[:, 1:])], dim=1)

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """Compute the training target `[B, C, n_bins, n_frames]` of audio `[B, 64000]`, in the layout of the output."""
        config = self.config
        spectrum = spectral.stft(audio, config.n_fft, config.hop_length)
        magnitude = spectrum.abs()
        if config.scale == "mel":
            magnitude = spectral.linear_to_mel(magnitude, self.mel_filterbank)
        channels = [spectral.log_magnitude(magnitude, config.log_eps)]
        if config.instantaneous_frequency:
            channels.append(spectral.instantaneous_frequency(torch.angle(spectrum)))
        return torch.stack(channels, dim=1)

    def loss_terms(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the L1 distance of each output channel to the spectrogram of the target audio `[B, 64000]`."""
        if target.dim() != 2 or target.shape[-1] != N_SAMPLES:
            raise ValueError(f"the spectrogram head trains on audio [B, {N_SAMPLES}], got a target of shape {tuple(target.shape)}")
        with torch.no_grad():
            reference = self.spectrogram(target.float())
        terms = {"log_magnitude": self.config.log_magnitude_weight * (output[:, 0] - reference[:, 0]).abs().mean()}
        if self.config.instantaneous_frequency:
            terms["if"] = self.config.if_weight * (output[:, 1] - reference[:, 1]).abs().mean()
        return terms

    def render_options(self) -> frozenset[str]:
        return frozenset() if self.config.instantaneous_frequency else GRIFFIN_LIM_OPTIONS

    def describe_rendering(self) -> str:
        if self.config.instantaneous_frequency:
            return "predicts the instantaneous frequency and renders with a plain inverse STFT, without Griffin-Lim"
        return f"renders its {self.config.scale} log-magnitude spectrogram with Griffin-Lim"

    def render(self, output: torch.Tensor, **options: Any) -> torch.Tensor:
        """Turn a spectrogram `[B, C, n_bins, n_frames]` from `decode` into audio `[B, 64000]`.

        In Griffin-Lim mode the keyword options `n_iter`, `momentum` and `seed`
        override `model.griffin_lim_iters`, `griffin_lim_momentum` and
        `griffin_lim_seed`. Mel magnitudes are first mapped back to linear bins
        with the pseudo-inverse of the mel filterbank. With the
        instantaneous-frequency channel there are no options.
        """
        self.check_render_options(options)
        config = self.config
        expected = (config.n_channels, config.n_bins, config.n_frames)
        if output.dim() != 4 or tuple(output.shape[1:]) != expected:
            raise ValueError(f"render expects a spectrogram [B, {', '.join(map(str, expected))}], got {tuple(output.shape)}")
        output = output.float()
        magnitude = spectral.magnitude_from_log(output[:, 0], config.log_eps)
        if config.scale == "mel":
            magnitude = spectral.mel_to_linear(magnitude, self.mel_inverse)
        if config.instantaneous_frequency:
            phase = spectral.phase_from_instantaneous_frequency(output[:, 1])
            return spectral.istft(magnitude, phase, config.n_fft, config.hop_length, N_SAMPLES)

        n_iter = options.get("n_iter", config.griffin_lim_iters)
        momentum = options.get("momentum", config.griffin_lim_momentum)
        seed = options.get("seed", config.griffin_lim_seed)
        try:
            check_griffin_lim_settings(n_iter, momentum, seed, prefix="griffin_lim_")
        except RecipeError as error:
            raise CondgenError(str(error)) from None
        return spectral.griffin_lim(magnitude, config.n_fft, config.hop_length, N_SAMPLES, n_iter=n_iter, momentum=momentum, seed=seed)

    def extra_meta(self) -> dict:
        return {"sample_rate": SAMPLE_RATE, "n_samples": N_SAMPLES}


def build(config: SpectrogramConfig, conditioner: Conditioner, data_config) -> SpectrogramModel:
    return SpectrogramModel(config, conditioner)


HEAD = HeadSpec(name="spectrogram", domain="nsynth", config_class=SpectrogramConfig, build=build)
