"""Oracle tests of the DDSP functions and synth modules against numpy, scipy and librosa."""

import math

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from condgen.synth import dsp
from condgen.synth.synths import FilteredNoiseSynth, HarmonicSynth, LearnedReverb

SAMPLE_RATE = 16000
N_SAMPLES = 64000
N_FRAMES = 250


def _frames(values, n_frames: int = N_FRAMES) -> torch.Tensor:
    """Constant controls `[B, n_frames, C]` from per-item values `[B, C]`."""
    values = torch.as_tensor(values, dtype=torch.float32)
    return values[:, None, :].expand(-1, n_frames, -1).contiguous()


def _power_outside_bins(audio: np.ndarray, keep_bins: list[int]) -> float:
    """Return the power outside `keep_bins` (and their neighbours) relative to the total, in dB."""
    power = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    outside = power.copy()
    for index in keep_bins:
        outside[index - 1 : index + 2] = 0.0
    return 10.0 * np.log10(outside.sum() / power.sum())


# Pitch and amplitude scales


def test_midi_to_hz_matches_librosa():
    notes = torch.tensor([21.0, 60.0, 69.0, 108.0, 60.5])
    expected = librosa.midi_to_hz(notes.numpy())
    np.testing.assert_allclose(dsp.midi_to_hz(notes).numpy(), expected, rtol=1e-6)
    assert dsp.midi_to_hz(69) == pytest.approx(440.0)
    assert dsp.midi_to_hz(torch.tensor([69])).dtype == torch.get_default_dtype()


def test_hz_to_midi_inverts_and_floors():
    frequencies = torch.tensor([27.5, 261.6256, 440.0, 4186.009])
    expected = librosa.hz_to_midi(frequencies.numpy())
    np.testing.assert_allclose(dsp.hz_to_midi(frequencies).numpy(), expected, atol=1e-4)
    assert dsp.hz_to_midi(880.0) == pytest.approx(81.0)
    # 0 Hz (unvoiced) and anything below MIDI note 0 map to note 0, not -inf.
    floored = dsp.hz_to_midi(torch.tensor([0.0, 1.0]))
    assert torch.equal(floored, torch.zeros(2))


def test_exp_sigmoid_matches_formula():
    x = np.linspace(-10.0, 10.0, 101)
    expected = 2.0 * (1.0 / (1.0 + np.exp(-x))) ** np.log(10.0) + 1e-7
    actual = dsp.exp_sigmoid(torch.tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-12)
    custom = dsp.exp_sigmoid(torch.tensor([0.0], dtype=torch.float64), exponent=2.0, max_value=1.0, threshold=0.0)
    assert custom.item() == pytest.approx(0.5 ** np.log(2.0))


# Upsampling


def test_upsample_linear_matches_np_interp():
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 10, 3, generator=generator, dtype=torch.float64)
    n_samples = 80
    hop = n_samples / 10
    upsampled = dsp.upsample_frames(frames, n_samples, method="linear").numpy()

    # Frame j sits at sample j * hop. Past the last frame, np.interp repeats its value.
    frame_positions = np.arange(10) * hop
    for batch in range(2):
        for channel in range(3):
            expected = np.interp(np.arange(n_samples), frame_positions, frames[batch, :, channel].numpy())
            np.testing.assert_allclose(upsampled[batch, :, channel], expected, rtol=1e-12)


def test_upsample_linear_uneven_hop():
    frames = torch.tensor([[[0.0], [3.0], [6.0]]], dtype=torch.float64)
    upsampled = dsp.upsample_frames(frames, 10, method="linear")[0, :, 0].numpy()
    expected = np.interp(np.arange(10), np.arange(3) * 10 / 3, [0.0, 3.0, 6.0])
    np.testing.assert_allclose(upsampled, expected, rtol=1e-12)


