"""Tests of the multi-scale spectral distance against a librosa STFT reimplementation."""

import math

import librosa
import numpy as np
import pytest
import torch

from condgen.synth.losses import (
    MultiScaleSpectralLoss,
    SpectralLossConfig,
    magnitude_spectrogram,
    multiscale_spectral_distance,
)

FFT_SIZES = (2048, 1024, 512, 256, 128, 64)


def _librosa_magnitudes(audio: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """Magnitudes of frames starting at sample 0, the end zero-padded to cover every sample."""
    n_frames = math.ceil(len(audio) / hop_length)
    padded = np.pad(audio, (0, (n_frames - 1) * hop_length + n_fft - len(audio)))
    spectrum = librosa.stft(padded, n_fft=n_fft, hop_length=hop_length, window="hann", center=False)
    assert spectrum.shape[1] == n_frames
    return np.abs(spectrum)


def _reference_distance(
    pred: np.ndarray,
    target: np.ndarray,
    fft_sizes=FFT_SIZES,
    overlap: float = 0.75,
    linear_weight: float = 1.0,
    log_weight: float = 1.0,
    eps: float = 1e-7,
) -> np.ndarray:
    """Per-item distance `[B]`, computed with librosa in float64."""
    distances = np.zeros(len(pred))
    for item in range(len(pred)):
        for n_fft in fft_sizes:
            hop_length = int(n_fft * (1.0 - overlap))
            pred_mag = _librosa_magnitudes(pred[item], n_fft, hop_length)
            target_mag = _librosa_magnitudes(target[item], n_fft, hop_length)
            distances[item] += linear_weight * np.mean(np.abs(pred_mag - target_mag))
            distances[item] += log_weight * np.mean(np.abs(np.log(pred_mag + eps) - np.log(target_mag + eps)))
    return distances


@pytest.fixture(scope="module")
def signals() -> tuple[np.ndarray, np.ndarray]:
    """Two batches of 3 random signals, 8,000 samples each, in float64."""
    rng = np.random.default_rng(0)
    time = np.arange(8000) / 16000.0
    target = 0.5 * np.sin(2.0 * np.pi * 440.0 * time) + 0.1 * rng.uniform(-1.0, 1.0, size=(3, 8000))
    pred = rng.uniform(-0.3, 0.3, size=(3, 8000))
    return pred, target


def test_spectrogram_matches_librosa():
    audio = np.random.default_rng(1).standard_normal(1000)
    magnitudes = magnitude_spectrogram(torch.tensor(audio)[None], n_fft=256, hop_length=64)[0].numpy()
    expected = _librosa_magnitudes(audio, 256, 64)
    assert magnitudes.shape == expected.shape == (129, 16)
    np.testing.assert_allclose(magnitudes, expected, rtol=1e-10, atol=1e-10)


def test_distance_matches_librosa_float64(signals):
    pred, target = signals
    distance = multiscale_spectral_distance(torch.tensor(pred), torch.tensor(target), reduction="none")
    np.testing.assert_allclose(distance.numpy(), _reference_distance(pred, target), rtol=1e-9)


def test_distance_matches_librosa_float32(signals):
    pred, target = signals
    distance = multiscale_spectral_distance(
        torch.tensor(pred, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)
    )
    expected = _reference_distance(pred, target).mean()
    assert distance.item() == pytest.approx(expected, rel=1e-4)


def test_distance_custom_settings(signals):
    pred, target = signals
    settings = {"fft_sizes": (512, 100), "overlap": 0.5, "linear_weight": 0.3, "log_weight": 2.0, "eps": 1e-3}
    distance = multiscale_spectral_distance(torch.tensor(pred), torch.tensor(target), reduction="none", **settings)
    np.testing.assert_allclose(distance.numpy(), _reference_distance(pred, target, **settings), rtol=1e-9)


def test_reductions_agree(signals):
    pred, target = (torch.tensor(x, dtype=torch.float32) for x in signals)
    per_item = multiscale_spectral_distance(pred, target, reduction="none")
    assert per_item.shape == (3,)
    assert multiscale_spectral_distance(pred, target).item() == pytest.approx(per_item.mean().item(), rel=1e-6)
    single = multiscale_spectral_distance(pred[1:2], target[1:2], reduction="none")
    assert single.item() == pytest.approx(per_item[1].item(), rel=1e-6)


def test_identical_inputs_give_zero(signals):
    target = torch.tensor(signals[1], dtype=torch.float32)
    assert multiscale_spectral_distance(target, target.clone()).item() == 0.0


def test_silence_gives_finite_loss_and_gradients(signals):
    sound = torch.tensor(signals[1], dtype=torch.float32)
    silence = torch.zeros_like(sound)
    cases = {"silent target": (sound, silence), "silent prediction": (silence, sound), "both": (silence, silence)}
    for name, (pred, target) in cases.items():
        pred = pred.clone().requires_grad_(True)
        distance = multiscale_spectral_distance(pred, target)
        distance.backward()
        assert torch.isfinite(distance), name
        assert torch.isfinite(pred.grad).all(), name

    # Against silence, the log term compares with log(eps), as the oracle does.
    distance = multiscale_spectral_distance(sound, silence)
    expected = _reference_distance(signals[1], np.zeros_like(signals[1])).mean()
    assert distance.item() == pytest.approx(expected, rel=1e-4)


def test_distance_gradient_reduces_loss(signals):
    pred = torch.tensor(signals[0], dtype=torch.float32, requires_grad=True)
    target = torch.tensor(signals[1], dtype=torch.float32)
    before = multiscale_spectral_distance(pred, target)
    before.backward()
    with torch.no_grad():
        stepped = pred - 1e-4 * pred.grad / pred.grad.abs().max()
    assert multiscale_spectral_distance(stepped, target) < before


def test_module_matches_function(signals):
    pred, target = (torch.tensor(x, dtype=torch.float32) for x in signals)
    config = SpectralLossConfig(fft_sizes=[256, 64], log_weight=0.5)
    assert config.fft_sizes == (256, 64)
    loss = MultiScaleSpectralLoss(config, reduction="none")
    expected = multiscale_spectral_distance(pred, target, fft_sizes=(256, 64), log_weight=0.5, reduction="none")
    assert torch.equal(loss(pred, target), expected)
    assert MultiScaleSpectralLoss()(pred, target) == multiscale_spectral_distance(pred, target)


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="overlap"):
        SpectralLossConfig(overlap=1.0)
    with pytest.raises(ValueError, match="hop"):
        SpectralLossConfig(fft_sizes=(4,), overlap=0.9)
    with pytest.raises(ValueError, match="reduction"):
        MultiScaleSpectralLoss(reduction="sum")
    with pytest.raises(ValueError, match="same shape"):
        multiscale_spectral_distance(torch.zeros(2, 100), torch.zeros(2, 101))
