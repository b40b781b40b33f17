"""Parity of condgen.synth with Magenta's `ddsp` 3.7.0 (TensorFlow) on identical inputs.

`ddsp` is not a dependency of condgen, and `pip install ddsp` fails on
Python 3.11, so these tests skip in the project's own environment.
`bash bench/ddsp_reference/install.sh` builds `.venv-ddsp` with both packages,
and `.venv-ddsp/bin/python -m pytest -m ddsp_reference tests/test_ddsp_parity.py`
runs them.

Where condgen differs from ddsp by design, the tests configure condgen to
match, as listed here:

- Phase origin. condgen's oscillators start at the initial phase (0 by
  default), `phi[n] = sum over m < n of omega[m]`, so that a note starts at
  sin(0) = 0. ddsp sums up to and including sample n, which is one sample of
  phase ahead. For a constant f0, condgen with `initial_phase = omega` is
  identical to ddsp. For a varying frequency, ddsp given the frequencies
  delayed by one sample is identical to condgen.
- Phase accumulation. ddsp accumulates phase with a float32 cumsum, which
  drifts over a 4 s note, also with `use_angular_cumsum=True` (which wraps
  the phase every 1,000 samples but sums in float32 within each chunk). So
  the oscillator tests compare condgen with ddsp over the first 1,000 samples,
  and compare both with a float64 numpy oracle over the whole signal.
- Delay compensation of the noise filter. For a filter of `ir_size` taps ddsp
  drops `(ir_size - 1) // 2 - 1` samples from the start of the causal output
  (62 for 128 taps), two fewer than the filter's group delay of
  `ir_size // 2` (64) that condgen drops by default. The comparison passes
  ddsp's value to `frequency_filter(delay_compensation=...)`.
- Shorter noise filters. For `window_size` below `2 * (n_bands - 1)`, ddsp's
  filter has `window_size - 1` taps and keeps the tap `window_size / 2 - 1`
  after its centre but drops the mirror tap before it. condgen's filter has
  `window_size` taps, symmetric about tap `window_size // 2`. Only the
  default length is compared.
- Log floor of the spectral loss. condgen takes `log(magnitude + eps)` with
  eps = 1e-7, and ddsp `log(max(magnitude, 1e-5))`. On the random signals
  compared here every magnitude is far above both floors, so the difference
  is below float32 resolution. For silent frames the two losses differ by
  design.
"""

import importlib.util
import math
import os
import sys
import types

import numpy as np
import pytest
import torch

from condgen.synth import dsp
from condgen.synth.losses import multiscale_spectral_distance
from condgen.synth.synths import FilteredNoiseSynth, HarmonicSynth

pytestmark = pytest.mark.ddsp_reference

SAMPLE_RATE = 16000
N_SAMPLES = 64000
N_FRAMES = 250
# ddsp's angular cumsum wraps the phase every 1,000 samples, and its float32
# phase error stays below 1e-2 over the first such chunk (measured up to 6.4e-3
# with 60 harmonics of 110 Hz). Over a 4 s note it grows to about 1.2, so the
# tests compare full notes with a float64 oracle instead.
CHUNK = 1000


@pytest.fixture(scope="module")
def ddsp():
    """The imported `ddsp` package, or a skip when it is not installed."""
    if importlib.util.find_spec("ddsp") is None or importlib.util.find_spec("tensorflow") is None:
        pytest.skip(
            "Magenta's ddsp is not installed; run `bash bench/ddsp_reference/install.sh`, then "
            "`.venv-ddsp/bin/python -m pytest -m ddsp_reference tests/test_ddsp_parity.py`"
        )
    # The Keras layers of ddsp 3.7.0 need Keras 2 (tf-keras), and tensorflow
    # reads this variable when it is first imported.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # `import ddsp` imports the crepe pitch tracker, which needs model weights
    # from the network. None of the code compared here uses it.
    if importlib.util.find_spec("crepe") is None:
        sys.modules["crepe"] = types.ModuleType("crepe")
    import ddsp as ddsp_package
    import ddsp.core  # noqa: F401
    import ddsp.effects  # noqa: F401
    import ddsp.losses  # noqa: F401
    import ddsp.synths  # noqa: F401

    return ddsp_package


