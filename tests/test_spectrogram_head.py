"""Tests of the spectrogram head: shapes, loss against a librosa oracle, gradients, rendering and its options."""

import math

import librosa
import numpy as np
import pytest
import torch

from condgen.conditioning import Conditioner, ConditioningConfig, LabelSpec, Vocabulary
from condgen.errors import CondgenError, RecipeError
from condgen.recipe import load_recipe
from condgen.registry import get_head
from condgen.synth import spectral
from condgen.synth.spectrogram import SpectrogramConfig, SpectrogramModel

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000
N_SAMPLES = 64000
# Small enough to train a step in well under a second on one core.
TINY = {"n_fft": 512, "hop_length": 256, "channels": [8, 8, 4], "n_mels": 32, "griffin_lim_iters": 4}


def _conditioner() -> Conditioner:
    labels = [LabelSpec("instrument_str", dim=4), LabelSpec("pitch", dim=4), LabelSpec("velocity", dim=2)]
    vocabularies = {
        "instrument_str": Vocabulary("instrument_str", ["guitar_acoustic_000", "keyboard_electronic_001"]),
        "pitch": Vocabulary("pitch", [48, 60, 72]),
        "velocity": Vocabulary("velocity", [75, 127]),
    }
    return Conditioner(ConditioningConfig(labels=labels, fused_dim=8), vocabularies)


def _model(**options) -> SpectrogramModel:
    torch.manual_seed(0)
    return SpectrogramModel(SpectrogramConfig(**{**TINY, **options}), _conditioner())


