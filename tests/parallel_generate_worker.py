"""One process of the sequence-parallel generation tests (tests/test_parallel_generation.py): plain python for
the one-process reference, torchrun (or the test, with torchrun's variables) for N processes.

    parallel_generate_worker.py check OUT_DIR    dense and IASA generation of one clip; every rank writes
                                                 OUT_DIR/latents<rank>.safetensors, the decoding rank(s)
                                                 OUT_DIR/video<rank>.safetensors; then the IASA latents
                                                 with rank 1's DiT weights changed (a control)
    parallel_generate_worker.py kill|hang        rank 1 is killed or hangs after the model loads, while the
                                                 others generate
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.attention import SparseAttentionConfig  # noqa: E402
from iasa.parallel import ParallelConfig, parallel_group  # noqa: E402
from iasa.pose import draw_pose_frames  # noqa: E402
from iasa.pose.synthetic_speaker import synthetic_speaker  # noqa: E402
from iasa.video.config import (  # noqa: E402
    ARCHITECTURES,
    AttentionPatchConfig,
    InferenceSpeedConfig,
    LongVideoConfig,
    SamplerConfig,
    VideoModelConfig,
)
from iasa.video.pipeline import VideoGenerator  # noqa: E402

# The tiny model with 4 heads of the same width (32), so that 2 and 4 processes can share them (tiny has 2).
MODEL_SIZE = "tiny-4-heads"
ARCHITECTURES[MODEL_SIZE] = dataclasses.replace(ARCHITECTURES["tiny"], dim=128, ffn_dim=256, num_heads=4)
# 13 frames -> 4 latent frames of 3 x 5 tokens, in two windows of 3 latent frames (45 tokens: 2 and 4
# shards need padding); two steps with cfg (both prompts through the DiT).
VIDEO_FRAMES, IMAGE_SIZE = 13, (48, 80)
LONG_VIDEO = LongVideoConfig(window_latent_frames=3, overlap_latent_frames=1, private_leading_latent_frames=1)
SAMPLER = SamplerConfig(num_steps=2, cfg_scale=3.0)
DEATH_TIMEOUT_S = 3.0


def model_config() -> VideoModelConfig:
    return VideoModelConfig(
        model_size=MODEL_SIZE, model_dir=None, unianimate_checkpoint=None, lora_path=None, pose_guider_path=None,
        device="cpu", dtype="float32",
    )  # fmt: skip


def attention_config(attention: str) -> AttentionPatchConfig:
    sparse = SparseAttentionConfig(top_k=1, direction="both", block_size=16)
    return AttentionPatchConfig(attention=attention, backend="reference", sparse=sparse)


def clip_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    """Reference image, pose video, reference pose image and keypoints of the clip."""
    keypoints = synthetic_speaker(VIDEO_FRAMES, IMAGE_SIZE, seed=4)
    pose_video = draw_pose_frames(keypoints, "unianimate")
    image = np.random.default_rng(2).integers(0, 256, (*IMAGE_SIZE, 3), dtype=np.uint8)
    return image, pose_video, pose_video[0], keypoints


def run(out_dir: Path | None, death: str | None) -> None:
    timeout = DEATH_TIMEOUT_S if death else 120.0
    with parallel_group(ParallelConfig(collective_timeout_s=timeout), "cpu") as parallel:
        torch.manual_seed(parallel.rank)  # each process its own random weights: rank 0's must win
        image, pose_video, reference_pose, keypoints = clip_inputs()
        speed = InferenceSpeedConfig(vae_memory_format="contiguous", vae_latent_frames_per_call=2)
        results, videos = {}, {}
        for attention in ("dense", "iasa"):
            generator = VideoGenerator.from_config(model_config(), attention_config(attention), LONG_VIDEO, speed, parallel)
            if death and parallel.rank == 1:
                if death == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(600)  # hang: the test ends this process once the others have failed
            own_keypoints = keypoints if parallel.is_main else None  # rank 0's keypoints alone make the layouts
            latents = generator.generate_latents(image, pose_video, reference_pose, own_keypoints, SAMPLER, progress=False)
            results[attention] = latents
            if parallel.is_main:
                videos[attention] = generator.decode(latents)
                frames = generator.generate(image, pose_video, reference_pose, own_keypoints, SAMPLER, progress=False)
                videos[f"{attention}_uint8"] = torch.from_numpy(np.ascontiguousarray(frames))
            else:
                assert generator.generate(image, pose_video, reference_pose, None, SAMPLER, progress=False) is None
        # A control: rank 1's weights alone changed. Work really split over the processes changes rank 0's
        # latents too (with one process, this is the changed model itself).
        if parallel.rank == min(1, parallel.world_size - 1):
            with torch.no_grad():
                generator.components.dit.blocks[0].ffn[0].weight.add_(0.5)
        own_keypoints = keypoints if parallel.is_main else None
        results["iasa_rank1_changed"] = generator.generate_latents(
            image, pose_video, reference_pose, own_keypoints, SAMPLER, progress=False
        )
        save_file(results, str(out_dir / f"latents{parallel.rank}.safetensors"))
        if videos:
            save_file(videos, str(out_dir / f"video{parallel.rank}.safetensors"))


if __name__ == "__main__":
    if sys.argv[1] == "check":
        run(Path(sys.argv[2]), None)
    else:
        run(None, sys.argv[1])