def _max_difference(ours: torch.Tensor, theirs) -> float:
    return float(np.abs(ours.detach().numpy() - np.asarray(theirs)).max())


def _report(name: str, value: float) -> None:
    # Printed for `pytest -s`, so that the measured figures can be quoted.
    print(f"ddsp parity: {name}: max abs difference {value:.3g}")


def test_exp_sigmoid_parity(ddsp):
    x = np.linspace(-12.0, 12.0, 1001, dtype=np.float32)
    difference = _max_difference(dsp.exp_sigmoid(torch.tensor(x)), ddsp.core.exp_sigmoid(x))
    _report("exp_sigmoid", difference)
    assert difference < 1e-6


def test_upsampling_parity(ddsp):
    rng = np.random.default_rng(0)
    frames = rng.uniform(0.0, 1.0, size=(2, N_FRAMES, 3)).astype(np.float32)
    linear = dsp.upsample_frames(torch.tensor(frames), N_SAMPLES, method="linear")
    hann = dsp.upsample_frames(torch.tensor(frames), N_SAMPLES, method="hann")
    linear_difference = _max_difference(linear, ddsp.core.resample(frames, N_SAMPLES, method="linear"))
    hann_difference = _max_difference(hann, ddsp.core.resample(frames, N_SAMPLES, method="window"))
    _report("upsample_frames linear vs resample linear", linear_difference)
    _report("upsample_frames hann vs resample window", hann_difference)
    assert linear_difference < 1e-5
    assert hann_difference < 1e-5


def test_oscillator_bank_parity(ddsp):
    n_samples = 16000
    time = np.arange(n_samples) / SAMPLE_RATE
    vibrato = 220.0 * (1.0 + 0.02 * np.sin(2.0 * np.pi * 5.0 * time))
    harmonic_numbers = np.array([1, 2, 3, 30])
    frequencies = (vibrato[:, None] * harmonic_numbers)[None].astype(np.float32)
    amplitudes = np.tile(np.linspace(1.0, 0.1, n_samples, dtype=np.float32)[None, :, None], (1, 1, 4))

    ours = dsp.oscillator_bank(torch.tensor(frequencies), torch.tensor(amplitudes), SAMPLE_RATE)
    # Frequencies delayed by one sample make ddsp's inclusive phase sum equal
    # condgen's exclusive one.
    delayed = np.concatenate([np.zeros_like(frequencies[:, :1]), frequencies[:, :-1]], axis=1)
    theirs = np.asarray(
        ddsp.core.oscillator_bank(delayed, amplitudes, sample_rate=SAMPLE_RATE, use_angular_cumsum=True)
    )

    # The float64 oracle shows which of the two drifts.
    omega = 2.0 * np.pi * frequencies[0].astype(np.float64) / SAMPLE_RATE
    phase = np.concatenate([np.zeros((1, 4)), np.cumsum(omega, axis=0)[:-1]])
    exact = (amplitudes[0] * np.sin(phase)).sum(axis=-1)[None]
    ours_error = _max_difference(ours, exact)
    theirs_error = float(np.abs(theirs - exact).max())
    start_difference = _max_difference(ours[:, :CHUNK], theirs[:, :CHUNK])
    _report("oscillator_bank, 4 oscillators up to 6.9 kHz, first 1,000 samples", start_difference)
    _report("oscillator_bank, condgen against float64 over 1 s", ours_error)
    _report("oscillator_bank, ddsp against float64 over 1 s", theirs_error)
    assert start_difference < 1e-2
    assert ours_error < 1e-4


