"""Writing files so that a crash or an error never leaves a half-written output behind.

Every output goes to a temporary file in the target's own folder (same file system, so the final
rename is atomic) and is renamed onto the target only when it was written completely.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# mkstemp creates 0600 files; outputs are shared like any other file.
OUTPUT_FILE_MODE = 0o644


@contextmanager
def atomic_output(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds, delete it
    when the block raises. ``suffix`` (default: the target's) matters to writers that pick a format by it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(suffix=path.suffix if suffix is None else suffix, dir=path.parent, prefix=f".{path.stem}-")
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, OUTPUT_FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2) + "\n")
