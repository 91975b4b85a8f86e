"""Writing files so that a crash or an error never leaves a half-written output behind.

Every output goes to a temporary file in the target's own folder (same file system, so the final
rename is atomic) and is renamed onto the target only when it was written completely. A temporary's name
holds the writing process's id (``.<stem>-<pid>-<random><suffix>``), so that temporaries left by a process
that was killed (SIGKILL gives it no chance to clean up) can be told from those of a running one and removed.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# mkstemp creates 0600 files; outputs are shared like any other file.
OUTPUT_FILE_MODE = 0o644


def temporary_prefix(path: str | Path) -> str:
    """The name start of this process's temporaries for the target `path`."""
    return f".{Path(path).stem}-{os.getpid()}-"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries of target `path` whose writing process no longer runs; returns them."""
    path = Path(path)
    own = re.compile(rf"\.{re.escape(path.stem)}-(\d+)-.+")
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.stem)}-*"):
        match = own.fullmatch(candidate.name)
        if match and candidate.is_file() and not _running(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


@contextmanager
def atomic_output(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds, delete it
    when the block raises. ``suffix`` (default: the target's) matters to writers that pick a format by it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(
        suffix=path.suffix if suffix is None else suffix, dir=path.parent, prefix=temporary_prefix(path)
    )
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
