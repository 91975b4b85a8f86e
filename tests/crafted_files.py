"""Crafted files for the tests that check no file can run code when loaded."""

from __future__ import annotations

import os
from pathlib import Path


class CodeRunner:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
