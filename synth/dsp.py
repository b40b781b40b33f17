"""Differentiable signal processing for harmonic-plus-noise synthesis (DDSP).

Pure functions on batch-first torch tensors, with no state and no `nn.Module`.
Frame-rate controls have shape `[B, n_frames, C]` and audio has shape
`[B, n_samples]`. Frequencies are in Hz, phases in radians, and amplitudes are
linear (not dB).

Frame alignment, shared by every function here: with
`hop = n_samples / n_frames`, frame `j` sits at sample `j * hop`. Upsampled
controls interpolate between frame `j` at sample `j * hop` and frame `j + 1` at
sample `(j + 1) * hop`, and hold the last frame until the end of the signal.
The time-varying noise filter applies frame `j`'s filter to the block of
samples `[j * hop, (j + 1) * hop)`. These are the conventions of Magenta's
`ddsp` 3.7.0, the implementation of Engel et al., "DDSP: Differentiable Digital
Signal Processing" (ICLR 2020). `tests/test_ddsp_parity.py` checks them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "midi_to_hz",
    "hz_to_midi",
    "exp_sigmoid",
    "upsample_frames",
    "harmonic_frequencies",
    "remove_above_nyquist",
    "normalize_harmonic_distribution",
    "oscillator_bank",
    "harmonic_synthesis",
    "harmonic_synthesis_framewise",
    "frequency_impulse_response",
    "frequency_filter",
    "filtered_noise",
    "fft_convolve",
    "reverb",
]

TWO_PI = 2.0 * math.pi

# MIDI note 0 (about 8.18 Hz), the lowest note that `hz_to_midi` returns.
_MIN_MIDI_HZ = 440.0 * 2.0 ** (-69.0 / 12.0)

UPSAMPLING_METHODS = ("linear", "hann")


def midi_to_hz(midi: torch.Tensor | float) -> torch.Tensor | float:
    """Convert MIDI note numbers to frequencies in Hz (A4 = note 69 = 440 Hz).

    Accepts a tensor (integer or floating point) or a Python number, and returns
    the same kind. Fractional notes give frequencies between semitones.
    """
    if isinstance(midi, torch.Tensor) and not midi.is_floating_point():
        midi = midi.to(torch.get_default_dtype())
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def hz_to_midi(frequency_hz: torch.Tensor | float) -> torch.Tensor | float:
    """Convert frequencies in Hz to fractional MIDI note numbers (440 Hz = 69).

    Frequencies below MIDI note 0 (about 8.18 Hz), including 0 Hz for unvoiced
    frames, map to note 0 instead of minus infinity.
    """
    if isinstance(frequency_hz, torch.Tensor):
        clamped = frequency_hz.clamp_min(_MIN_MIDI_HZ)
        return 69.0 + 12.0 * torch.log2(clamped / 440.0)
    clamped = max(float(frequency_hz), _MIN_MIDI_HZ)
    return 69.0 + 12.0 * math.log2(clamped / 440.0)


def exp_sigmoid(
    x: torch.Tensor,
    exponent: float = 10.0,
    max_value: float = 2.0,
    threshold: float = 1e-7,
) -> torch.Tensor:
    """Map network outputs to positive amplitudes: `max_value * sigmoid(x) ** ln(exponent) + threshold`.

    This is the scaled sigmoid of Engel et al. (DDSP, ICLR 2020). `threshold`
    keeps every output strictly positive, so that later logarithms and
    normalisations stay finite. The output has the shape of `x` and lies in
    `(threshold, max_value + threshold)`.
    """
    return max_value * torch.sigmoid(x) ** math.log(exponent) + threshold


def upsample_frames(frames: torch.Tensor, n_samples: int, method: str = "linear") -> torch.Tensor:
    """Interpolate frame-rate controls `[B, n_frames, C]` to audio rate `[B, n_samples, C]`.

    Frame `j` sits at sample `j * n_samples / n_frames`, and the last frame is
    held until sample `n_samples - 1`. `n_samples` need not be a multiple of
    `n_frames`.

    method:
        "linear": straight lines between frames.
        "hann": raised-cosine interpolation, the weight of frame `j + 1` rising
            as `sin(pi/2 * u) ** 2` over the fraction `u` of the hop. This equals
            overlap-adding one Hann window of length `2 * hop` per frame at 50 %
            overlap, and smooths the corners of amplitude envelopes.

    Raises ValueError for a tensor that is not 3-D, an unknown method, or fewer
    samples than frames.
    """
    _check_rank(frames, 3, "frames", "[B, n_frames, C]")
    if method not in UPSAMPLING_METHODS:
        raise ValueError(f"unknown upsampling method {method!r}; expected one of {UPSAMPLING_METHODS}")
    n_frames = frames.shape[1]
    if n_frames < 1 or n_samples < n_frames:
        raise ValueError(
            f"cannot upsample {n_frames} frames to {n_samples} samples; n_samples must be at least n_frames"
        )

    # Positions on the frame axis in float64, so that sample indices up to
    # millions map to exact frame fractions.
    position = torch.arange(n_samples, device=frames.device, dtype=torch.float64) * (n_frames / n_samples)
    left_index = position.floor().long()
    right_index = (left_index + 1).clamp(max=n_frames - 1)
    fraction = (position - left_index).to(frames.dtype)
    if method == "hann":
        fraction = 0.5 - 0.5 * torch.cos(math.pi * fraction)

    left = frames[:, left_index]
    right = frames[:, right_index]
    # left + (right - left) * u keeps constant controls exactly constant.
    return left + (right - left) * fraction[None, :, None]


def harmonic_frequencies(f0_hz: torch.Tensor, n_harmonics: int) -> torch.Tensor:
    """Return the frequencies `k * f0` in Hz of harmonics k = 1..n_harmonics, `[..., 1] -> [..., n_harmonics]`."""
    numbers = torch.arange(1, n_harmonics + 1, device=f0_hz.device, dtype=f0_hz.dtype)
    return f0_hz * numbers


def remove_above_nyquist(amplitudes: torch.Tensor, f0_hz: torch.Tensor, sample_rate: float) -> torch.Tensor:
    """Set to exactly zero the amplitude of every harmonic at or above the Nyquist frequency.

    amplitudes: `[B, T, K]` for harmonics k = 1..K, at any rate T (frames or samples).
    f0_hz: `[B, T, 1]` fundamental frequency in Hz.
    Returns `[B, T, K]`. The harmonics are zeroed, not attenuated, because any
    residual amplitude above Nyquist aliases to an audible inharmonic partial.
    """
    frequencies = harmonic_frequencies(f0_hz, amplitudes.shape[-1])
    return torch.where(frequencies < sample_rate / 2.0, amplitudes, torch.zeros_like(amplitudes))


def normalize_harmonic_distribution(
    harmonic_distribution: torch.Tensor,
    f0_hz: torch.Tensor,
    sample_rate: float,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Zero the harmonics at or above Nyquist, then rescale each frame's distribution to sum to 1.

    harmonic_distribution: `[B, n_frames, K]`, non-negative.
    f0_hz: `[B, n_frames, 1]` in Hz.
    Returns `[B, n_frames, K]`. The sum is floored at `eps`, so a frame whose
    harmonics all lie above Nyquist (or are all zero) stays all zero instead of
    becoming NaN.
    """
    below_nyquist = remove_above_nyquist(harmonic_distribution, f0_hz, sample_rate)
    total = below_nyquist.sum(dim=-1, keepdim=True).clamp_min(eps)
    return below_nyquist / total