def test_upsample_hann_matches_overlap_add():
    generator = torch.Generator().manual_seed(1)
    n_frames, hop = 6, 16
    frames = torch.rand(1, n_frames, 2, generator=generator, dtype=torch.float64)
    upsampled = dsp.upsample_frames(frames, n_frames * hop, method="hann").numpy()[0]

    # Overlap-add one periodic Hann window of 2 * hop per frame, its peak on
    # sample j * hop, with the last frame repeated once so that it is held.
    window = scipy.signal.get_window("hann", 2 * hop, fftbins=True)
    values = np.concatenate([frames[0].numpy(), frames[0, -1:].numpy()])
    expected = np.zeros((n_frames * hop + 2 * hop, 2))
    for j, value in enumerate(values):
        expected[j * hop : j * hop + 2 * hop] += window[:, None] * value
    expected = expected[hop : hop + n_frames * hop]
    np.testing.assert_allclose(upsampled, expected, atol=1e-12)


def test_upsample_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        dsp.upsample_frames(torch.zeros(10, 3), 100)
    with pytest.raises(ValueError, match="method"):
        dsp.upsample_frames(torch.zeros(1, 10, 3), 100, method="cubic")
    with pytest.raises(ValueError, match="at least n_frames"):
        dsp.upsample_frames(torch.zeros(1, 10, 3), 5)


# Oscillators


def test_sine_matches_float64_numpy():
    f0 = _frames([[440.0]])
    ones = _frames([[1.0]])
    audio = dsp.harmonic_synthesis(f0, ones, ones, N_SAMPLES, SAMPLE_RATE)[0].numpy()
    expected = np.sin(2.0 * np.pi * 440.0 * np.arange(N_SAMPLES, dtype=np.float64) / SAMPLE_RATE)

    tolerance = 1e-5
    assert np.abs(audio - expected).max() < tolerance

    # A float32 running sum of the phase misses the same tolerance: this test
    # would catch an implementation without float64 accumulation or wrapping.
    omega = torch.full((N_SAMPLES,), 2.0 * math.pi * 440.0 / SAMPLE_RATE, dtype=torch.float32)
    naive_phase = torch.cat([torch.zeros(1), torch.cumsum(omega, dim=0)[:-1]])
    assert np.abs(torch.sin(naive_phase).numpy() - expected).max() > tolerance


def test_oscillator_bank_vibrato_matches_numpy():
    n_samples = 8000
    time = np.arange(n_samples) / SAMPLE_RATE
    frequency = 300.0 + 20.0 * np.sin(2.0 * np.pi * 5.0 * time)
    amplitude = np.linspace(0.2, 1.0, n_samples)
    frequencies = torch.tensor(np.stack([frequency, 2.0 * frequency], axis=-1)[None], dtype=torch.float32)
    amplitudes = torch.tensor(np.stack([amplitude, 0.5 * amplitude], axis=-1)[None], dtype=torch.float32)
    audio = dsp.oscillator_bank(frequencies, amplitudes, SAMPLE_RATE, initial_phase=0.25)[0].numpy()

    phase = 0.25 + np.concatenate([[0.0], np.cumsum(2.0 * np.pi * frequency / SAMPLE_RATE)[:-1]])
    expected = amplitude * np.sin(phase) + 0.5 * amplitude * np.sin(2.0 * phase - 0.25)
    np.testing.assert_allclose(audio, expected, atol=1e-5)


def test_oscillator_bank_silent_above_nyquist():
    frequency = torch.linspace(7000.0, 9000.0, 1000)[None, :, None]
    audio = dsp.oscillator_bank(frequency, torch.ones_like(frequency), SAMPLE_RATE)[0]
    above = frequency[0, :, 0] >= SAMPLE_RATE / 2
    assert above.any()
    assert torch.all(audio[above] == 0.0)
    assert audio[~above].abs().max() > 0.5


