"""Oracle tests of the STFT helpers, instantaneous frequency and Griffin-Lim against librosa, numpy and torchaudio."""

import math

import librosa
import numpy as np
import pytest
import torch
import torchaudio

from condgen.synth import spectral

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 256

# Spectral convergence of griffin_lim on a 440 Hz sine after 32 iterations with
# momentum 0.99: measured 0.110 to 0.112 for lengths 16001, 64000 and 64001.
# librosa.griffinlim 0.11 reached 0.085 with its own random initial phase.
SPECTRAL_CONVERGENCE_BOUND = 0.15
# Largest waveform error of the instantaneous-frequency round trip in float32:
# measured 4.4e-6 on the chirp plus sines below.
IF_ROUND_TRIP_TOLERANCE = 5e-5


def _sine(n_samples: int, frequency_hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    time_s = np.arange(n_samples) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * frequency_hz * time_s)).astype(np.float32)


def _chirp_and_sines(n_samples: int = 64000) -> np.ndarray:
    """A linear chirp from 200 to 2600 Hz plus steady sines at 1234.5 Hz and 3000 Hz."""
    time_s = np.arange(n_samples) / SAMPLE_RATE
    chirp = 0.3 * np.sin(2 * np.pi * (200 * time_s + 300 * time_s**2))
    return chirp + 0.2 * np.sin(2 * np.pi * 1234.5 * time_s) + 0.1 * np.sin(2 * np.pi * 3000 * time_s)


def _librosa_magnitude(audio: np.ndarray) -> np.ndarray:
    return np.abs(librosa.stft(audio, n_fft=N_FFT, hop_length=HOP, center=True, pad_mode="reflect"))


def _spectral_convergence(magnitude: np.ndarray, audio: np.ndarray) -> float:
    """Return ||S - |STFT(audio)|||_F / ||S||_F, with the STFT from librosa."""
    return float(np.linalg.norm(magnitude - _librosa_magnitude(audio)) / np.linalg.norm(magnitude))


# STFT, log magnitude and mel


def test_stft_matches_librosa():
    audio = _chirp_and_sines(8000)
    ours = spectral.stft(torch.from_numpy(audio)[None], N_FFT, HOP)[0].numpy()
    expected = librosa.stft(audio, n_fft=N_FFT, hop_length=HOP, center=True, pad_mode="reflect")
    assert ours.shape == expected.shape
    assert ours.shape[-1] == spectral.n_stft_frames(8000, HOP)
    np.testing.assert_allclose(ours, expected, atol=1e-9, rtol=1e-9)


def test_log_magnitude_round_trip():
    magnitude = torch.tensor([0.0, 1e-6, 0.5, 300.0], dtype=torch.float64)
    log_values = spectral.log_magnitude(magnitude, eps=1e-3)
    np.testing.assert_allclose(log_values.numpy(), np.log(magnitude.numpy() + 1e-3))
    np.testing.assert_allclose(spectral.magnitude_from_log(log_values, eps=1e-3).numpy(), magnitude.numpy(), atol=1e-12)


def test_log_below_floor_is_silence():
    below_floor = torch.tensor([math.log(1e-3) - 2.0, -50.0])
    assert torch.equal(spectral.magnitude_from_log(below_floor, eps=1e-3), torch.zeros(2))


