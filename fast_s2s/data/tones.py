"""The tones task: a noisy telephone-keypad (DTMF) waveform of a digit string, framed into
feature vectors, to be decoded back to the digits. Frames as a seq2seq source, offline.

    frames, targets = generate_tones(1000, seed=0)   # [(T_i, 8) float tensors], ["3141", ...]

Each digit is its keypad's two tones (one of 697/770/852/941 Hz plus one of 1209/1336/1477 Hz)
for 40-70 ms, the digits separated by 30-60 ms of silence (so a repeated digit is two tones), at
8 kHz, with random loudness, a small frequency drift and white noise throughout. Frames are
20 ms Hann windows every 10 ms; each frame's features are the spectral magnitudes at the seven
keypad frequencies and the frame's RMS level (F = 8), scaled to about 1 for a loud tone. A
sequence of n digits gives about 10 n + 5 frames. Targets are the digits as a string
(tokenize with "char").
"""

from __future__ import annotations

import functools
import math
import random

import torch
from torch import Tensor

__all__ = ["DIGIT_TONES", "FRAME_FEATURES", "TONE_FREQUENCIES", "generate_tones", "tones_to_frames"]

SAMPLE_RATE = 8000
FRAME_LENGTH, FRAME_HOP = 160, 80  # 20 ms windows every 10 ms
TONE_FREQUENCIES: tuple[int, ...] = (697, 770, 852, 941, 1209, 1336, 1477)
# digit -> (low tone, high tone), the telephone keypad
DIGIT_TONES: dict[str, tuple[int, int]] = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477),
    "0": (941, 1336),
}  # fmt: skip
FRAME_FEATURES = len(TONE_FREQUENCIES) + 1


@functools.cache
def _basis() -> tuple[Tensor, Tensor]:
    """Hann-windowed cosine and sine at the keypad frequencies, (FRAME_LENGTH, 7) each."""
    t = torch.arange(FRAME_LENGTH, dtype=torch.float64) / SAMPLE_RATE
    window = torch.hann_window(FRAME_LENGTH, periodic=False, dtype=torch.float64)
    phase = 2 * math.pi * t[:, None] * torch.tensor(TONE_FREQUENCIES, dtype=torch.float64)
    norm = window.sum() / 2  # a sinusoid of amplitude a has magnitude about a
    return (window[:, None] * phase.cos() / norm), (window[:, None] * phase.sin() / norm)


def tones_to_frames(wave: Tensor) -> Tensor:
    """Features (T, 8) of a waveform (samples,) at 8 kHz: keypad-frequency magnitudes and RMS."""
    if wave.shape[0] < FRAME_LENGTH:
        wave = torch.nn.functional.pad(wave, (0, FRAME_LENGTH - wave.shape[0]))
    windows = wave.to(torch.float64).unfold(0, FRAME_LENGTH, FRAME_HOP)  # (T, FRAME_LENGTH)
    cos, sin = _basis()
    magnitude = torch.sqrt((windows @ cos) ** 2 + (windows @ sin) ** 2)
    rms = windows.pow(2).mean(dim=1, keepdim=True).sqrt()
    return (2.0 * torch.cat([magnitude, rms], dim=1)).to(torch.float32)


def _waveform(digits: str, rng: random.Random, gen: torch.Generator, noise: float) -> Tensor:
    """The noisy keypad waveform of `digits` (1-D float64 tensor of samples)."""
    uniform = rng.uniform

    def silence(low_ms: float, high_ms: float) -> Tensor:
        return torch.zeros(int(SAMPLE_RATE * uniform(low_ms, high_ms) / 1000), dtype=torch.float64)

    pieces = [silence(20, 60)]
    for i, digit in enumerate(digits):
        if i:
            pieces.append(silence(30, 60))
        n = int(SAMPLE_RATE * uniform(40, 70) / 1000)
        t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
        tone = torch.zeros(n, dtype=torch.float64)
        for freq in DIGIT_TONES[digit]:
            drifted = freq * uniform(0.985, 1.015)
            tone += uniform(0.25, 0.5) * torch.sin(2 * math.pi * drifted * t + uniform(0, 6.3))
        pieces.append(tone)
    pieces.append(silence(20, 60))
    wave = torch.cat(pieces)
    return wave + noise * torch.randn(wave.shape, generator=gen, dtype=torch.float64)


def generate_tones(
    n: int, seed: int = 0, min_digits: int = 1, max_digits: int = 8, noise: float = 0.2
) -> tuple[list[Tensor], list[str]]:
    """`n` (frames, digits) examples of the tones task, the same for the same arguments.

    Args:
        n: number of examples.
        seed: the random seed (digits, timings, loudness, drift, noise).
        min_digits, max_digits: the digit count of each example, uniform in this range.
        noise: standard deviation of the white noise (a tone's two sinusoids have amplitudes
            0.25-0.5 each).

    Returns:
        (frames, targets): n float32 tensors (T_i, FRAME_FEATURES) and n digit strings.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= min_digits <= max_digits:
        raise ValueError(
            f"need 1 <= min_digits <= max_digits, got min_digits={min_digits}, "
            f"max_digits={max_digits}"
        )
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    frames, targets = [], []
    for _ in range(n):
        count = rng.randint(min_digits, max_digits)
        digits = "".join(rng.choice("0123456789") for _ in range(count))
        frames.append(tones_to_frames(_waveform(digits, rng, gen, noise)))
        targets.append(digits)
    return frames, targets