def test_no_aliasing_at_3khz():
    n_harmonics = 8
    f0 = _frames([[3000.0]])
    distribution = dsp.normalize_harmonic_distribution(torch.ones(1, N_FRAMES, n_harmonics), f0, SAMPLE_RATE)

    # Harmonics 3..8 (9 kHz and up) reach or pass 8 kHz and must be exactly zero.
    assert torch.all(distribution[..., 2:] == 0.0)
    assert torch.allclose(distribution[..., :2], torch.full((1, N_FRAMES, 2), 0.5))

    audio = dsp.harmonic_synthesis(f0, _frames([[1.0]]), distribution, N_SAMPLES, SAMPLE_RATE)[0].numpy()
    # 3 kHz and 6 kHz fall on bins 12000 and 24000 of a 64,000-point FFT.
    bins = [round(3000.0 * N_SAMPLES / SAMPLE_RATE), round(6000.0 * N_SAMPLES / SAMPLE_RATE)]
    assert _power_outside_bins(audio, bins) < -100.0

    # The measure catches harmonics above Nyquist that are only attenuated by
    # 80 dB: they fold back to 7, 4, 1, 2, 5 and 0 kHz.
    n = np.arange(N_SAMPLES)
    aliased = audio + sum(1e-4 * np.sin(2.0 * np.pi * 3000.0 * k * n / SAMPLE_RATE) for k in range(3, 9))
    assert _power_outside_bins(aliased, bins) > -100.0


def test_remove_above_nyquist_zeroes_exactly():
    amplitudes = torch.full((1, 2, 4), 0.3)
    f0 = torch.tensor([[[4000.0], [2000.0]]])
    below_nyquist = dsp.remove_above_nyquist(amplitudes, f0, SAMPLE_RATE)
    # 4 kHz: harmonic 2 lands exactly on Nyquist (8 kHz) and is removed.
    assert below_nyquist[0, 0].tolist() == pytest.approx([0.3, 0.0, 0.0, 0.0])
    # 2 kHz: harmonics 1-3 (2, 4, 6 kHz) stay, harmonic 4 (8 kHz) goes.
    assert below_nyquist[0, 1].tolist() == pytest.approx([0.3, 0.3, 0.3, 0.0])


def test_normalize_distribution_sums_to_one():
    generator = torch.Generator().manual_seed(2)
    distribution = torch.rand(2, 5, 10, generator=generator)
    f0 = torch.tensor([100.0, 1000.0])[:, None, None].expand(2, 5, 1)
    normalized = dsp.normalize_harmonic_distribution(distribution, f0, SAMPLE_RATE)
    assert torch.allclose(normalized.sum(-1), torch.ones(2, 5))
    # At 1 kHz, harmonics 8 and up reach 8 kHz.
    assert torch.all(normalized[1, :, 7:] == 0.0)
    expected = distribution[1, :, :7] / distribution[1, :, :7].sum(-1, keepdim=True)
    assert torch.allclose(normalized[1, :, :7], expected)


def test_normalize_distribution_all_above_nyquist():
    distribution = torch.ones(1, 3, 4)
    f0 = torch.full((1, 3, 1), 9000.0)
    normalized = dsp.normalize_harmonic_distribution(distribution, f0, SAMPLE_RATE)
    assert torch.equal(normalized, torch.zeros(1, 3, 4))


def test_harmonic_synthesis_sum_of_harmonics():
    f0 = _frames([[220.0], [500.0]], n_frames=20)
    amplitude = _frames([[0.5], [0.8]], n_frames=20)
    distribution = _frames([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], n_frames=20)
    n_samples = 4000
    audio = dsp.harmonic_synthesis(f0, amplitude, distribution, n_samples, SAMPLE_RATE).numpy()

    n = np.arange(n_samples)
    for item, (frequency, gain, weights) in enumerate(
        [(220.0, 0.5, [0.6, 0.3, 0.1]), (500.0, 0.8, [0.2, 0.2, 0.6])]
    ):
        expected = sum(
            gain * weight * np.sin(2.0 * np.pi * frequency * k * n / SAMPLE_RATE)
            for k, weight in enumerate(weights, start=1)
        )
        np.testing.assert_allclose(audio[item], expected, atol=1e-5)
    assert np.all(audio[:, 0] == 0.0)


