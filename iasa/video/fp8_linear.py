"""FP8 (e4m3) DiT linears for inference through torchao: `speed.dit_precision: fp8`.

The DiT blocks' big linears get e4m3 weights with per-output-channel scales and e4m3 activations with
per-token scales computed at run time (torchao's Float8DynamicActivationFloat8WeightConfig with PerRow
granularity); the product runs on the tensor cores' FP8 path, which needs compute capability >= 8.9 (Ada,
Hopper and later). The weights become torchao tensor subclasses inside ordinary nn.Linear modules, so
torch.compile traces the activation quantisation as plain ops and fuses it into the producer of the
activation (iasa.video.compiled_blocks). On an H200 (14B, 480x832x81, benchmarks/results/pipeline.json) this
was faster than the project's own FP8 linears that it replaced: 0.957 s against 1.055 s per compiled DiT step.

Only inference: the quantised weights carry no gradients (no LoRA training on top).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from iasa.errors import InputError

if TYPE_CHECKING:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig

DIT_PRECISIONS = ("bf16", "fp8")
MIN_CAPABILITY = (8, 9)
FP8_ALIGNMENT = 16


class MissingTorchaoError(InputError, ImportError):
    """speed.dit_precision fp8 without torchao installed."""


def require_torchao() -> None:
    try:
        import torchao  # noqa: F401
    except ImportError as error:
        raise MissingTorchaoError(
            f"speed.dit_precision fp8 needs torchao ({error}): pip install 'torchao>=0.17', or set speed.dit_precision: bf16"
        ) from None


def check_fp8_support(device: torch.device) -> None:
    """Raise unless `device` is a CUDA GPU with FP8 tensor cores."""
    if device.type != "cuda":
        raise RuntimeError(f"dit_precision fp8 needs a CUDA GPU with compute capability >= 8.9; the DiT is on {device}: use bf16")
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        raise RuntimeError(
            f"dit_precision fp8 needs compute capability >= 8.9 (Ada/Hopper), {torch.cuda.get_device_name(device)} "
            f"has {capability[0]}.{capability[1]}: use bf16"
        )


def fp8_eligible(name: str, module: nn.Module) -> bool:
    """The DiT blocks' big linears (attention q/k/v/o, image k/v, feed-forward); not peft's low-rank
    factors, and only shapes the FP8 kernels take (both sides multiples of 16)."""
    return (
        type(module) is nn.Linear
        and name.startswith("blocks.")
        and "lora_" not in name
        and module.in_features % FP8_ALIGNMENT == 0
        and module.out_features % FP8_ALIGNMENT == 0
    )


def fp8_config() -> Float8DynamicActivationFloat8WeightConfig:
    """torchao's quantisation config of the DiT linears: dynamic e4m3 activations, e4m3 weights, per row."""
    require_torchao()
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    # set_inductor_config=False: torchao would otherwise switch on process-wide Inductor options (coordinate
    # descent tuning: minutes more compilation) that every other compiled function would inherit too.
    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)


@torch.no_grad()
def torchao_fp8_linear(linear: nn.Linear) -> nn.Linear:
    """The same nn.Linear, its weight replaced in place by torchao's e4m3 row-wise tensor; returned."""
    from torchao.quantization import quantize_

    quantize_(linear, fp8_config())  # the module itself matches quantize_'s default filter (an nn.Linear)
    return linear


@torch.no_grad()
def quantize_dit_fp8(dit: nn.Module) -> int:
    """Quantise the DiT blocks' big linears (fp8_eligible) in place, one layer at a time (the bf16 and e4m3
    copies of the whole model never coexist); returns how many. Refuses a DiT off an FP8 GPU."""
    require_torchao()
    check_fp8_support(next(dit.parameters()).device)
    # Names only: holding the modules themselves would keep every bf16 weight alive until the end.
    names = [name for name, module in dit.named_modules() if fp8_eligible(name, module)]
    for name in names:
        torchao_fp8_linear(dit.get_submodule(name))
    return len(names)