def _accumulate_phase(
    frequencies_hz: torch.Tensor,
    sample_rate: float,
    initial_phase: torch.Tensor | float,
) -> torch.Tensor:
    """Integrate `[B, n_samples, K]` frequencies to float64 phases in `[0, 2 pi)`.

    The phase at sample n is `initial_phase + sum over m < n of 2 pi f[m] / sample_rate`,
    so sample 0 has the initial phase. The running sum is in float64: in float32
    the phase of a 440 Hz tone reaches about 11,000 rad after 4 s at 16 kHz, where
    one rounding step is already about 1e-3 rad.
    """
    omega = frequencies_hz.to(torch.float64) * (TWO_PI / sample_rate)
    running = torch.cumsum(omega, dim=1)
    phase = torch.cat([torch.zeros_like(running[:, :1]), running[:, :-1]], dim=1)
    if isinstance(initial_phase, torch.Tensor):
        initial_phase = initial_phase.to(device=phase.device, dtype=torch.float64)
    return torch.remainder(phase + initial_phase, TWO_PI)


def oscillator_bank(
    frequencies_hz: torch.Tensor,
    amplitudes: torch.Tensor,
    sample_rate: float,
    initial_phase: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Sum a bank of sinusoids with sample-wise frequencies and amplitudes.

    frequencies_hz: `[B, n_samples, K]` instantaneous frequency of each oscillator in Hz.
    amplitudes: `[B, n_samples, K]` linear peak amplitude of each oscillator.
    initial_phase: phase in radians at sample 0, a number or a tensor that
        broadcasts to `[B, 1, K]`.
    Returns audio `[B, n_samples]` in the dtype of `amplitudes`:
    `sum over k of a_k[n] * sin(phi_k[n])`, with `phi_k[0] = initial_phase` and
    `phi_k[n + 1] = phi_k[n] + 2 pi f_k[n] / sample_rate`.

    An oscillator is silent at every sample where its frequency is at or above
    the Nyquist frequency. The phase is accumulated in float64 and wrapped to
    `[0, 2 pi)` before it is cast back, so it does not drift over long signals.
    The output is differentiable with respect to amplitudes and frequencies.
    """
    _check_rank(frequencies_hz, 3, "frequencies_hz", "[B, n_samples, K]")
    _check_rank(amplitudes, 3, "amplitudes", "[B, n_samples, K]")
    if frequencies_hz.shape[1] != amplitudes.shape[1]:
        raise ValueError(
            f"frequencies_hz has {frequencies_hz.shape[1]} samples but amplitudes has {amplitudes.shape[1]}"
        )
    phase = _accumulate_phase(frequencies_hz, sample_rate, initial_phase).to(amplitudes.dtype)
    audible = torch.where(frequencies_hz < sample_rate / 2.0, amplitudes, torch.zeros_like(amplitudes))
    return (audible * torch.sin(phase)).sum(dim=-1)


def harmonic_synthesis(
    f0_hz: torch.Tensor,
    amplitude: torch.Tensor,
    harmonic_distribution: torch.Tensor,
    n_samples: int,
    sample_rate: float,
    amplitude_upsampling: str = "hann",
    initial_phase: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Synthesize a harmonic tone from frame-rate controls.

    f0_hz: `[B, n_frames, 1]` fundamental frequency in Hz.
    amplitude: `[B, n_frames, 1]` overall linear amplitude.
    harmonic_distribution: `[B, n_frames, K]` relative amplitude of harmonics
        1..K, used as given (see `normalize_harmonic_distribution`).
    n_samples: output length in samples.
    sample_rate: in Hz.
    amplitude_upsampling: "hann" (default) or "linear", see `upsample_frames`.
        The fundamental frequency is always upsampled linearly.
    initial_phase: phase of the fundamental at sample 0 in radians, a number or
        a tensor that broadcasts to `[B, 1, 1]`. Harmonic k starts at
        `k * initial_phase`, so with the default 0 every harmonic starts at
        sin(0) = 0 and the first output sample is exactly zero.
    Returns audio `[B, n_samples]`.

    Harmonic k is silent at every sample where `k * f0` is at or above Nyquist.
    The fundamental's phase is accumulated in float64 and wrapped, and harmonic
    k's phase is k times it in float32. The float32 roundings of the wrapped
    phase and of the product give harmonic k a phase error of at most about
    `k * 6e-7` rad at any sample, which does not grow with the length of the
    signal.
    """
    _check_rank(f0_hz, 3, "f0_hz", "[B, n_frames, 1]")
    _check_rank(amplitude, 3, "amplitude", "[B, n_frames, 1]")
    _check_rank(harmonic_distribution, 3, "harmonic_distribution", "[B, n_frames, K]")
    if f0_hz.shape[-1] != 1 or amplitude.shape[-1] != 1:
        raise ValueError(
            f"f0_hz and amplitude need one channel, [B, n_frames, 1]; got {tuple(f0_hz.shape)} "
            f"and {tuple(amplitude.shape)}"
        )
    n_harmonics = harmonic_distribution.shape[-1]

    f0_audio = upsample_frames(f0_hz, n_samples, method="linear")
    harmonic_amplitudes = upsample_frames(amplitude * harmonic_distribution, n_samples, method=amplitude_upsampling)
    harmonic_amplitudes = remove_above_nyquist(harmonic_amplitudes, f0_audio, sample_rate)

    fundamental_phase = _accumulate_phase(f0_audio, sample_rate, initial_phase).to(harmonic_amplitudes.dtype)
    numbers = torch.arange(1, n_harmonics + 1, device=f0_hz.device, dtype=harmonic_amplitudes.dtype)
    return (harmonic_amplitudes * torch.sin(fundamental_phase * numbers)).sum(dim=-1)


def harmonic_synthesis_framewise(
    f0_hz: torch.Tensor,
    amplitude: torch.Tensor,
    harmonic_distribution: torch.Tensor,
    n_samples: int,
    sample_rate: float,
    amplitude_upsampling: str = "hann",
    initial_phase: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Compute `harmonic_synthesis` with the amplitude interpolation done as one matrix product per frame.

    Same arguments, result and frame alignment as `harmonic_synthesis`, for
    the case the DDSP head trains with: f0 needs no gradient and `n_samples`
    is a multiple of `n_frames`. Upsampled amplitudes are linear in the frame
    values, so within frame `j` the output is
    `(1 - w[r]) * sum_k A[j, k] s[n, k] + w[r] * sum_k A[j + 1, k] s[n, k]`,
    with `s[n, k] = sin(k * phase[n])` (zero where `k * f0[n]` reaches
    Nyquist) and `w` the interpolation weight at offset `r` in the frame.
    This never builds the `[B, n_samples, K]` amplitude tensor or its
    gradient, which makes a training step several times faster on the CPU.

    Raises ValueError when f0 requires a gradient or the hop is not an integer;
    call `harmonic_synthesis` then.
    """
    _check_rank(f0_hz, 3, "f0_hz", "[B, n_frames, 1]")
    _check_rank(amplitude, 3, "amplitude", "[B, n_frames, 1]")
    _check_rank(harmonic_distribution, 3, "harmonic_distribution", "[B, n_frames, K]")
    if amplitude_upsampling not in UPSAMPLING_METHODS:
        raise ValueError(f"unknown upsampling method {amplitude_upsampling!r}; expected one of {UPSAMPLING_METHODS}")
    batch_size, n_frames, n_harmonics = harmonic_distribution.shape
    if f0_hz.requires_grad:
        raise ValueError("harmonic_synthesis_framewise needs an f0 without gradient; use harmonic_synthesis")
    if n_samples % n_frames:
        raise ValueError(f"n_samples {n_samples} is not a multiple of n_frames {n_frames}; use harmonic_synthesis")
    hop = n_samples // n_frames
    dtype = harmonic_distribution.dtype

    # Sinusoids of every harmonic at audio rate, silenced where they reach Nyquist.
    f0_audio = upsample_frames(f0_hz, n_samples, method="linear")
    fundamental_phase = _accumulate_phase(f0_audio, sample_rate, initial_phase).to(dtype)
    numbers = torch.arange(1, n_harmonics + 1, device=f0_hz.device, dtype=dtype)
    sinusoids = torch.sin(fundamental_phase * numbers)
    sinusoids = sinusoids * (f0_audio.to(dtype) * numbers < sample_rate / 2.0)
    sinusoids = sinusoids.reshape(batch_size * n_frames, hop, n_harmonics)

    # Frame amplitudes on both sides of each sample; the last frame is held.
    frame_amplitudes = amplitude * harmonic_distribution
    next_amplitudes = torch.cat([frame_amplitudes[:, 1:], frame_amplitudes[:, -1:]], dim=1)
    both_sides = torch.stack([frame_amplitudes, next_amplitudes], dim=-1).reshape(-1, n_harmonics, 2)
    sums = torch.bmm(sinusoids, both_sides).reshape(batch_size, n_frames, hop, 2)
    left, right = sums[..., 0], sums[..., 1]

    weight = torch.arange(hop, device=f0_hz.device, dtype=torch.float64) / hop
    if amplitude_upsampling == "hann":
        weight = 0.5 - 0.5 * torch.cos(math.pi * weight)
    weight = weight.to(dtype)
    return (left + (right - left) * weight).reshape(batch_size, n_samples)


def frequency_impulse_response(magnitudes: torch.Tensor, window_size: int | None = None) -> torch.Tensor:
    """Design linear-phase FIR filters from magnitude responses.

    magnitudes: `[..., n_bands]` linear gains at `n_bands` frequencies spaced
        evenly from 0 Hz to Nyquist (`n_bands = n_fft // 2 + 1`).
    window_size: even length of the filter in samples, from 2 to
        `n_fft = 2 * (n_bands - 1)`. None means `n_fft`.
    Returns causal impulse responses `[..., window_size]`.

    The zero-phase response (inverse real FFT of the magnitudes) is shifted to
    be centred on sample `window_size // 2` and multiplied by a periodic Hann
    window of `window_size` samples. The result is symmetric about its centre,
    so the filter has linear phase with a group delay of `window_size // 2`
    samples. The window smooths the requested response over a few bands and
    keeps its sidelobes low.
    """
    n_bands = magnitudes.shape[-1]
    if n_bands < 2:
        raise ValueError(f"need at least 2 magnitude bands, got {n_bands}")
    n_fft = 2 * (n_bands - 1)
    if window_size is None:
        window_size = n_fft
    if window_size < 2 or window_size > n_fft or window_size % 2:
        raise ValueError(
            f"window_size must be even and between 2 and {n_fft} (twice the number of bands minus 1); "
            f"got {window_size}"
        )

    zero_phase = torch.fft.irfft(magnitudes.to(_complex_dtype(magnitudes.dtype)), n=n_fft)
    centred = torch.roll(zero_phase, shifts=window_size // 2, dims=-1)[..., :window_size]
    window = torch.hann_window(window_size, periodic=True, device=magnitudes.device, dtype=magnitudes.dtype)
    return centred * window


def frequency_filter(
    audio: torch.Tensor,
    magnitudes: torch.Tensor,
    window_size: int | None = None,
    delay_compensation: int | None = None,
) -> torch.Tensor:
    """Filter audio with a time-varying linear-phase FIR filter given by magnitude responses.

    audio: `[B, n_samples]`.
    magnitudes: `[B or 1, n_frames, n_bands]` linear gains per frame, bands
        spaced evenly from 0 Hz to Nyquist (see `frequency_impulse_response`).
    window_size: filter length in samples. None means `2 * (n_bands - 1)`.
    delay_compensation: samples dropped from the start of the causal output.
        None means the filter's group delay, `window_size // 2`, which aligns the
        output with the input. Use 0 for the plain causal output.
    Returns `[B, n_samples]`.

    The audio is cut into `n_frames` blocks of `ceil(n_samples / n_frames)`
    samples, zero-padding the last one. Each block is convolved in full with
    its frame's filter by FFT, and the results are overlap-added, so the tail
    of one block's filter output rings into the next blocks.
    """
    _check_rank(audio, 2, "audio", "[B, n_samples]")
    _check_rank(magnitudes, 3, "magnitudes", "[B, n_frames, n_bands]")
    impulse_responses = frequency_impulse_response(magnitudes, window_size)
    ir_size = impulse_responses.shape[-1]
    if delay_compensation is None:
        delay_compensation = ir_size // 2
    if not 0 <= delay_compensation < ir_size:
        raise ValueError(f"delay_compensation must be between 0 and {ir_size - 1} samples, got {delay_compensation}")

    full = _blockwise_fft_convolve(audio, impulse_responses)
    n_samples = audio.shape[-1]
    return full[:, delay_compensation : delay_compensation + n_samples]


def filtered_noise(
    noise_magnitudes: torch.Tensor,
    n_samples: int,
    generator: torch.Generator | None = None,
    window_size: int | None = None,
) -> torch.Tensor:
    """Filter uniform white noise in [-1, 1) with a time-varying filter.

    noise_magnitudes: `[B, n_frames, n_bands]` linear gains per frame (see
        `frequency_filter`, which this calls with its default group-delay
        compensation).
    generator: the random number generator for the noise, on the device of
        `noise_magnitudes`. None uses torch's global generator.
    Returns `[B, n_samples]` in the dtype of `noise_magnitudes`.
    """
    _check_rank(noise_magnitudes, 3, "noise_magnitudes", "[B, n_frames, n_bands]")
    batch_size = noise_magnitudes.shape[0]
    noise = torch.rand(
        batch_size,
        n_samples,
        generator=generator,
        device=noise_magnitudes.device,
        dtype=noise_magnitudes.dtype,
    )
    noise = 2.0 * noise - 1.0
    return frequency_filter(noise, noise_magnitudes, window_size=window_size)


def fft_convolve(audio: torch.Tensor, impulse_response: torch.Tensor) -> torch.Tensor:
    """Convolve audio with an impulse response by FFT, keeping the first `n_samples` outputs.

    audio: `[B, n_samples]`.
    impulse_response: `[B, n_ir]`, `[1, n_ir]` or `[n_ir]`, shared by the batch
        in the last two cases.
    Returns `[B, n_samples]`: the causal convolution
    `out[n] = sum over m of ir[m] * audio[n - m]`, without the tail past the
    end of the input.
    """
    _check_rank(audio, 2, "audio", "[B, n_samples]")
    if impulse_response.dim() == 1:
        impulse_response = impulse_response[None]
    _check_rank(impulse_response, 2, "impulse_response", "[B, n_ir]")
    full = _blockwise_fft_convolve(audio, impulse_response[:, None, :])
    return full[:, : audio.shape[-1]]


def reverb(audio: torch.Tensor, impulse_response: torch.Tensor, add_dry: bool = True) -> torch.Tensor:
    """Apply a room impulse response by causal FFT convolution.

    audio: `[B, n_samples]`.
    impulse_response: `[B, n_ir]`, `[1, n_ir]` or `[n_ir]`.
    add_dry: return `audio + wet`. The impulse response's first tap (the direct
        sound) is then ignored, so that the direct sound comes only from the dry
        signal. With False, return the convolution with the full response.
    Returns `[B, n_samples]`.
    """
    if add_dry:
        impulse_response = torch.cat(
            [torch.zeros_like(impulse_response[..., :1]), impulse_response[..., 1:]], dim=-1
        )
        return audio + fft_convolve(audio, impulse_response)
    return fft_convolve(audio, impulse_response)


def _blockwise_fft_convolve(audio: torch.Tensor, impulse_responses: torch.Tensor) -> torch.Tensor:
    """Convolve each block of audio with its own impulse response and overlap-add.

    audio: `[B, n_samples]`. impulse_responses: `[B or 1, n_frames, ir_size]`.
    Returns the full convolution, `[B, n_frames * block_size + ir_size - 1]`,
    where `block_size = ceil(n_samples / n_frames)`.
    """
    batch_size, n_samples = audio.shape
    n_frames, ir_size = impulse_responses.shape[-2:]
    if impulse_responses.shape[0] not in (1, batch_size):
        raise ValueError(
            f"impulse responses have batch size {impulse_responses.shape[0]}, but audio has {batch_size}; "
            "use the same batch size or 1"
        )
    block_size = math.ceil(n_samples / n_frames)
    if math.ceil(n_samples / block_size) != n_frames:
        raise ValueError(
            f"{n_samples} samples cannot be cut into {n_frames} blocks of equal size; "
            f"{n_samples} samples in blocks of {block_size} make {math.ceil(n_samples / block_size)} blocks"
        )

    blocks = F.pad(audio, (0, n_frames * block_size - n_samples)).reshape(batch_size, n_frames, block_size)
    output_size = block_size + ir_size - 1
    fft_size = 1 << (output_size - 1).bit_length()
    spectrum = torch.fft.rfft(blocks, n=fft_size) * torch.fft.rfft(impulse_responses, n=fft_size)
    convolved = torch.fft.irfft(spectrum, n=fft_size)[..., :output_size]

    # Overlap-add: fold sums the block outputs placed every block_size samples.
    total_size = (n_frames - 1) * block_size + output_size
    summed = F.fold(
        convolved.transpose(1, 2),
        output_size=(1, total_size),
        kernel_size=(1, output_size),
        stride=(1, block_size),
    )
    return summed.reshape(batch_size, total_size)


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _check_rank(tensor: torch.Tensor, rank: int, name: str, layout: str) -> None:
    if tensor.dim() != rank:
        raise ValueError(f"{name} must have shape {layout}; got shape {tuple(tensor.shape)}")