def test_harmonic_synthesis_gradients():
    f0 = _frames([[440.0]], n_frames=8)
    amplitude = torch.full((1, 8, 1), 0.5, requires_grad=True)
    distribution = torch.full((1, 8, 4), 0.25, requires_grad=True)
    audio = dsp.harmonic_synthesis(f0, amplitude, distribution, 800, SAMPLE_RATE)
    audio.pow(2).sum().backward()
    assert torch.isfinite(amplitude.grad).all()
    assert amplitude.grad.abs().sum() > 0
    assert torch.isfinite(distribution.grad).all()
    assert distribution.grad.abs().sum() > 0


# Filters and convolution


def test_impulse_response_matches_numpy_design():
    generator = torch.Generator().manual_seed(3)
    magnitudes = torch.rand(2, 65, generator=generator, dtype=torch.float64)
    response = dsp.frequency_impulse_response(magnitudes).numpy()

    zero_phase = np.fft.irfft(magnitudes.numpy(), n=128)
    window = scipy.signal.get_window("hann", 128, fftbins=True)
    expected = np.roll(zero_phase, 64, axis=-1) * window
    np.testing.assert_allclose(response, expected, atol=1e-12)
    # Linear phase: symmetric about sample 64.
    np.testing.assert_allclose(response[:, 65:], response[:, 63:0:-1], atol=1e-12)


def test_impulse_response_short_window():
    magnitudes = torch.ones(1, 65, dtype=torch.float64)
    response = dsp.frequency_impulse_response(magnitudes, window_size=32)
    assert response.shape == (1, 32)
    # A flat magnitude of 1 is a unit impulse, delayed by half the window.
    expected = torch.zeros(1, 32, dtype=torch.float64)
    expected[0, 16] = 1.0
    assert torch.allclose(response, expected, atol=1e-12)
    with pytest.raises(ValueError, match="window_size"):
        dsp.frequency_impulse_response(magnitudes, window_size=33)
    with pytest.raises(ValueError, match="window_size"):
        dsp.frequency_impulse_response(magnitudes, window_size=130)


def test_flat_filter_applies_framewise_gain():
    generator = torch.Generator().manual_seed(4)
    audio = torch.randn(2, 1000, generator=generator)
    gains = torch.rand(2, 10, 1, generator=generator)
    filtered = dsp.frequency_filter(audio, gains.expand(2, 10, 65))
    # Flat magnitudes are pure gains, and frame j covers samples [100 j, 100 j + 100).
    expected = audio * gains[:, :, 0].repeat_interleave(100, dim=1)
    assert torch.allclose(filtered, expected, atol=1e-5)


def test_flat_filter_without_delay_compensation():
    audio = torch.randn(1, 500)
    filtered = dsp.frequency_filter(audio, torch.ones(1, 5, 65), delay_compensation=0)
    assert torch.allclose(filtered[:, 64:], audio[:, :-64], atol=1e-5)
    assert torch.allclose(filtered[:, :64], torch.zeros(1, 64), atol=1e-6)


def test_lowpass_noise_spectrum():
    generator = torch.Generator().manual_seed(5)
    noise = 2.0 * torch.rand(1, N_SAMPLES, generator=generator) - 1.0
    band_hz = np.linspace(0.0, SAMPLE_RATE / 2, 65)
    magnitudes = torch.tensor((band_hz < 4000.0).astype(np.float32))
    filtered = dsp.frequency_filter(noise, magnitudes.expand(1, N_FRAMES, 65))

    frequencies, noise_psd = scipy.signal.welch(noise[0].numpy(), fs=SAMPLE_RATE, nperseg=1024)
    _, filtered_psd = scipy.signal.welch(filtered[0].numpy(), fs=SAMPLE_RATE, nperseg=1024)
    gain_db = 10.0 * np.log10(filtered_psd / noise_psd)

    passband = (frequencies > 200.0) & (frequencies < 3500.0)
    stopband = frequencies > 4600.0
    assert np.abs(gain_db[passband]).max() < 0.2
    assert gain_db[stopband].max() < -55.0


def test_filtered_noise_flat_gain_is_uniform_noise():
    n_samples = 16000
    magnitudes = torch.full((2, 50, 65), 0.5)
    audio = dsp.filtered_noise(magnitudes, n_samples, generator=torch.Generator().manual_seed(6))
    expected = 0.5 * (2.0 * torch.rand(2, n_samples, generator=torch.Generator().manual_seed(6)) - 1.0)
    assert torch.allclose(audio, expected, atol=1e-5)