def _harmonic_logits(n_harmonics: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f0 `[2, N_FRAMES, 1]` (constant per note) and random amplitude and distribution logits."""
    rng = np.random.default_rng(seed)
    f0_hz = np.array([110.0, 880.0], dtype=np.float32)[:, None, None] * np.ones((1, N_FRAMES, 1), np.float32)
    amplitude_logits = rng.normal(0.0, 1.0, size=(2, N_FRAMES, 1)).astype(np.float32)
    distribution_logits = rng.normal(0.0, 2.0, size=(2, N_FRAMES, n_harmonics)).astype(np.float32)
    return f0_hz, amplitude_logits, distribution_logits


def test_harmonic_controls_parity(ddsp):
    n_harmonics = 60
    f0_hz, amplitude_logits, distribution_logits = _harmonic_logits(n_harmonics, seed=1)
    ours = HarmonicSynth(n_harmonics, SAMPLE_RATE, N_SAMPLES).controls(
        torch.tensor(f0_hz), torch.tensor(amplitude_logits), torch.tensor(distribution_logits)
    )
    theirs = ddsp.synths.Harmonic(n_samples=N_SAMPLES, sample_rate=SAMPLE_RATE).get_controls(
        amplitude_logits, distribution_logits, f0_hz
    )
    amplitude_difference = _max_difference(ours["amplitude"], theirs["amplitudes"])
    distribution_difference = _max_difference(ours["harmonic_distribution"], theirs["harmonic_distribution"])
    _report("Harmonic controls: amplitude", amplitude_difference)
    _report("Harmonic controls: harmonic distribution", distribution_difference)
    assert amplitude_difference < 1e-6
    assert distribution_difference < 1e-6
    # 880 Hz: harmonics 10 and up reach 8.8 kHz, above Nyquist, in both.
    assert np.all(np.asarray(theirs["harmonic_distribution"])[1, :, 9:] == 0.0)
    assert torch.all(ours["harmonic_distribution"][1, :, 9:] == 0.0)


def test_harmonic_synth_parity(ddsp):
    n_harmonics = 60
    f0_hz, amplitude_logits, distribution_logits = _harmonic_logits(n_harmonics, seed=2)
    synth = HarmonicSynth(n_harmonics, SAMPLE_RATE, N_SAMPLES)
    controls = synth.controls(torch.tensor(f0_hz), torch.tensor(amplitude_logits), torch.tensor(distribution_logits))
    # ddsp's phase at sample 0 is one sample's worth, omega = 2 pi f0 / sample_rate.
    omega = 2.0 * np.pi * f0_hz[:, :1, :].astype(np.float64) / SAMPLE_RATE
    ours = dsp.harmonic_synthesis(
        controls["f0_hz"],
        controls["amplitude"],
        controls["harmonic_distribution"],
        N_SAMPLES,
        SAMPLE_RATE,
        amplitude_upsampling="hann",
        initial_phase=torch.tensor(omega),
    )
    reference = ddsp.synths.Harmonic(n_samples=N_SAMPLES, sample_rate=SAMPLE_RATE, use_angular_cumsum=True)
    theirs = np.asarray(reference(amplitude_logits, distribution_logits, f0_hz))
    default_reference = ddsp.synths.Harmonic(n_samples=N_SAMPLES, sample_rate=SAMPLE_RATE)
    theirs_default = np.asarray(default_reference(amplitude_logits, distribution_logits, f0_hz))

    # Float64 oracle from ddsp's own controls and amplitude upsampling, with
    # harmonic k at phase k * omega * (n + 1) and silent from k * f0 >= Nyquist.
    controls_reference = reference.get_controls(amplitude_logits, distribution_logits, f0_hz)
    harmonic_amplitudes = np.asarray(controls_reference["amplitudes"]) * np.asarray(
        controls_reference["harmonic_distribution"]
    )
    envelopes = np.asarray(ddsp.core.resample(harmonic_amplitudes, N_SAMPLES, method="window"), dtype=np.float64)
    harmonic_numbers = np.arange(1, n_harmonics + 1)
    sample_numbers = np.arange(1, N_SAMPLES + 1, dtype=np.float64)[:, None]
    exact = np.stack(
        [(envelopes[item] * np.sin(sample_numbers * harmonic_numbers * omega[item, 0, 0])).sum(-1) for item in range(2)]
    )

    start_difference = _max_difference(ours[:, :CHUNK], theirs[:, :CHUNK])
    ours_error = _max_difference(ours, exact)
    _report("Harmonic synth, 60 harmonics, first 1,000 samples", start_difference)
    _report("Harmonic synth, condgen against float64 over 4 s", ours_error)
    _report("Harmonic synth, ddsp angular cumsum against float64 over 4 s", float(np.abs(theirs - exact).max()))
    _report("Harmonic synth, ddsp default cumsum against float64 over 4 s", float(np.abs(theirs_default - exact).max()))
    assert start_difference < 1e-2
    assert ours_error < 1e-4


def test_frequency_filter_parity(ddsp):
    rng = np.random.default_rng(3)
    noise = rng.uniform(-1.0, 1.0, size=(2, N_SAMPLES)).astype(np.float32)
    magnitudes = rng.uniform(0.0, 1.0, size=(2, N_FRAMES, 65)).astype(np.float32)
    ir_size = 2 * (65 - 1)
    ours = dsp.frequency_filter(
        torch.tensor(noise), torch.tensor(magnitudes), delay_compensation=(ir_size - 1) // 2 - 1
    )
    theirs = ddsp.core.frequency_filter(noise, magnitudes)
    difference = _max_difference(ours, theirs)
    _report("frequency_filter, 65 bands, 250 frames, 4 s", difference)
    assert difference < 1e-5

    # condgen's default drops the full group delay: two samples later than ddsp.
    aligned = dsp.frequency_filter(torch.tensor(noise), torch.tensor(magnitudes))
    assert _max_difference(aligned[:, :-2], np.asarray(theirs)[:, 2:]) < 1e-5


def test_filtered_noise_controls_parity(ddsp):
    logits = np.random.default_rng(4).normal(0.0, 3.0, size=(2, N_FRAMES, 65)).astype(np.float32)
    ours = FilteredNoiseSynth(n_bands=65, n_samples=N_SAMPLES).magnitudes(torch.tensor(logits))
    theirs = ddsp.synths.FilteredNoise(n_samples=N_SAMPLES).get_controls(logits)["magnitudes"]
    difference = _max_difference(ours, theirs)
    _report("FilteredNoise magnitudes", difference)
    assert difference < 1e-6


def test_fft_convolve_and_reverb_parity(ddsp):
    rng = np.random.default_rng(5)
    audio = rng.uniform(-1.0, 1.0, size=(2, 16000)).astype(np.float32)
    response = (rng.uniform(-1.0, 1.0, size=(1, 4000)) * np.exp(-np.arange(4000) / 800.0)).astype(np.float32)

    convolved = dsp.fft_convolve(torch.tensor(audio), torch.tensor(response))
    theirs = ddsp.core.fft_convolve(audio, response, padding="same", delay_compensation=0)
    convolve_difference = _max_difference(convolved, theirs)
    _report("fft_convolve, 4,000-tap response", convolve_difference)
    assert convolve_difference < 1e-4

    reverberated = dsp.reverb(torch.tensor(audio), torch.tensor(response), add_dry=True)
    reference = ddsp.effects.Reverb(trainable=False, add_dry=True)(audio, np.tile(response, (2, 1)))
    reverb_difference = _max_difference(reverberated, reference)
    _report("reverb with dry signal", reverb_difference)
    assert reverb_difference < 1e-4


def test_spectral_loss_parity(ddsp):
    rng = np.random.default_rng(6)
    time = np.arange(N_SAMPLES) / SAMPLE_RATE
    target = (0.5 * np.sin(2.0 * np.pi * 330.0 * time) + 0.05 * rng.uniform(-1.0, 1.0, (3, N_SAMPLES))).astype(
        np.float32
    )
    pred = rng.uniform(-0.2, 0.2, size=(3, N_SAMPLES)).astype(np.float32)

    ours = multiscale_spectral_distance(torch.tensor(pred), torch.tensor(target)).item()
    reference = ddsp.losses.SpectralLoss(loss_type="L1", mag_weight=1.0, logmag_weight=1.0)
    theirs = float(reference(target, pred))
    _report("multi-scale spectral loss (absolute)", abs(ours - theirs))
    print(f"ddsp parity: spectral loss condgen {ours:.6f}, ddsp {theirs:.6f}")
    assert ours == pytest.approx(theirs, rel=1e-4)
