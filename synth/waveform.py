"""The `waveform` head: a 1D convolutional decoder from the conditioning vector straight to audio samples.

The design follows SING (Défossez, Zeghidour, Usunier, Bottou and Bach,
"SING: Symbol-to-Instrument Neural Generator", NeurIPS 2018): no synthesizer
and no pitch input, only learned convolutions from the fused labels to the
waveform, trained with a spectral loss. A per-frame MLP maps the fused vector
and a learned position embedding to a short sequence of frames
`[B, base_channels, n_frames]`. Upsampling stages then multiply the length by
their `strides` and reduce the channels, and a last convolution gives one
channel at audio rate. The first 64,000 samples, the length of an NSynth
note, are kept.

The loss is the multi-scale spectral distance to the real note, as for the
DDSP head, plus an optional L1 distance between the waveforms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from condgen.conditioning import Conditioner
from condgen.errors import RecipeError
from condgen.model import GeneratorModel
from condgen.registry import HeadSpec
from condgen.synth.losses import multiscale_spectral_distance
from condgen.synth.nsynth import N_SAMPLES, SAMPLE_RATE

UPSAMPLE_KINDS = ("transposed", "nearest", "linear")


@dataclass
class WaveformConfig:
    """The `[model]` table of a waveform recipe.

    The frame MLP maps the fused vector and a `time_dim` position embedding
    to `n_frames` frames of `base_channels` channels, through `hidden_dim`
    units. Stage i upsamples by `strides[i]`. Its output width is
    `channels[i]` when `channels` is given, else `base_channels` halved once
    per stage and kept at `min_channels` or more. `n_frames * prod(strides)`
    must reach the 64,000 samples of a note, and the surplus is cropped.

    `upsample = "transposed"` upsamples with a transposed convolution of
    kernel `2 * stride`. `"nearest"` and `"linear"` repeat or interpolate
    the samples, then apply a convolution of `kernel_size`. Each stage adds
    `convs_per_stage - 1` convolutions of `kernel_size` at the new length.

    `fft_sizes`, `overlap`, `linear_weight` and `log_weight` set the spectral
    loss as in `condgen.synth.losses.SpectralLossConfig`. A positive
    `waveform_l1_weight` adds the weighted mean absolute sample difference.
    """

    n_frames: int = 16
    time_dim: int = 32
    hidden_dim: int = 256
    base_channels: int = 256
    min_channels: int = 16
    channels: list[int] = field(default_factory=list)
    strides: list[int] = field(default_factory=lambda: [4, 4, 4, 4, 4, 4])
    upsample: str = "transposed"
    kernel_size: int = 9
    convs_per_stage: int = 1
    negative_slope: float = 0.2
    fft_sizes: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128, 64])
    overlap: float = 0.75
    linear_weight: float = 1.0
    log_weight: float = 1.0
    waveform_l1_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_frames", "time_dim", "hidden_dim", "base_channels", "min_channels", "convs_per_stage"):
            if getattr(self, name) < 1:
                raise RecipeError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.upsample not in UPSAMPLE_KINDS:
            raise RecipeError(f"model.upsample {self.upsample!r} is invalid; use one of {', '.join(UPSAMPLE_KINDS)}")
        self._check_strides()
        if self.channels and len(self.channels) != len(self.strides):
            raise RecipeError(
                f"model.channels lists {len(self.channels)} widths but model.strides has {len(self.strides)} stages; "
                "give one width per stage or leave model.channels empty"
            )
        if any(width < 1 for width in self.channels):
            raise RecipeError(f"model.channels must list positive widths, got {self.channels}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise RecipeError(f"model.kernel_size must be an odd number of at least 1, so that convolutions keep the length; got {self.kernel_size}")
        if not 0 <= self.negative_slope < 1:
            raise RecipeError(f"model.negative_slope must be within [0, 1), got {self.negative_slope}")
        if not 0 <= self.overlap < 1:
            raise RecipeError(f"model.overlap must be within [0, 1), got {self.overlap}")
        if not self.fft_sizes or any(size < 8 for size in self.fft_sizes):
            raise RecipeError(f"model.fft_sizes must list FFT sizes of at least 8, got {self.fft_sizes}")
        for name in ("linear_weight", "log_weight", "waveform_l1_weight"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise RecipeError(f"model.{name} must be a finite number of 0 or more, got {value}")
        if self.linear_weight == 0 and self.log_weight == 0:
            raise RecipeError("model.linear_weight and model.log_weight are both 0, which turns the spectral loss off; set at least one above 0")

    def _check_strides(self) -> None:
        if not self.strides:
            raise RecipeError("model.strides is empty; list one upsampling factor per stage, e.g. strides = [4, 4, 4, 4, 4, 4]")
        if any(stride < 2 for stride in self.strides):
            raise RecipeError(f"model.strides must list factors of at least 2, got {self.strides}; remove stages that do not upsample")
        length = self.n_frames * math.prod(self.strides)
        if length < N_SAMPLES:
            needed = math.ceil(N_SAMPLES / self.n_frames)
            raise RecipeError(
                f"model.n_frames * prod(model.strides) = {self.n_frames} * {math.prod(self.strides)} = {length} samples, "
                f"shorter than a note of {N_SAMPLES}; with n_frames = {self.n_frames}, prod(strides) must be at least {needed}"
            )

    def stage_channels(self) -> list[int]:
        """Return the output channels of each upsampling stage."""
        if self.channels:
            return list(self.channels)
        return [max(self.min_channels, self.base_channels >> (i + 1)) for i in range(len(self.strides))]


class UpsampleStage1d(nn.Module):
    """One decoder stage: `[B, in_channels, L]` -> `[B, out_channels, stride * L]`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, config: WaveformConfig):
        super().__init__()
        layers: list[nn.Module] = []
        if config.upsample == "transposed":
            # With kernel 2s the output length (L - 1) s - 2p + 2s + q equals s L
            # for padding p = ceil(s / 2) and output padding q = s mod 2.
            padding = (stride + 1) // 2
            layers.append(
                nn.ConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride, padding=padding, output_padding=stride % 2)
            )
        else:
            upsample_options = {"align_corners": False} if config.upsample == "linear" else {}
            layers.append(nn.Upsample(scale_factor=stride, mode=config.upsample, **upsample_options))
            layers.append(nn.Conv1d(in_channels, out_channels, config.kernel_size, padding=config.kernel_size // 2))
        layers.append(nn.LeakyReLU(config.negative_slope))
        for _ in range(config.convs_per_stage - 1):
            layers.append(nn.Conv1d(out_channels, out_channels, config.kernel_size, padding=config.kernel_size // 2))
            layers.append(nn.LeakyReLU(config.negative_slope))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class FrameDecoder(nn.Module):
    """Map `[B, cond_dim]` to frames `[B, channels, n_frames]`.

    Every frame receives the same conditioning vector and a learned embedding
    of its position, so an MLP shared by the frames can still make them differ
    in time.
    """

    def __init__(self, cond_dim: int, n_frames: int, time_dim: int, hidden_dim: int, channels: int, negative_slope: float):
        super().__init__()
        self.time_embedding = nn.Parameter(torch.randn(n_frames, time_dim))
        self.mlp = nn.Sequential(
            nn.Linear(cond_dim + time_dim, hidden_dim),
            nn.LeakyReLU(negative_slope),
            nn.Linear(hidden_dim, channels),
            nn.LeakyReLU(negative_slope),
        )

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        batch_size = conditioning.shape[0]
        n_frames = self.time_embedding.shape[0]
        frames = torch.cat(
            [
                conditioning.unsqueeze(1).expand(-1, n_frames, -1),
                self.time_embedding.unsqueeze(0).expand(batch_size, -1, -1),
            ],
            dim=-1,
        )
        return self.mlp(frames).transpose(1, 2)


class WaveformModel(GeneratorModel):
    """Conditioning core plus the convolutional waveform decoder; outputs audio `[B, n_samples]` in (-1, 1)."""

    media = "audio"

    def __init__(self, config: WaveformConfig, conditioner: Conditioner):
        super().__init__(conditioner)
        self.config = config
        self.frames = FrameDecoder(
            conditioner.config.fused_dim, config.n_frames, config.time_dim, config.hidden_dim, config.base_channels, config.negative_slope
        )
        stages = []
        in_channels = config.base_channels
        for stride, out_channels in zip(config.strides, config.stage_channels()):
            stages.append(UpsampleStage1d(in_channels, out_channels, stride, config))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.to_audio = nn.Conv1d(in_channels, 1, config.kernel_size, padding=config.kernel_size // 2)
        self.reset_decoder_parameters()

    def reset_decoder_parameters(self) -> None:
        """Initialise the decoder so that activations keep their scale from the frames to the audio.

        PyTorch's default initialisation shrinks activations at every layer:
        the untrained default model then outputs noise with a standard
        deviation of about 0.002 on a DC offset of about 0.02 from the biases.
        Weights are drawn with He et al.'s variance for the leaky ReLU that
        follows, from the number of inputs that reach one output sample. For a
        transposed convolution that is `in_channels * kernel / stride`, not
        the fan-in PyTorch computes. Biases start at 0.
        """
        gain = nn.init.calculate_gain("leaky_relu", self.config.negative_slope)
        for module in [*self.frames.modules(), *self.stages.modules(), self.to_audio]:
            if isinstance(module, nn.ConvTranspose1d):
                in_channels, _, kernel = module.weight.shape
                fan_in = in_channels * kernel / module.stride[0]
            elif isinstance(module, nn.Conv1d):
                _, in_channels, kernel = module.weight.shape
                fan_in = in_channels * kernel
            elif isinstance(module, nn.Linear):
                fan_in = module.in_features
            else:
                continue
            # The last layer feeds tanh, not a leaky ReLU. Its gain of 0.1 gives
            # untrained output noise of about 0.07-0.09 RMS (measured on the
            # default and a tiny model), quieter than most notes.
            std = (0.1 if module is self.to_audio else gain) / math.sqrt(fan_in)
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)

    def decode(self, conditioning: torch.Tensor) -> torch.Tensor:
        features = self.stages(self.frames(conditioning))
        # tanh, not a scaled identity: NSynth audio lies in [-1, 1] and the WAV
        # writer clips there, so the bound costs nothing. Near 0 tanh is close to
        # the identity, so quiet passages train as if there were no activation.
        audio = torch.tanh(self.to_audio(features).squeeze(1))
        return audio[:, :N_SAMPLES]

    def loss_terms(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {
            "spectral": multiscale_spectral_distance(
                output,
                target,
                fft_sizes=tuple(self.config.fft_sizes),
                overlap=self.config.overlap,
                linear_weight=self.config.linear_weight,
                log_weight=self.config.log_weight,
            )
        }
        if self.config.waveform_l1_weight > 0:
            terms["waveform_l1"] = self.config.waveform_l1_weight * F.l1_loss(output, target)
        return terms

    def extra_meta(self) -> dict:
        return {"sample_rate": SAMPLE_RATE, "n_samples": N_SAMPLES}


def build(config: WaveformConfig, conditioner: Conditioner, data_config) -> WaveformModel:
    return WaveformModel(config, conditioner)


HEAD = HeadSpec(name="waveform", domain="nsynth", config_class=WaveformConfig, build=build)
