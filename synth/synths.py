"""Thin `nn.Module` wrappers that turn network outputs into audio with `condgen.synth.dsp`.

The synthesizers map unbounded network outputs (logits) to positive
amplitudes with `exp_sigmoid` and have no trainable weights. `LearnedReverb`
has one trainable parameter, its impulse response.
"""

from __future__ import annotations

import torch
from torch import nn

from condgen.synth import dsp

__all__ = ["HarmonicSynth", "FilteredNoiseSynth", "LearnedReverb"]


class HarmonicSynth(nn.Module):
    """Harmonic oscillator bank driven by frame-rate logits.

    forward(f0_hz `[B, n_frames, 1]` in Hz, amplitude_logits `[B, n_frames, 1]`,
    distribution_logits `[B, n_frames, n_harmonics]`) returns audio `[B, n_samples]`.

    The overall amplitude is `exp_sigmoid(amplitude_logits)`. The harmonic
    distribution is `exp_sigmoid(distribution_logits)` with every harmonic at or
    above Nyquist set to zero, renormalised to sum to 1 over the remaining
    harmonics. So the harmonic amplitudes sum to the overall amplitude at any pitch.
    """

    def __init__(
        self,
        n_harmonics: int,
        sample_rate: int = 16000,
        n_samples: int = 64000,
        amplitude_upsampling: str = "hann",
    ) -> None:
        super().__init__()
        if n_harmonics < 1:
            raise ValueError(f"n_harmonics must be at least 1, got {n_harmonics}")
        if amplitude_upsampling not in dsp.UPSAMPLING_METHODS:
            raise ValueError(
                f"unknown amplitude_upsampling {amplitude_upsampling!r}; expected one of {dsp.UPSAMPLING_METHODS}"
            )
        self.n_harmonics = n_harmonics
        self.sample_rate = sample_rate
        self.n_samples = n_samples
        self.amplitude_upsampling = amplitude_upsampling

    def controls(
        self,
        f0_hz: torch.Tensor,
        amplitude_logits: torch.Tensor,
        distribution_logits: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Scale logits to synthesis controls.

        Returns a dict with "f0_hz" `[B, n_frames, 1]`, "amplitude" `[B, n_frames, 1]`
        and "harmonic_distribution" `[B, n_frames, n_harmonics]`, normalised
        below Nyquist.
        """
        if distribution_logits.shape[-1] != self.n_harmonics:
            raise ValueError(
                f"distribution_logits has {distribution_logits.shape[-1]} harmonics in its last dimension, "
                f"but this synthesizer was built with n_harmonics={self.n_harmonics}"
            )
        amplitude = dsp.exp_sigmoid(amplitude_logits)
        distribution = dsp.exp_sigmoid(distribution_logits)
        distribution = dsp.normalize_harmonic_distribution(distribution, f0_hz, self.sample_rate)
        return {"f0_hz": f0_hz, "amplitude": amplitude, "harmonic_distribution": distribution}

    def forward(
        self,
        f0_hz: torch.Tensor,
        amplitude_logits: torch.Tensor,
        distribution_logits: torch.Tensor,
    ) -> torch.Tensor:
        controls = self.controls(f0_hz, amplitude_logits, distribution_logits)
        synthesis = dsp.harmonic_synthesis
        if not f0_hz.requires_grad and self.n_samples % f0_hz.shape[1] == 0:
            synthesis = dsp.harmonic_synthesis_framewise
        return synthesis(
            controls["f0_hz"],
            controls["amplitude"],
            controls["harmonic_distribution"],
            n_samples=self.n_samples,
            sample_rate=self.sample_rate,
            amplitude_upsampling=self.amplitude_upsampling,
        )

    def extra_repr(self) -> str:
        return (
            f"n_harmonics={self.n_harmonics}, sample_rate={self.sample_rate}, n_samples={self.n_samples}, "
            f"amplitude_upsampling={self.amplitude_upsampling!r}"
        )


class FilteredNoiseSynth(nn.Module):
    """White noise through a time-varying filter driven by frame-rate logits.

    forward(magnitude_logits `[B, n_frames, n_bands]`, generator=None) returns
    audio `[B, n_samples]`. The band gains are
    `exp_sigmoid(magnitude_logits + initial_bias)`, for bands spaced evenly from
    0 Hz to Nyquist. The default bias of -5 starts training with quiet noise
    (a gain of about 2e-5, or -94 dB, for zero logits) so that it does not mask
    the harmonics.
    """

    def __init__(
        self,
        n_bands: int = 65,
        n_samples: int = 64000,
        initial_bias: float = -5.0,
        window_size: int | None = None,
    ) -> None:
        super().__init__()
        if n_bands < 2:
            raise ValueError(f"n_bands must be at least 2, got {n_bands}")
        self.n_bands = n_bands
        self.n_samples = n_samples
        self.initial_bias = initial_bias
        self.window_size = window_size

    def magnitudes(self, magnitude_logits: torch.Tensor) -> torch.Tensor:
        """Scale logits `[B, n_frames, n_bands]` to linear band gains of the same shape."""
        if magnitude_logits.shape[-1] != self.n_bands:
            raise ValueError(
                f"magnitude_logits has {magnitude_logits.shape[-1]} bands in its last dimension, "
                f"but this synthesizer was built with n_bands={self.n_bands}"
            )
        return dsp.exp_sigmoid(magnitude_logits + self.initial_bias)

    def forward(self, magnitude_logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return dsp.filtered_noise(
            self.magnitudes(magnitude_logits),
            self.n_samples,
            generator=generator,
            window_size=self.window_size,
        )

    def extra_repr(self) -> str:
        return f"n_bands={self.n_bands}, n_samples={self.n_samples}, initial_bias={self.initial_bias}"


class LearnedReverb(nn.Module):
    """Reverb with one trainable impulse response, shared by all notes.

    forward(audio `[B, n_samples]`) returns `[B, n_samples]`: the dry audio plus
    its causal convolution with the impulse response when `add_dry` is True
    (the response's first tap is then ignored, see `dsp.reverb`), or the
    convolution alone when it is False.

    The impulse response, `ir_seconds * sample_rate` samples, starts as uniform
    noise of peak `initial_level` under an exponential decay that reaches -60 dB
    at its end. With the defaults and white-noise input, the wet signal starts
    about 14 dB below the dry one. The generator seeded with `seed` makes the initial response
    reproducible.
    """

    def __init__(
        self,
        ir_seconds: float = 1.0,
        sample_rate: int = 16000,
        add_dry: bool = True,
        initial_level: float = 0.01,
        seed: int = 0,
    ) -> None:
        super().__init__()
        n_ir = round(ir_seconds * sample_rate)
        if n_ir < 2:
            raise ValueError(
                f"the impulse response must have at least 2 samples; ir_seconds={ir_seconds} at "
                f"{sample_rate} Hz gives {n_ir}"
            )
        self.sample_rate = sample_rate
        self.add_dry = add_dry

        generator = torch.Generator().manual_seed(seed)
        noise = 2.0 * torch.rand(n_ir, generator=generator) - 1.0
        # 10 ** (-3 t / T) falls by 60 dB over the length T of the response.
        decay = 10.0 ** (-3.0 * torch.arange(n_ir) / n_ir)
        self.impulse_response = nn.Parameter(initial_level * noise * decay)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return dsp.reverb(audio, self.impulse_response, add_dry=self.add_dry)

    def extra_repr(self) -> str:
        seconds = self.impulse_response.numel() / self.sample_rate
        return f"ir_seconds={seconds:g}, sample_rate={self.sample_rate}, add_dry={self.add_dry}"