def test_fft_convolve_matches_scipy():
    generator = torch.Generator().manual_seed(7)
    audio = torch.randn(3, 2000, generator=generator, dtype=torch.float64)
    response = torch.randn(3, 300, generator=generator, dtype=torch.float64)
    convolved = dsp.fft_convolve(audio, response).numpy()
    for item in range(3):
        expected = scipy.signal.fftconvolve(audio[item].numpy(), response[item].numpy())[:2000]
        np.testing.assert_allclose(convolved[item], expected, atol=1e-9)


def test_fft_convolve_shared_response_float32():
    generator = torch.Generator().manual_seed(8)
    audio = torch.randn(2, 500, generator=generator)
    response = torch.randn(800, generator=generator)
    for shared in (response, response[None]):
        convolved = dsp.fft_convolve(audio, shared).numpy()
        for item in range(2):
            expected = np.convolve(audio[item].numpy().astype(np.float64), response.numpy().astype(np.float64))
            np.testing.assert_allclose(convolved[item], expected[:500], atol=1e-4)


def test_reverb_adds_wet_without_direct_tap():
    generator = torch.Generator().manual_seed(9)
    audio = torch.randn(2, 600, generator=generator, dtype=torch.float64)
    response = torch.randn(1, 200, generator=generator, dtype=torch.float64)
    wet_response = response.numpy()[0].copy()
    wet_response[0] = 0.0
    output = dsp.reverb(audio, response).numpy()
    wet_only = dsp.reverb(audio, response, add_dry=False).numpy()
    for item in range(2):
        signal = audio[item].numpy()
        np.testing.assert_allclose(output[item], signal + np.convolve(signal, wet_response)[:600], atol=1e-9)
        np.testing.assert_allclose(wet_only[item], np.convolve(signal, response.numpy()[0])[:600], atol=1e-9)


def test_blockwise_filter_rejects_uneven_blocks():
    with pytest.raises(ValueError, match="blocks"):
        dsp.frequency_filter(torch.zeros(1, 10), torch.ones(1, 6, 65))
    with pytest.raises(ValueError, match="batch size"):
        dsp.frequency_filter(torch.zeros(3, 100), torch.ones(2, 10, 65))


# Modules


def test_harmonic_synth_matches_numpy():
    synth = HarmonicSynth(n_harmonics=2, sample_rate=SAMPLE_RATE, n_samples=4000)
    f0 = _frames([[330.0]], n_frames=16)
    amplitude_logits = _frames([[1.5]], n_frames=16)
    distribution_logits = _frames([[0.0, -1.0]], n_frames=16)
    audio = synth(f0, amplitude_logits, distribution_logits)[0].numpy()

    def scale(x):
        return 2.0 / (1.0 + np.exp(-x)) ** np.log(10.0) + 1e-7

    weights = np.array([scale(0.0), scale(-1.0)])
    weights /= weights.sum()
    n = np.arange(4000)
    expected = scale(1.5) * sum(
        weight * np.sin(2.0 * np.pi * 330.0 * k * n / SAMPLE_RATE) for k, weight in enumerate(weights, start=1)
    )
    np.testing.assert_allclose(audio, expected, atol=1e-5)


def test_harmonic_synth_shapes_and_gradients():
    synth = HarmonicSynth(n_harmonics=5, sample_rate=SAMPLE_RATE, n_samples=1600)
    f0 = _frames([[200.0], [3000.0]], n_frames=10)
    amplitude_logits = torch.zeros(2, 10, 1, requires_grad=True)
    distribution_logits = torch.randn(2, 10, 5, requires_grad=True)
    audio = synth(f0, amplitude_logits, distribution_logits)
    assert audio.shape == (2, 1600)
    audio.pow(2).sum().backward()
    assert torch.isfinite(amplitude_logits.grad).all()
    assert amplitude_logits.grad.abs().sum() > 0
    assert torch.isfinite(distribution_logits.grad).all()
    # At 3 kHz only harmonics 1 and 2 sound, so logits 3-5 get no gradient.
    assert distribution_logits.grad[1, :, :2].abs().sum() > 0
    assert torch.all(distribution_logits.grad[1, :, 2:] == 0.0)
    with pytest.raises(ValueError, match="n_harmonics=5"):
        synth(f0, amplitude_logits, torch.zeros(2, 10, 4))


