"""dit_precision fp8 off an FP8 GPU (CPU): which linears are quantised, the torchao config they get, and the
clear errors without torchao or without an FP8 GPU (the FP8 kernels themselves: the GPU tests in
tests/test_video_compiled_blocks.py and scripts/bench_pipeline.py --throughput)."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
from torch import nn

import iasa.video.fp8_linear as fp8_linear
from iasa.config import ConfigError, load_config
from iasa.errors import InputError
from iasa.video.assembly import build_random
from iasa.video.config import ARCHITECTURES
from iasa.video.fp8_linear import (
    MissingTorchaoError,
    check_fp8_support,
    fp8_config,
    fp8_eligible,
    quantize_dit_fp8,
)
from iasa.video.inference import InferenceConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ARCHITECTURES["tiny"]


def test_eligible_linears_are_the_blocks_big_ones():
    dit = build_random("dit", TINY, torch.device("cpu"), torch.float32)
    eligible = {name for name, module in dit.named_modules() if fp8_eligible(name, module)}
    # Per block: self-attention q/k/v/o, cross-attention q/k/v/o/k_img/v_img, two feed-forward linears.
    per_block = {"self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                 "cross_attn.v", "cross_attn.o", "cross_attn.k_img", "cross_attn.v_img", "ffn.0", "ffn.2"}  # fmt: skip
    assert eligible == {f"blocks.{index}.{name}" for index in range(TINY.num_layers) for name in per_block}
    # Outside the blocks (embeddings, head) nothing; inside, not peft's factors nor shapes off the 16-grid.
    assert not fp8_eligible("head.head", dit.head.head)
    assert not fp8_eligible("blocks.0.self_attn.q.lora_A.default", nn.Linear(64, 16))
    assert not fp8_eligible("blocks.0.ffn.0", nn.Linear(64, 72))
    assert fp8_eligible("blocks.0.ffn.0", nn.Linear(64, 80))


def test_fp8_config_is_torchaos_dynamic_e4m3_per_row():
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    config = fp8_config()
    assert type(config) is Float8DynamicActivationFloat8WeightConfig
    assert config.activation_dtype == config.weight_dtype == torch.float8_e4m3fn
    granularity = config.granularity if isinstance(config.granularity, (list, tuple)) else [config.granularity]
    assert granularity and all(isinstance(g, PerRow) for g in granularity)
    assert config.set_inductor_config is False  # no process-wide Inductor options


def test_fp8_refused_off_fp8_gpus():
    with pytest.raises(RuntimeError, match="compute capability >= 8.9.*use bf16"):
        check_fp8_support(torch.device("cpu"))
    dit = build_random("dit", TINY, torch.device("cpu"), torch.bfloat16)
    before = {name: type(module) for name, module in dit.named_modules()}
    weight = dit.blocks[0].ffn[0].weight
    with pytest.raises(RuntimeError, match="the DiT is on cpu: use bf16"):
        quantize_dit_fp8(dit)
    # Refused before anything changed.
    assert {name: type(module) for name, module in dit.named_modules()} == before
    assert dit.blocks[0].ffn[0].weight is weight and type(weight) is nn.Parameter


def test_missing_torchao_is_a_one_line_input_error(monkeypatch):
    real_import = builtins.__import__

    def without_torchao(name, *args, **kwargs):
        if name == "torchao" or name.startswith("torchao."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_torchao)
    for call in (fp8_linear.require_torchao, fp8_config):
        with pytest.raises(MissingTorchaoError, match=r"pip install 'torchao>=0.17', or set speed.dit_precision: bf16") as raised:
            call()
        assert isinstance(raised.value, InputError) and "\n" not in str(raised.value)


def test_speed_fp8_backend_is_no_longer_a_key():
    """The FP8 implementation is not a choice any more: speed.dit_precision fp8 loads, speed.fp8_backend is an
    unknown key of the shipped inference config."""
    config = load_config(InferenceConfig, ROOT / "config" / "infer_iasa.yaml", ["speed.dit_precision=fp8"])
    assert config.speed.dit_precision == "fp8"
    with pytest.raises(ConfigError, match="fp8_backend"):
        load_config(InferenceConfig, ROOT / "config" / "infer_iasa.yaml", ["speed.fp8_backend=torchao"])


def test_quantize_dit_fp8_hands_each_eligible_linear_to_torchao(monkeypatch):
    """With the device check passed (as on an FP8 GPU), every eligible linear, and nothing else, goes through
    torchao's quantize_ with the per-row config, one layer at a time."""
    import torchao.quantization

    dit = build_random("dit", TINY, torch.device("cpu"), torch.bfloat16)
    modules = {module: name for name, module in dit.named_modules()}
    quantized = []
    monkeypatch.setattr(fp8_linear, "check_fp8_support", lambda device: None)
    monkeypatch.setattr(torchao.quantization, "quantize_", lambda module, config: quantized.append((modules[module], config)))
    assert quantize_dit_fp8(dit) == TINY.num_layers * 12
    assert [name for name, _ in quantized] == [name for name, module in dit.named_modules() if fp8_eligible(name, module)]
    assert all(config == fp8_config() for _, config in quantized)
