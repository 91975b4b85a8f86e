"""FP8 (e4m3) linear layers for DiT inference: `dit_precision: fp8`.

Weights are quantised once, per output channel (scale = channel amax / 448, e4m3's largest value); activations
per token at run time. The product runs on the tensor cores' FP8 path (`torch._scaled_mm` with row-wise
scales, float32 accumulation, bias added in the epilogue, bf16 out), which needs compute capability >= 8.9
(Ada, Hopper and later). On other devices the same arithmetic is emulated in float32 (`scaled_matmul`); that
is for tests, `quantize_dit_linears` refuses to convert a model that lives there.

Only inference: the quantised weights are buffers, not parameters (no gradients, no LoRA training on top).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iasa.video.fast_compile import CompiledWithFallback

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448
DIT_PRECISIONS = ("bf16", "fp8")
# Implementations of dit_precision fp8 (InferenceSpeedConfig.fp8_backend): this module's Fp8Linear, or torchao's
# float8 row-wise quantisation (iasa.video.fp8_torchao). Both stay until the GPU benchmark picks the faster.
FP8_BACKENDS = ("project", "torchao")
MIN_CAPABILITY = (8, 9)
FP8_ALIGNMENT = 16


def quantize_rows(x: torch.Tensor, row_multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """x (rows, k) -> (e4m3 values (padded, k), float32 scales (padded, 1)) with x ~ values * scales, zero
    rows appended up to a multiple of row_multiple (the FP8 matmul's operands come in multiples of 16)."""
    x = F.pad(x, (0, 0, 0, -x.shape[0] % row_multiple))
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)  # an all-zero row keeps scale > 0
    scale = amax / E4M3_MAX
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale


# One kernel (pad + amax + scale + cast) on CUDA instead of several passes; compiled lazily.
compiled_quantize_rows = CompiledWithFallback(quantize_rows)


def scaled_matmul(
    x_fp8: torch.Tensor,
    x_scale: torch.Tensor,
    weight_fp8: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """(x_fp8 * x_scale) @ (weight_fp8 * weight_scale.T).T + bias: x (m, k) with (m, 1) scales, weight (n, k)
    with (1, n) scales, bias (n,) -> (m, n) in out_dtype. FP8 tensor cores on CUDA, float32 elsewhere."""
    if x_fp8.is_cuda:
        # weight_fp8.t() is (k, n) column-major, the layout the FP8 kernels take for the second operand.
        # Row-wise scaling writes bf16 (the only output type every torch version takes for it).
        out = torch._scaled_mm(
            x_fp8, weight_fp8.t(), scale_a=x_scale, scale_b=weight_scale,
            bias=None if bias is None else bias.to(torch.bfloat16), out_dtype=torch.bfloat16,
        )  # fmt: skip
        return out.to(out_dtype)
    out = (x_fp8.float() * x_scale) @ (weight_fp8.float() * weight_scale.t()).t()
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


class Fp8Linear(nn.Module):
    """Inference replacement of an nn.Linear: (..., in_features) -> (..., out_features) in the input's dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", weight)  # (out, in) e4m3
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, out) float32
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        # Inside a compiled block the block's graph fuses the quantisation into the activation's producer.
        quantize = compiled_quantize_rows if rows.is_cuda and not torch.compiler.is_compiling() else quantize_rows
        x_fp8, x_scale = quantize(rows, FP8_ALIGNMENT)
        out = scaled_matmul(x_fp8, x_scale, self.weight_fp8, self.weight_scale, self.bias, x.dtype)
        return out[: rows.shape[0]].reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 per-channel"


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


@torch.no_grad()
def quantize_dit_linears(dit: nn.Module, check_device: bool = True) -> int:
    """Replace the DiT blocks' big nn.Linear layers by Fp8Linear in place (one layer at a time, so the bf16
    and e4m3 copies of the whole model never coexist); returns how many were replaced. check_device=False
    allows the float32 emulation (tests)."""
    if check_device:
        check_fp8_support(next(dit.parameters()).device)
    # Names only: holding the modules themselves would keep every bf16 weight alive until the end.
    names = [name for name, module in dit.named_modules() if fp8_eligible(name, module)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = dit.get_submodule(parent_name)
        setattr(parent, child, Fp8Linear(getattr(parent, child)))
    return len(names)


def quantize_dit_fp8(dit: nn.Module, fp8_backend: str) -> int:
    """The DiT blocks' big linears in e4m3 by `fp8_backend` (FP8_BACKENDS), in place; returns how many."""
    if fp8_backend == "project":
        return quantize_dit_linears(dit)
    if fp8_backend == "torchao":
        from iasa.video.fp8_torchao import quantize_dit_linears_torchao

        return quantize_dit_linears_torchao(dit)
    raise ValueError(f"unknown fp8_backend {fp8_backend!r}; choose one of {FP8_BACKENDS}")