def test_filtered_noise_synth_gain_and_gradients():
    synth = FilteredNoiseSynth(n_bands=65, n_samples=1600)
    # Large logits saturate exp_sigmoid at 2 + 1e-7: a flat gain of 2.
    saturated = torch.full((1, 10, 65), 100.0)
    audio = synth(saturated, generator=torch.Generator().manual_seed(10))
    noise = 2.0 * torch.rand(1, 1600, generator=torch.Generator().manual_seed(10)) - 1.0
    assert torch.allclose(audio, 2.0 * noise, atol=1e-5)

    logits = torch.zeros(3, 10, 65, requires_grad=True)
    audio = synth(logits)
    assert audio.shape == (3, 1600)
    audio.pow(2).sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="n_bands=65"):
        synth(torch.zeros(1, 10, 33))


def test_learned_reverb_convolves_and_learns():
    reverb_module = LearnedReverb(ir_seconds=0.01, sample_rate=SAMPLE_RATE)
    response = reverb_module.impulse_response.detach().numpy().astype(np.float64)
    assert response.shape == (160,)
    # The initial response decays: its last tenth is quieter than its first.
    assert np.abs(response[-16:]).max() < np.abs(response[:16]).max()

    audio = torch.randn(2, 400, dtype=torch.float32)
    output = reverb_module(audio)
    wet_response = response.copy()
    wet_response[0] = 0.0
    for item in range(2):
        signal = audio[item].numpy().astype(np.float64)
        expected = signal + np.convolve(signal, wet_response)[:400]
        np.testing.assert_allclose(output[item].detach().numpy(), expected, atol=1e-5)

    output.pow(2).sum().backward()
    gradient = reverb_module.impulse_response.grad
    assert torch.isfinite(gradient).all()
    assert gradient[1:].abs().sum() > 0
    assert gradient[0] == 0.0


@pytest.mark.parametrize("upsampling", ["linear", "hann"])
def test_framewise_synthesis_equals_reference(upsampling):
    """The frame-wise matrix form gives the same audio and gradients as the sample-wise reference."""
    generator = torch.Generator().manual_seed(3)
    n_frames, n_samples = 20, 20 * 64
    # f0 glides across Nyquist for the upper harmonics, so the per-sample zeroing is exercised.
    f0 = torch.linspace(300.0, 2500.0, n_frames).reshape(1, n_frames, 1).repeat(2, 1, 1)
    amplitude = torch.rand(2, n_frames, 1, generator=generator).requires_grad_()
    distribution = torch.rand(2, n_frames, 8, generator=generator).requires_grad_()
    reference = dsp.harmonic_synthesis(f0, amplitude, distribution, n_samples, 8000, amplitude_upsampling=upsampling)
    fast = dsp.harmonic_synthesis_framewise(f0, amplitude, distribution, n_samples, 8000, amplitude_upsampling=upsampling)
    torch.testing.assert_close(fast, reference, atol=2e-6, rtol=0)
    weights = torch.randn(reference.shape, generator=generator)
    grads_reference = torch.autograd.grad((reference * weights).sum(), (amplitude, distribution))
    grads_fast = torch.autograd.grad((fast * weights).sum(), (amplitude, distribution))
    for a, b in zip(grads_fast, grads_reference):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_framewise_synthesis_rejects_uneven_hop():
    f0 = torch.full((1, 3, 1), 100.0)
    with pytest.raises(ValueError, match="multiple"):
        dsp.harmonic_synthesis_framewise(f0, torch.ones(1, 3, 1), torch.ones(1, 3, 2), 100, 16000)
