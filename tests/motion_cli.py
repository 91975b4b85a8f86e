"""infer_motion.py loaded as a module, a speech-like test signal, and a runner that returns (exit code, stderr)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SR = 16000
# infer_motion.py is a script at the repository root, not part of the installed package.
_SPEC = importlib.util.spec_from_file_location("infer_motion", Path(__file__).resolve().parents[1] / "infer_motion.py")
infer_motion = sys.modules.setdefault("infer_motion", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(infer_motion)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A 140 Hz buzz in syllable-rate (4 Hz) bursts with a little noise."""
    time = np.arange(int(round(seconds * SR))) / SR
    envelope = np.clip(np.sin(2 * np.pi * 4 * time), 0, None)
    noise = np.random.default_rng(seed).normal(scale=0.01, size=time.shape)
    return (0.4 * envelope * np.sign(np.sin(2 * np.pi * 140 * time)) + noise).astype(np.float32)


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = infer_motion.main(list(argv))
    return code, capsys.readouterr().err
