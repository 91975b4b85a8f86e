"""GPU checks of the FlexAttention path (skipped without CUDA). No hypothesis here: the GPU image may lack it.

    python -m pytest -q tests/test_attention_gpu.py
"""

import pytest
import torch

from iasa.attention import SparseAttentionConfig, build_sparse_layout, sparse_attention
from iasa.pose.synthetic_speaker import synthetic_speaker


@pytest.mark.gpu
@pytest.mark.parametrize("resolution", [(64, 96), (128, 128)])
def test_flex_forward_and_backward_on_gpu_match_reference_in_bf16(resolution):
    keypoints = synthetic_speaker(21, resolution, seed=4)
    layout = build_sparse_layout(keypoints, SparseAttentionConfig(top_k=2))
    tensors = torch.randn(3, 1, 4, layout.num_tokens, 64, device="cuda", dtype=torch.bfloat16).unbind(0)
    weights = torch.randn_like(tensors[0])
    results = {}
    for backend in ("reference", "flex"):
        inputs = [x.clone().requires_grad_() for x in tensors]
        output = sparse_attention(*inputs, layout, backend=backend)
        results[backend] = [output, *torch.autograd.grad((output.float() * weights).sum(), inputs)]
    for got, want in zip(results["flex"], results["reference"]):
        assert (got.float() - want.float()).abs().max() < 2e-2 * want.float().abs().max().clamp(min=1)


@pytest.mark.gpu
def test_flex_does_not_recompile_when_only_poses_change():
    from torch._dynamo.utils import counters

    config = SparseAttentionConfig(top_k=3)
    first = build_sparse_layout(synthetic_speaker(21, (128, 128), seed=5), config)
    second = build_sparse_layout(synthetic_speaker(21, (128, 128), seed=6), config)
    assert not torch.equal(first.token_regions, second.token_regions)
    query = torch.randn(1, 4, first.num_tokens, 64, device="cuda", dtype=torch.bfloat16)
    sparse_attention(query, query, query, first, backend="flex")
    graphs = counters["stats"]["unique_graphs"]
    output = sparse_attention(query, query, query, second, backend="flex")
    assert counters["stats"]["unique_graphs"] == graphs
    reference = sparse_attention(query, query, query, second, backend="reference")
    assert (output.float() - reference.float()).abs().max() < 2e-2