def test_mel_matches_torchaudio():
    magnitude = torch.rand(2, N_FFT // 2 + 1, 20, generator=torch.Generator().manual_seed(0))
    filterbank = spectral.mel_filterbank(N_FFT, 128, SAMPLE_RATE)
    mel = spectral.linear_to_mel(magnitude, filterbank)
    expected = torchaudio.transforms.MelScale(n_mels=128, sample_rate=SAMPLE_RATE, n_stft=N_FFT // 2 + 1)(magnitude)
    torch.testing.assert_close(mel, expected)
    linear = spectral.mel_to_linear(mel, spectral.mel_pseudo_inverse(filterbank))
    inverse = torchaudio.transforms.InverseMelScale(n_stft=N_FFT // 2 + 1, n_mels=128, sample_rate=SAMPLE_RATE, driver="gelsd")
    torch.testing.assert_close(linear, inverse(mel), atol=1e-4, rtol=1e-4)
    assert linear.min() >= 0


# Instantaneous frequency


def test_instantaneous_frequency_matches_numpy_unwrap():
    phase = np.angle(librosa.stft(_chirp_and_sines(16000), n_fft=N_FFT, hop_length=HOP, pad_mode="reflect"))
    oracle = np.concatenate([phase[:, :1], np.diff(np.unwrap(phase, axis=-1), axis=-1)], axis=-1) / np.pi
    ours = spectral.instantaneous_frequency(torch.from_numpy(phase)[None])[0].numpy()
    assert ours.min() >= -1.0
    assert ours.max() < 1.0
    # Steps of exactly pi may land on either end of the interval, so compare them as angles.
    difference = np.angle(np.exp(1j * np.pi * (ours - oracle)))
    assert np.abs(difference).max() < 1e-9


def test_instantaneous_frequency_of_sine():
    # 440 Hz advances the phase by 2 pi * 440 * 256 / 16000 = 14.08 pi per hop,
    # which wraps to 0.08 pi: an instantaneous frequency of 0.08 near bin 28.
    audio = torch.tensor(_sine(64000), dtype=torch.float64)[None]
    frequency = spectral.instantaneous_frequency(torch.angle(spectral.stft(audio, N_FFT, HOP)))
    interior = frequency[0, 28, 2:-2]
    assert abs(interior.mean().item() - 0.08) < 1e-3
    assert interior.std().item() < 5e-3


def test_if_round_trip_reproduces_audio():
    audio = torch.from_numpy(_chirp_and_sines().astype(np.float32))[None]
    spectrum = spectral.stft(audio, N_FFT, HOP)
    frequency = spectral.instantaneous_frequency(torch.angle(spectrum))
    phase = spectral.phase_from_instantaneous_frequency(frequency)
    rebuilt = spectral.istft(spectrum.abs(), phase, N_FFT, HOP, audio.shape[-1])
    assert rebuilt.shape == audio.shape
    interior_error = (rebuilt - audio)[0, N_FFT:-N_FFT].abs().max().item()
    assert interior_error < IF_ROUND_TRIP_TOLERANCE
    assert (rebuilt - audio).abs().max().item() < 10 * IF_ROUND_TRIP_TOLERANCE


def test_if_path_silence_is_finite():
    silence = torch.zeros(1, 64000)
    spectrum = spectral.stft(silence, N_FFT, HOP)
    frequency = spectral.instantaneous_frequency(torch.angle(spectrum))
    assert torch.isfinite(frequency).all()
    rebuilt = spectral.istft(spectrum.abs(), spectral.phase_from_instantaneous_frequency(frequency), N_FFT, HOP, 64000)
    assert torch.equal(rebuilt, silence)


# Griffin-Lim


@pytest.mark.parametrize("n_samples", [64000, 64001, 16001])
def test_griffin_lim_sine_length_and_convergence(n_samples):
    audio = _sine(n_samples)
    magnitude = _librosa_magnitude(audio)
    rebuilt = spectral.griffin_lim(torch.from_numpy(magnitude)[None], N_FFT, HOP, n_samples, n_iter=32, momentum=0.99, seed=0)
    assert rebuilt.shape == (1, n_samples)
    rebuilt = rebuilt[0].numpy()
    assert _spectral_convergence(magnitude, rebuilt) < SPECTRAL_CONVERGENCE_BOUND
    spectrum = np.abs(np.fft.rfft(rebuilt))
    # Griffin-Lim cannot pin the pitch more finely than its STFT resolves:
    # allow an eighth of an STFT bin (16000 / 1024 / 8 = 2 Hz).
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / n_samples
    assert abs(peak_hz - 440.0) < SAMPLE_RATE / N_FFT / 8


def test_griffin_lim_improves_on_random_phase():
    audio = _sine(16000)
    magnitude = torch.from_numpy(_librosa_magnitude(audio))[None]
    one_step = spectral.griffin_lim(magnitude, N_FFT, HOP, 16000, n_iter=1, seed=0)[0].numpy()
    converged = spectral.griffin_lim(magnitude, N_FFT, HOP, 16000, n_iter=32, seed=0)[0].numpy()
    assert _spectral_convergence(magnitude[0].numpy(), converged) < 0.5 * _spectral_convergence(magnitude[0].numpy(), one_step)


@pytest.mark.parametrize("hop", [256, 300])
@pytest.mark.parametrize("momentum", [0.0, 0.99])
def test_griffin_lim_matches_torchaudio(hop, momentum):
    # hop 300 does not divide n_fft, which takes the F.fold overlap-add path.
    n_samples = 6001
    audio = torch.from_numpy(_chirp_and_sines(n_samples)).double()[None].repeat(2, 1)
    audio[1] *= 0.5
    magnitude = spectral.stft(audio, N_FFT, hop).abs()
    zero_phase = torch.zeros(magnitude.shape[1:], dtype=torch.float64)
    ours = spectral._griffin_lim_from_phase(magnitude, zero_phase, N_FFT, hop, n_samples, 8, momentum)
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    expected = torchaudio.functional.griffinlim(magnitude, window, N_FFT, hop, N_FFT, 1.0, 8, momentum, n_samples, False)
    torch.testing.assert_close(ours, expected, atol=1e-9, rtol=0)


def test_griffin_lim_seed_and_batch():
    magnitude = spectral.stft(torch.from_numpy(_chirp_and_sines(8000))[None], N_FFT, HOP).abs()
    batch = torch.cat([magnitude, 0.5 * magnitude, magnitude])
    rng_state = torch.get_rng_state()
    threads = torch.get_num_threads()
    together = spectral.griffin_lim(batch, N_FFT, HOP, 8000, n_iter=4, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert torch.get_num_threads() == threads
    alone = spectral.griffin_lim(magnitude, N_FFT, HOP, 8000, n_iter=4, seed=3)
    torch.testing.assert_close(together[0], alone[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(together[2], alone[0], atol=1e-6, rtol=0)
    other_seed = spectral.griffin_lim(magnitude, N_FFT, HOP, 8000, n_iter=4, seed=4)
    assert (other_seed - alone).abs().max() > 1e-3


def test_griffin_lim_two_threads_same_audio():
    magnitude = spectral.stft(torch.from_numpy(_chirp_and_sines(8000))[None], N_FFT, HOP).abs().repeat(3, 1, 1)
    one_thread = spectral.griffin_lim(magnitude, N_FFT, HOP, 8000, n_iter=4)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two_threads = spectral.griffin_lim(magnitude, N_FFT, HOP, 8000, n_iter=4)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(two_threads, one_thread, atol=1e-6, rtol=0)


def test_griffin_lim_silence_is_finite():
    silence = torch.zeros(2, N_FFT // 2 + 1, spectral.n_stft_frames(64000, HOP))
    rebuilt = spectral.griffin_lim(silence, N_FFT, HOP, 64000, n_iter=4)
    assert rebuilt.shape == (2, 64000)
    assert torch.isfinite(rebuilt).all()
    assert rebuilt.abs().max() == 0


@pytest.mark.parametrize(
    "change,message",
    [
        ({"n_fft": 512}, "513 frequency bins but n_fft 512"),
        ({"length": 64512}, "251 frames but 64512 samples"),
        ({"n_iter": 0}, "n_iter must be at least 1"),
        ({"momentum": 1.0}, "momentum must be in [0, 1)"),
        ({"hop_length": 1024, "length": 256000}, "do not overlap enough"),
    ],
)
def test_griffin_lim_rejects_bad_arguments(change, message):
    arguments = {"n_fft": N_FFT, "hop_length": HOP, "length": 64000, "n_iter": 2, "momentum": 0.5}
    arguments.update(change)
    magnitude = torch.ones(1, N_FFT // 2 + 1, 251)
    with pytest.raises(ValueError) as error:
        spectral.griffin_lim(magnitude, **arguments)
    assert message in str(error.value)
