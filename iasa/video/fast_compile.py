"""torch.compile for small elementwise helpers, falling back to eager (with a warning) if compiling fails.

The helpers (RMSNorm + RoPE) are pure functions whose compiled form only
fuses their passes over memory into one kernel; the eager form computes the same values. A compiler problem
on some machine (a missing toolchain, an unsupported op in a new torch) should cost speed, not the run.
"""

from __future__ import annotations

import warnings
from typing import Callable, Generic, TypeVar

import torch

Result = TypeVar("Result")


class CompiledWithFallback(Generic[Result]):
    """Call `fn` compiled (fullgraph; shape-generic after a second shape unless `options` say otherwise, e.g.
    dynamic=False); eager from the first compile error on (`error` keeps it)."""

    def __init__(self, fn: Callable[..., Result], **options) -> None:
        self.fn = fn
        self.compiled = torch.compile(fn, fullgraph=True, **options)
        self.failed = False
        self.error: str | None = None

    def __call__(self, *args, **kwargs) -> Result:
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except torch.OutOfMemoryError:
                raise
            except Exception as error:  # compile errors surface at the first call
                self.failed = True
                self.error = f"{type(error).__name__}: {error}"[:2000]
                warnings.warn(f"torch.compile of {self.fn.__name__} failed, running it eagerly: {error!r}"[:2000])
        return self.fn(*args, **kwargs)
