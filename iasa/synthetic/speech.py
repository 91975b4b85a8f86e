"""Speech-like audio made from a seed: voiced syllables with a syllable rhythm, pauses and a pitch contour.

Not speech, but it has what the motion stage listens to: a loudness envelope that rises at every
syllable (onsets drive beats and nods, loudness the jaw), stressed syllables that are louder and higher,
phrases separated by silences, and a voiced source (harmonics of a moving fundamental shaped by vowel
formants, a noise burst for some consonants) so a spectrum looks voice-like.

Timeline: phrases of 2-6 words, each word 1-3 syllables, each syllable lasting about 1 / tempo seconds;
between phrases a pause. Every random choice comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

SAMPLE_RATE = 16000

# (F1, F2, F3) formant frequencies in Hz of five vowels (a, e, i, o, u), roughly an adult voice.
VOWEL_FORMANTS_HZ = np.array(
    [(730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240)], dtype=np.float64
)
FORMANT_BANDWIDTHS_HZ = np.array([90.0, 110.0, 170.0])
HIGHEST_HARMONIC_HZ = 4000.0
FORMANT_GLIDE_S = 0.02  # formants move between vowels over about this time
SYLLABLE_ATTACK_S, SYLLABLE_RELEASE_S = 0.025, 0.06
CONSONANT_BURST_S = (0.02, 0.06)


@dataclass
class SpeechConfig:
    # Syllables per second (speaking tempo; conversational speech is about 3-6).
    tempo: float = 4.0
    # Mean fundamental frequency in Hz and the pitch movement of a stressed syllable in semitones.
    pitch_hz: float = 130.0
    accent_semitones: float = 3.0
    # The pitch falls by this many semitones over a phrase (declination).
    declination_semitones: float = 2.0
    # Words per phrase and syllables per word (inclusive ranges).
    words_per_phrase: tuple[int, int] = (2, 6)
    syllables_per_word: tuple[int, int] = (1, 3)
    # Silence between phrases, and before the first one, in seconds.
    pause_s: tuple[float, float] = (0.2, 0.6)
    lead_in_s: tuple[float, float] = (0.05, 0.3)
    # Probability that a syllable starts with a noise burst (a consonant) and that a word is stressed.
    consonant_probability: float = 0.6
    stress_probability: float = 0.5
    # Loudness of an unstressed syllable relative to a stressed one.
    unstressed_gain: float = 0.55
    # Peak amplitude of the waveform.
    peak: float = 0.5


@dataclass(frozen=True)
class Syllable:
    start_s: float
    duration_s: float
    vowel: int
    stressed: bool
    consonant: bool


def plan_syllables(seconds: float, config: SpeechConfig, rng: np.random.Generator) -> list[Syllable]:
    """The syllables of ``seconds`` of speech, in time order, all starting before the end."""
    syllables: list[Syllable] = []
    time = rng.uniform(*config.lead_in_s)
    while time < seconds:
        for _ in range(rng.integers(config.words_per_phrase[0], config.words_per_phrase[1] + 1)):
            stressed_word = rng.random() < config.stress_probability
            for index in range(rng.integers(config.syllables_per_word[0], config.syllables_per_word[1] + 1)):
                duration = rng.uniform(0.7, 1.3) / config.tempo
                syllables.append(
                    Syllable(
                        start_s=time, duration_s=duration, vowel=int(rng.integers(len(VOWEL_FORMANTS_HZ))),
                        stressed=stressed_word and index == 0, consonant=rng.random() < config.consonant_probability,
                    )
                )  # fmt: skip
                time += duration
            time += rng.uniform(0.0, 0.4) / config.tempo  # a short gap between some words
        time += rng.uniform(*config.pause_s)
    return [syllable for syllable in syllables if syllable.start_s < seconds]


def synthesize_speech(seconds: float, seed: int, config: SpeechConfig | None = None) -> np.ndarray:
    """(round(seconds * 16000),) float32 speech-like waveform with peak ``config.peak``."""
    config = config or SpeechConfig()
    rng = np.random.default_rng(seed)
    samples = int(round(seconds * SAMPLE_RATE))
    time = np.arange(samples) / SAMPLE_RATE
    syllables = plan_syllables(seconds, config, rng)

    envelope = np.zeros(samples)
    semitones = np.zeros(samples)  # pitch relative to pitch_hz
    formants = np.tile(VOWEL_FORMANTS_HZ[0], (samples, 1))
    noise_envelope = np.zeros(samples)
    phrase_start = syllables[0].start_s if syllables else 0.0
    previous_end = -1.0
    for syllable in syllables:
        if syllable.start_s - previous_end > 0.15:  # a pause began a new phrase: the pitch resets
            phrase_start = syllable.start_s
        previous_end = syllable.start_s + syllable.duration_s
        inside = (time >= syllable.start_s) & (time < previous_end)
        local = time[inside] - syllable.start_s
        attack = np.clip(local / SYLLABLE_ATTACK_S, 0.0, 1.0)
        release = np.clip((syllable.duration_s - local) / SYLLABLE_RELEASE_S, 0.0, 1.0)
        gain = 1.0 if syllable.stressed else config.unstressed_gain
        envelope[inside] = gain * np.sin(np.pi / 2 * attack) ** 2 * np.sin(np.pi / 2 * release) ** 2
        accent = config.accent_semitones * np.sin(np.pi * local / syllable.duration_s) if syllable.stressed else 0.0
        semitones[inside] = accent - config.declination_semitones * (syllable.start_s - phrase_start) / 2.0
        formants[inside] = VOWEL_FORMANTS_HZ[syllable.vowel]
        if syllable.consonant:
            burst = rng.uniform(*CONSONANT_BURST_S)
            noise_envelope[inside] = 0.35 * gain * np.clip(1.0 - local / burst, 0.0, 1.0)
            envelope[inside] *= np.clip(local / burst, 0.0, 1.0)  # the vowel starts after the burst

    glide = FORMANT_GLIDE_S * SAMPLE_RATE
    formants = gaussian_filter1d(formants, glide, axis=0, mode="nearest")
    semitones = gaussian_filter1d(semitones, glide, mode="nearest")
    f0 = config.pitch_hz * 2.0 ** (semitones / 12.0) * (1.0 + 0.01 * np.sin(2 * np.pi * 5.5 * time))
    voiced = _harmonic_source(f0, formants)
    noise = np.diff(rng.standard_normal(samples + 1))  # differenced white noise: a hiss
    waveform = envelope * voiced + noise_envelope * noise
    peak = np.abs(waveform).max()
    if peak > 0:
        waveform *= config.peak / peak
    return waveform.astype(np.float32)


def _harmonic_source(f0: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """(N,) sum of the harmonics of the fundamental f0 (N,) Hz, each weighted by the formant resonances
    (N, 3) Hz at its frequency and a 1/k spectral tilt; harmonics above HIGHEST_HARMONIC_HZ are left out."""
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    source = np.zeros_like(f0)
    for harmonic in range(1, int(HIGHEST_HARMONIC_HZ // f0.min()) + 1):
        frequency = harmonic * f0
        resonance = (1.0 / (1.0 + ((frequency[:, None] - formants) / FORMANT_BANDWIDTHS_HZ) ** 2)).sum(axis=1)
        audible = frequency < HIGHEST_HARMONIC_HZ
        source += audible * (0.05 + resonance) / harmonic * np.sin(harmonic * phase)
    return source
