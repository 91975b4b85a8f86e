"""IASA: input-aware sparse attention for real-time co-speech video generation."""

__version__ = "0.1.0"
