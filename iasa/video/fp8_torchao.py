"""FP8 DiT linears through torchao (`speed.fp8_backend: torchao`): the maintained twin of iasa.video.fp8_linear.

The same arithmetic, e4m3 weights with per-output-channel scales and e4m3 activations with per-token scales
computed at run time (torchao's Float8DynamicActivationFloat8WeightConfig with PerRow granularity), on the
same linears (fp8_linear.fp8_eligible). The weights become torchao tensor subclasses inside ordinary
nn.Linear modules, so torch.compile traces the activation quantisation as plain ops and fuses it into the
producer of the activation (iasa.video.compiled_blocks). Needs torchao (>= 0.17) and an FP8 GPU; inference only.
"""

from __future__ import annotations

import torch
from torch import nn

from iasa.errors import InputError
from iasa.video.fp8_linear import check_fp8_support, fp8_eligible


class MissingTorchaoError(InputError, ImportError):
    """speed.fp8_backend torchao without torchao installed."""


def require_torchao() -> None:
    try:
        import torchao  # noqa: F401
    except ImportError as error:
        raise MissingTorchaoError(
            f"speed.fp8_backend torchao needs torchao ({error}): pip install 'torchao>=0.17', or set speed.fp8_backend: project"
        ) from None


@torch.no_grad()
def torchao_fp8_linear(linear: nn.Linear) -> nn.Linear:
    """The same nn.Linear, its weight replaced in place by torchao's e4m3 row-wise tensor; returned."""
    require_torchao()
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    # set_inductor_config=False: torchao would otherwise switch on process-wide Inductor options (coordinate
    # descent tuning: minutes more compilation) that the bf16 and project FP8 blocks would then inherit too.
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)
    quantize_(linear, config)  # the module itself matches quantize_'s default filter (an nn.Linear)
    return linear


@torch.no_grad()
def quantize_dit_linears_torchao(dit: nn.Module) -> int:
    """Quantise the DiT blocks' big linears (fp8_linear.fp8_eligible) in place with torchao, one layer at a
    time; returns how many."""
    check_fp8_support(next(dit.parameters()).device)
    names = [name for name, module in dit.named_modules() if fp8_eligible(name, module)]
    for name in names:
        torchao_fp8_linear(dit.get_submodule(name))
    return len(names)
