"""The DDSP head: a decoder from the conditioning vector to synthesizer controls.

The decoder maps the fused label vector to time-varying controls over a fixed
number of frames: an overall amplitude, a harmonic distribution and the
magnitudes of the noise bands. f0 is not learned: it comes from the MIDI pitch
label. A harmonic synthesizer and a filtered-noise synthesizer turn the
controls into audio, optionally followed by a learned reverb. The loss is the
multi-scale spectral distance to the real note.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from condgen.conditioning import Conditioner
from condgen.errors import RecipeError
from condgen.model import GeneratorModel
from condgen.registry import HeadSpec
from condgen.synth.dsp import midi_to_hz
from condgen.synth.losses import multiscale_spectral_distance
from condgen.synth.synths import FilteredNoiseSynth, HarmonicSynth, LearnedReverb

SAMPLE_RATE = 16000
N_SAMPLES = 64000


@dataclass
class DDSPConfig:
    """The `[model]` table of a DDSP recipe.

    `pitch_label` names the categorical label whose values are MIDI pitches;
    f0 in Hz comes from it. `n_frames` control frames span the whole note.
    """

    pitch_label: str = "pitch"
    n_frames: int = 250
    hidden_dim: int = 256
    time_dim: int = 32
    n_harmonics: int = 60
    n_noise_bands: int = 65
    reverb: bool = True
    reverb_seconds: float = 1.0
    fft_sizes: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128, 64])
    overlap: float = 0.75
    linear_weight: float = 1.0
    log_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("n_frames", "hidden_dim", "time_dim", "n_harmonics", "n_noise_bands"):
            if getattr(self, name) < 1:
                raise RecipeError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.overlap < 1:
            raise RecipeError(f"model.overlap must be within [0, 1), got {self.overlap}")
        if not self.fft_sizes or any(size < 8 for size in self.fft_sizes):
            raise RecipeError(f"model.fft_sizes must list FFT sizes of at least 8, got {self.fft_sizes}")
        if self.reverb and not 0 < self.reverb_seconds <= 4:
            raise RecipeError(f"model.reverb_seconds must be within (0, 4], got {self.reverb_seconds}")


class ControlDecoder(nn.Module):
    """Map `[B, cond_dim]` to per-frame features `[B, n_frames, hidden_dim]`.

    Each frame receives the conditioning vector and a learned embedding of its
    position in the note; two temporal convolutions then smooth the controls
    across neighbouring frames.
    """

    def __init__(self, cond_dim: int, n_frames: int, hidden_dim: int, time_dim: int):
        super().__init__()
        self.time_embedding = nn.Parameter(torch.randn(n_frames, time_dim) * 0.1)
        self.mlp = nn.Sequential(
            nn.Linear(cond_dim + time_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.LeakyReLU(0.1),
        )
        self.temporal = nn.Sequential(
            nn.Conv1d(hidden_dim, hidden_dim, kernel_size=5, padding=2),
            nn.LeakyReLU(0.1),
            nn.Conv1d(hidden_dim, hidden_dim, kernel_size=5, padding=2),
            nn.LeakyReLU(0.1),
        )

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        batch_size = conditioning.shape[0]
        n_frames = self.time_embedding.shape[0]
        frames = torch.cat(
            [conditioning.unsqueeze(1).expand(-1, n_frames, -1), self.time_embedding.unsqueeze(0).expand(batch_size, -1, -1)],
            dim=-1,
        )
        hidden = self.mlp(frames)
        return hidden + self.temporal(hidden.transpose(1, 2)).transpose(1, 2)


class DDSPModel(GeneratorModel):
    """Conditioning core plus the DDSP decoder and synthesizers; outputs audio `[B, n_samples]`."""

    media = "audio"

    def __init__(self, config: DDSPConfig, conditioner: Conditioner):
        super().__init__(conditioner)
        self.config = config
        spec = conditioner.specs.get(config.pitch_label)
        if spec is None or spec.kind != "categorical":
            raise RecipeError(
                f"model.pitch_label {config.pitch_label!r} must name a categorical conditioning label holding MIDI pitches; "
                f"the recipe conditions on {', '.join(conditioner.label_names)}"
            )
        vocabulary = conditioner.vocabularies[config.pitch_label]
        if not vocabulary.is_integer or min(vocabulary.values) < 0 or max(vocabulary.values) > 127:
            raise RecipeError(f"label {config.pitch_label!r} must hold MIDI pitches 0-127, got {vocabulary.describe()}")
        self.register_buffer("pitch_midi", torch.tensor(vocabulary.values, dtype=torch.float32), persistent=False)

        hidden = config.hidden_dim
        self.decoder = ControlDecoder(conditioner.config.fused_dim, config.n_frames, hidden, config.time_dim)
        self.to_amplitude = nn.Linear(hidden, 1)
        self.to_harmonics = nn.Linear(hidden, config.n_harmonics)
        self.to_noise = nn.Linear(hidden, config.n_noise_bands)
        self.harmonic = HarmonicSynth(n_harmonics=config.n_harmonics, sample_rate=SAMPLE_RATE, n_samples=N_SAMPLES)
        self.noise = FilteredNoiseSynth(n_bands=config.n_noise_bands, n_samples=N_SAMPLES)
        self.reverb = LearnedReverb(ir_seconds=config.reverb_seconds, sample_rate=SAMPLE_RATE) if config.reverb else None

    def f0_hz(self, pitch_input: torch.Tensor) -> torch.Tensor:
        """f0 `[B]` in Hz from pitch indices `[B]` or mixing weights `[B, n_pitches]`."""
        if pitch_input.dtype.is_floating_point:
            midi = pitch_input.to(self.pitch_midi.dtype) @ self.pitch_midi
        else:
            midi = self.pitch_midi[pitch_input]
        return midi_to_hz(midi)

    def forward(self, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        conditioning = self.conditioner(labels)
        f0_hz = self.f0_hz(labels[self.config.pitch_label])
        return self.synthesize(conditioning, f0_hz)

    def controls(self, conditioning: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw control logits per frame: amplitude `[B, T, 1]`, harmonics `[B, T, K]`, noise `[B, T, n_bands]`."""
        hidden = self.decoder(conditioning)
        return {
            "amplitude": self.to_amplitude(hidden),
            "harmonics": self.to_harmonics(hidden),
            "noise": self.to_noise(hidden),
        }

    def synthesize(self, conditioning: torch.Tensor, f0_hz: torch.Tensor) -> torch.Tensor:
        """Audio `[B, n_samples]` from the conditioning vector `[B, fused_dim]` and f0 `[B]` in Hz."""
        controls = self.controls(conditioning)
        f0_frames = f0_hz.reshape(-1, 1, 1).expand(-1, self.config.n_frames, 1)
        audio = self.harmonic(f0_frames, controls["amplitude"], controls["harmonics"])
        audio = audio + self.noise(controls["noise"])
        if self.reverb is not None:
            audio = self.reverb(audio)
        return audio

    def loss_terms(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        distance = multiscale_spectral_distance(
            output,
            target,
            fft_sizes=tuple(self.config.fft_sizes),
            overlap=self.config.overlap,
            linear_weight=self.config.linear_weight,
            log_weight=self.config.log_weight,
        )
        return {"spectral": distance}

    def extra_meta(self) -> dict:
        return {"sample_rate": SAMPLE_RATE, "n_samples": N_SAMPLES}


def build(config: DDSPConfig, conditioner: Conditioner, data_config) -> DDSPModel:
    return DDSPModel(config, conditioner)


HEAD = HeadSpec(name="ddsp", domain="nsynth", config_class=DDSPConfig, build=build)
