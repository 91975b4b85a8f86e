"""CompiledWithFallback: compiled result equals eager; a function that cannot compile still runs, once warned."""

from __future__ import annotations

import pytest
import torch

from iasa.video.fast_compile import CompiledWithFallback


def scale_and_shift(x: torch.Tensor, factor: float) -> torch.Tensor:
    return x * factor + 1


def host_callback(x: torch.Tensor) -> torch.Tensor:
    # fullgraph forbids the graph break a data-dependent Python branch causes.
    return x * 2 if float(x.sum()) > 0 else x


def test_compiled_equals_eager():
    fn = CompiledWithFallback(scale_and_shift)
    x = torch.randn(4, 8)
    torch.testing.assert_close(fn(x, 3.0), x * 3.0 + 1)
    assert not fn.failed


def test_compile_failure_falls_back_to_eager_with_a_warning():
    fn = CompiledWithFallback(host_callback)
    x = torch.ones(3)
    with pytest.warns(UserWarning, match="host_callback"):
        torch.testing.assert_close(fn(x), 2 * x)
    assert fn.failed
    torch.testing.assert_close(fn(-x), -x)  # eager from now on, no second warning needed