def _inputs(model: SpectrogramModel, batch_size: int = 2) -> dict[str, torch.Tensor]:
    values = {
        "instrument_str": ["guitar_acoustic_000", "keyboard_electronic_001"] * (batch_size // 2),
        "pitch": [60, 72] * (batch_size // 2),
        "velocity": [127, 75] * (batch_size // 2),
    }
    return model.conditioner.encode_values(values)


def _notes(batch_size: int = 2) -> torch.Tensor:
    """Decaying sines at 220 Hz and 330 Hz, `[batch_size, 64000]`."""
    time_s = torch.arange(N_SAMPLES, dtype=torch.float64) / SAMPLE_RATE
    rows = [0.5 * torch.sin(2 * math.pi * (220.0 + 110.0 * (i % 2)) * time_s) * torch.exp(-time_s) for i in range(batch_size)]
    return torch.stack(rows).float()


@pytest.mark.parametrize(
    "options,shape",
    [
        ({}, (2, 1, 257, 251)),
        ({"scale": "mel"}, (2, 1, 32, 251)),
        ({"instantaneous_frequency": True}, (2, 2, 257, 251)),
    ],
)
def test_output_shape_and_gradients(options, shape):
    model = _model(**options)
    output = model(_inputs(model))
    assert output.shape == shape
    assert torch.isfinite(output).all()
    assert output.shape[-1] == spectral.n_stft_frames(N_SAMPLES, model.config.hop_length)
    terms = model.loss_terms(output, _notes())
    sum(terms.values()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_default_shape_matches_stft():
    config = SpectrogramConfig()
    spectrum = torch.stft(torch.zeros(1, N_SAMPLES), config.n_fft, config.hop_length, window=torch.hann_window(config.n_fft), center=True, return_complex=True)
    assert (config.n_bins, config.n_frames) == tuple(spectrum.shape[-2:])


def test_loss_matches_librosa_oracle():
    model = _model()
    audio = _notes()
    output = model(_inputs(model))
    magnitude = np.abs(librosa.stft(audio.numpy(), n_fft=512, hop_length=256, center=True, pad_mode="reflect"))
    expected = np.abs(output[:, 0].detach().numpy() - np.log(magnitude + model.config.log_eps)).mean()
    terms = model.loss_terms(output, audio)
    assert set(terms) == {"log_magnitude"}
    assert terms["log_magnitude"].item() == pytest.approx(expected, rel=1e-4)


def test_mel_loss_uses_mel_bands():
    model = _model(scale="mel")
    audio = _notes()
    output = model(_inputs(model))
    magnitude = np.abs(librosa.stft(audio.numpy(), n_fft=512, hop_length=256, center=True, pad_mode="reflect"))
    mel = librosa.feature.melspectrogram(S=magnitude, sr=SAMPLE_RATE, n_fft=512, n_mels=32, htk=True, norm=None, power=1.0)
    expected = np.abs(output[:, 0].detach().numpy() - np.log(mel + model.config.log_eps)).mean()
    assert model.loss_terms(output, audio)["log_magnitude"].item() == pytest.approx(expected, rel=1e-3)


def test_if_loss_terms():
    model = _model(instantaneous_frequency=True, if_weight=0.5)
    output = model(_inputs(model))
    assert output[:, 1].abs().max() < 1
    # White noise puts energy in every bin, so that float32 rounding cannot
    # flip the phase of a near-silent bin between torch and librosa.
    audio = 0.1 * torch.randn(2, N_SAMPLES, generator=torch.Generator().manual_seed(0))
    terms = model.loss_terms(output, audio)
    assert set(terms) == {"log_magnitude", "if"}
    phase = np.angle(librosa.stft(audio.numpy(), n_fft=512, hop_length=256, center=True, pad_mode="reflect"))
    target = np.concatenate([phase[..., :1], np.diff(np.unwrap(phase, axis=-1), axis=-1)], axis=-1) / np.pi
    # numpy keeps steps of exactly pi (DC and Nyquist bins) as +1, and the head maps them into [-1, 1).
    target = np.where(target >= 1.0, target - 2.0, target)
    expected = 0.5 * np.abs(output[:, 1].detach().numpy() - target).mean()
    # A few steps within rounding of +-pi land on the other end of the range
    # in one of the two computations, which moves the mean by about 0.1 %.
    assert terms["if"].item() == pytest.approx(expected, rel=5e-3)


@pytest.mark.parametrize("options", [{}, {"instantaneous_frequency": True}, {"scale": "mel"}])
def test_silent_target_finite_loss(options):
    model = _model(**options)
    output = model(_inputs(model))
    terms = model.loss_terms(output, torch.zeros(2, N_SAMPLES))
    loss = sum(terms.values())
    assert torch.isfinite(loss)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name


def test_render_if_reproduces_target():
    model = _model(instantaneous_frequency=True)
    audio = _notes()
    rendered = model.render(model.spectrogram(audio))
    assert rendered.shape == (2, N_SAMPLES)
    # The float32 log and exp round trip is not exact: the error measured 2.8e-6.
    assert (rendered - audio).abs().max() < 1e-4


def test_render_griffin_lim_converges():
    model = _model(griffin_lim_iters=32)
    audio = _notes()
    rendered = model.render(model.spectrogram(audio))
    assert rendered.shape == (2, N_SAMPLES)
    target = np.abs(librosa.stft(audio.numpy(), n_fft=512, hop_length=256, pad_mode="reflect"))
    result = np.abs(librosa.stft(rendered.numpy(), n_fft=512, hop_length=256, pad_mode="reflect"))
    convergence = np.linalg.norm(target - result) / np.linalg.norm(target)
    assert convergence < 0.2


def test_render_mel_returns_audio():
    model = _model(scale="mel")
    rendered = model.render(model.spectrogram(_notes()))
    assert rendered.shape == (2, N_SAMPLES)
    assert torch.isfinite(rendered).all()
    # The 220 Hz note survives the mel projection and its pseudo-inverse.
    spectrum = torch.fft.rfft(rendered[0].double()).abs()
    assert abs(spectrum.argmax().item() * SAMPLE_RATE / N_SAMPLES - 220.0) < 16000 / 512


def test_render_silence_is_finite():
    for options in ({}, {"instantaneous_frequency": True}, {"scale": "mel"}):
        model = _model(**options)
        rendered = model.render(model.spectrogram(torch.zeros(1, N_SAMPLES)))
        assert torch.isfinite(rendered).all(), options
        assert rendered.abs().max() < 1e-6, options


def test_render_defaults_come_from_config():
    model = _model(griffin_lim_iters=3, griffin_lim_momentum=0.5, griffin_lim_seed=7)
    spectrogram = model.spectrogram(_notes())
    default = model.render(spectrogram)
    explicit = model.render(spectrogram, n_iter=3, momentum=0.5, seed=7)
    assert torch.equal(default, explicit)
    assert not torch.allclose(model.render(spectrogram, seed=8), default)
    assert not torch.allclose(model.render(spectrogram, n_iter=4), default)


def test_render_options_depend_on_mode():
    assert _model().render_options() == {"n_iter", "momentum", "seed"}
    model = _model(instantaneous_frequency=True)
    assert model.render_options() == frozenset()
    with pytest.raises(CondgenError) as error:
        model.render(model.spectrogram(_notes()), n_iter=4)
    assert "n_iter" in str(error.value)
    assert "without Griffin-Lim" in str(error.value)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"n_iter": 0}, "griffin_lim_iters must be an integer of at least 1"),
        ({"momentum": 1.0}, "griffin_lim_momentum must be a number in [0, 1)"),
        ({"seed": -1}, "griffin_lim_seed must be an integer in [0, 2**63)"),
        ({"n_fft": 512}, "n_fft"),
    ],
)
def test_render_rejects_bad_options(options, message):
    model = _model()
    with pytest.raises(CondgenError) as error:
        model.render(model.spectrogram(_notes()), **options)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"scale": "mel", "instantaneous_frequency": True}, "model.instantaneous_frequency = true needs model.scale"),
        ({"hop_length": 300}, "model.hop_length must be within [1, n_fft / 2 = 256]"),
        ({"scale": "log"}, "model.scale must be one of linear, mel"),
        ({"channels": []}, "model.channels"),
        ({"griffin_lim_momentum": 1.5}, "model.griffin_lim_momentum"),
        ({"scale": "mel", "n_mels": 300}, "model.n_mels"),
    ],
)
def test_config_rejects_bad_values(options, message):
    with pytest.raises(RecipeError) as error:
        SpectrogramConfig(**{**TINY, **options})
    assert message in str(error.value)


def test_recipe_builds_default_model():
    recipe = load_recipe(REPO_ROOT / "recipes" / "nsynth_spectrogram.toml")
    assert recipe.head == "spectrogram"
    assert recipe.train.max_minutes == 28
    assert get_head("spectrogram").config_class is SpectrogramConfig
    assert isinstance(recipe.model, SpectrogramConfig)
    assert recipe.model.n_bins == 513
    assert recipe.model.n_frames == 251
